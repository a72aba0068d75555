"""`manage.py rank PATH [--name NAME]`: register a SavedModel and run the pipeline here."""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.services import lifecycle
from evaluator.services.pipeline import network_run_pipeline
from leaderboard import progress_selectors, selectors, services
from leaderboard.management.database import require_migrated
from leaderboard.models import Network


class Command(BaseCommand):
    help = "Rank a SavedModel folder or archive on a benchmark; last line is JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", default=None)
        parser.add_argument("--benchmark", default=None)
        parser.add_argument("--private", action="store_true")

    def handle(self, *args, path: Path, name: str | None, benchmark: str | None, private: bool, **options) -> None:
        require_migrated()
        bench = selectors.benchmark_get(benchmark)
        if not bench.ladder:
            raise CommandError(
                f"benchmark {bench.name} has no ladder yet: run `manage.py build_benchmark {bench.name}` first"
            )
        try:
            network = services.network_register_path(
                benchmark=bench, path=path, name=name or path.name.split(".")[0], enqueue=False
            )
        except services.UploadError as exc:
            raise CommandError(str(exc)) from exc
        if private:
            services.network_set_public(network=network, is_public=False)
        self.stdout.write(f"registered network {network.pk} ({network.name}) on {bench.name}")
        with lifecycle.progress_watch(self.progress_printer(network.pk)):
            network_run_pipeline(network=network)
        network.refresh_from_db()
        summary = self.summarise(network)
        last = json.dumps(summary)
        self.stdout.write(last)
        if network.status != Network.Status.RANKED:
            raise SystemExit(1)

    def progress_printer(self, network_id: int) -> lifecycle.Watcher:
        """A line per change of stage, at most one a second within a stage (the same
        status, percent, stage text and time left as the network's page and the API)."""
        last = {"status": "", "line": "", "at": 0.0}

        def show(pk: int, status: str, progress: int, stage: str) -> None:
            line = f"[{progress:3d}%] {status}: {stage}" if stage else f"[{progress:3d}%] {status}"
            now = time.monotonic()
            if pk != network_id or line == last["line"] or (status == last["status"] and now - last["at"] < 1.0):
                return
            last.update(status=status, line=line, at=now)
            network = Network.objects.filter(pk=pk).first()
            estimate = progress_selectors.network_estimate(network) if network is not None else None
            self.stdout.write(line if estimate is None else f"{line} · {estimate.text}")
            self.stdout.flush()

        return show

    def summarise(self, network: Network) -> dict:
        row = selectors.network_row(network)
        for key in ("clean_accuracy", "universal_accuracy", "whitebox_accuracy", "robust_accuracy"):
            value = row[key]
            row[key] = value["value"] if value else None
            if value:
                row[key.replace("accuracy", "interval")] = [value["low"], value["high"]]
        lines = [f"{network.name}: {network.status}"]
        if network.status == Network.Status.RANKED:
            lines.append(f"  level {network.level} robustness, score {network.score:+.3f}")
            for label, key in (("clean", "clean_accuracy"), ("universal", "universal_accuracy"),
                               ("white-box", "whitebox_accuracy"), ("robust", "robust_accuracy")):
                if row[key] is not None:
                    lo, hi = row[key.replace("accuracy", "interval")]
                    lines.append(f"  {label:<10} accuracy {row[key]:.1%} [{lo:.1%}, {hi:.1%}]")
            for comparison in selectors.reference_comparisons(network=network):
                if "ours" in comparison:
                    verdict = "more robust than" if comparison["wins"] else "not more robust than"
                    lines.append(
                        f"  R{comparison['position']} {comparison['reference'].name:<17} {verdict}: "
                        f"{comparison['ours']:.1%} vs {comparison['theirs']:.1%}, p={comparison['p_value']:.3g}"
                    )
            if row["flags"]:
                lines.append("  flags: " + ", ".join(row["flags"]))
        else:
            lines.append(f"  reason: {network.reason}")
            row["reason"] = network.reason
        self.stdout.write("\n".join(lines))
        return row
