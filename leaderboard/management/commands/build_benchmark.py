"""`manage.py build_benchmark [NAME] [--rebuild REF]`: dataset, references, attacks, matrix, ladder.

NAME is a built-in benchmark (engine.builtins: mnist-5k, the default, built at first
start; digits-8x8 and mnist-5k-mlp, opt-in, issue 15) or one registered with
import_benchmark.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.engine import builtins
from evaluator.engine.suite import REFERENCES as RECIPES
from evaluator.services import benchmarks
from leaderboard import progress_selectors
from leaderboard.management.database import require_migrated
from leaderboard.models import Benchmark, Network

# What evaluator.services.benchmarks reports at each step of a build: "[ 42%] stage".
PROGRESS_LINE = re.compile(r"^\[\s*\d+%\] ")


class Command(BaseCommand):
    help = (
        "Build a benchmark's reference suite and ladder (idempotent: skips what exists). "
        "--rebuild REF retrains that reference and re-measures what depended on it; "
        "rebuilding the control recomputes the universal set and every network's universal accuracy. "
        f"Built-in benchmarks: {', '.join(builtins.BUILTINS)} (the last two opt-in: 8x8 digits from "
        "scikit-learn, and mnist-5k with an MLP backbone)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default=benchmarks.DEFAULT_NAME)
        parser.add_argument("--rebuild", action="append", default=[], choices=list(RECIPES),
                            help="rebuild this reference (repeatable)")
        parser.add_argument("--recipes", default="",
                            help="comma-separated subset of references (with --rebuild: default, those it has)")
        parser.add_argument("--scale", type=float, default=None,
                            help="training size/epochs multiplier (tests use a small one); default 1.0, "
                                 "and for --rebuild the scale the reference was trained at")

    def handle(self, *args, name: str, rebuild: list[str], recipes: str, scale: float | None, **options) -> None:
        require_migrated()
        if name in builtins.BUILTINS:
            bench = benchmarks.benchmark_get_or_create_builtin(name=name)
        else:
            bench = Benchmark.objects.filter(name=name).first()
            if bench is None:
                raise CommandError(f"no benchmark {name!r}: import it with `manage.py import_benchmark` first")
        subset = [r.strip() for r in recipes.split(",") if r.strip()] or None
        unknown = set(subset or []) - set(RECIPES)
        if unknown:
            raise CommandError(f"unknown references: {', '.join(sorted(unknown))}")
        if rebuild and subset is None:
            # A rebuild keeps the suite the benchmark has: without this, rebuilding one
            # reference of a benchmark built with --recipes would train every other recipe.
            have = set(Network.objects.filter(benchmark=bench, is_reference=True).values_list("recipe", flat=True))
            subset = [r for r in RECIPES if r in have | set(rebuild)]
        try:
            report = self.reporter(bench)
            # The control first: it defines the universal set the others are re-measured on,
            # so rebuilding it after another reference would re-evaluate that one twice.
            for recipe in sorted(dict.fromkeys(rebuild), key=lambda r: r != benchmarks.CONTROL):
                self.stdout.write(f"rebuilding reference {recipe}")
                benchmarks.reference_rebuild(benchmark=bench, recipe=recipe, scale=scale, report=report)
            bench = benchmarks.benchmark_build(benchmark=bench, recipes=subset, scale=1.0 if scale is None else scale,
                                               report=report)
        except benchmarks.BuildError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"benchmark {bench.name} ready: ladder of {len(bench.ladder)} references"))

    def reporter(self, bench: Benchmark) -> Callable[[str], None]:
        """The build's lines as they come; each progress line ("[ 42%] stage") also says
        how many references are trained and ranked and the time left, from the same
        selector as the leaderboard's banner and the API."""

        def report(line: str) -> None:
            if PROGRESS_LINE.match(line):
                bench.refresh_from_db()
                line = f"{line} · {progress_selectors.build_line(bench)}"
            self.stdout.write(line)
            self.stdout.flush()

        return report
