"""Cheating uploads against a real build, through `manage.py rank` (issue 12).

    VAR_DIR=/path/to/built/var .venv/bin/python -m bench.cheaters [--benchmark mnist-5k]
    .venv/bin/python -m bench.cheaters --work /tmp/rl_cheaters --rerank   # re-rank a finished run

Copies the built VAR_DIR (the build is never written), trains a plain CNN on the
benchmark's train split (the honest base), exports it and every cheat of
devkit/cheaters.py built on it, and ranks each with `manage.py rank` in a subprocess,
exactly as a researcher would. Then prints one row per model (level, robust accuracy,
white-box accuracy, flags) and checks the two things issue 12 asks of such a corpus:
every cheat ends flagged or at level 0, and none climbs above its honest base. Exit
status 1 when a check fails. `--rerank` recomputes the ranking on the copy (after a
change to the ranking code) without evaluating anything again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import _common as c
from devkit import cheaters

ROOT = Path(__file__).resolve().parents[1]


def _django(var_dir: Path) -> None:
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import django

    django.setup()


def _dataset(benchmark: str):
    from evaluator.engine.datasets import load_dataset
    from evaluator.services import storage
    from leaderboard import selectors

    bench = selectors.benchmark_get(benchmark)
    return load_dataset(storage.media_path(bench.data_file))


def _rank(work: Path, model: Path, name: str, benchmark: str) -> dict:
    """`manage.py rank` in a subprocess on the copy; its last line is the JSON summary."""
    env = {**os.environ, "VAR_DIR": str(work), "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", "rank", str(model), "--name", name, "--benchmark", benchmark],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    try:
        summary = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {"name": name, "status": "error", "error": (done.stderr or done.stdout)[-400:]}
    summary["seconds"] = time.perf_counter() - started
    return summary


def _rows(benchmark: str, names: list[str]) -> list[dict]:
    from leaderboard import selectors
    from leaderboard.models import Network

    bench = selectors.benchmark_get(benchmark)
    found = {n.name: n for n in Network.objects.filter(benchmark=bench, is_reference=False, name__in=names)}
    return [selectors.network_row(found[name]) for name in names if name in found]


def _pct(acc: dict | None) -> str:
    return "—" if not acc else f"{acc['value']:.1%} [{acc['low']:.1%}, {acc['high']:.1%}]"


def verdicts(rows: list[dict], base: str) -> list[str]:
    """What fails issue 12's checks: a cheat neither flagged nor at level 0, or a cheat
    ranked above the honest base."""
    by_name = {r["name"]: r for r in rows}
    failures = []
    if base not in by_name or by_name[base]["level"] is None:
        return [f"the honest base {base} was not ranked"]
    base_level = by_name[base]["level"]
    for row in rows:
        if row["name"] == base:
            continue
        if row["status"] != "ranked":
            continue  # rejected at validation: contained, nothing to climb
        if not row["flags"] and row["level"] != 0:
            failures.append(f"{row['name']}: level {row['level']} with no flag")
        if row["level"] is not None and row["level"] > base_level:
            failures.append(f"{row['name']}: level {row['level']} above its honest base ({base_level})")
    return failures


def report(rows: list[dict], base: str) -> int:
    print("| model | status | level | robust accuracy | white-box accuracy | clean accuracy | flags |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['status']} | {r['level'] if r['level'] is not None else '—'} | "
              f"{_pct(r['robust_accuracy'])} | {_pct(r['whitebox_accuracy'])} | {_pct(r['clean_accuracy'])} | "
              f"{', '.join(r['flags']) or '—'} |")
    failures = verdicts(rows, base)
    print("\n" + ("\n".join("FAIL " + f for f in failures) if failures else
                  "OK: every cheat is flagged or at level 0, and none is above its honest base."))
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="mnist-5k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rl_cheaters"), help="where the copy goes")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the honest base")
    parser.add_argument("--rerank", action="store_true", help="only recompute the ranking of an earlier run's copy")
    args = parser.parse_args()
    names = ["cheat-base"] + [f"cheat-{kind}" for kind in cheaters.CHEATS]
    if args.rerank:
        _django(args.work / "var")
        from evaluator.services.ranking import benchmark_rank
        from leaderboard import selectors

        benchmark_rank(benchmark=selectors.benchmark_get(args.benchmark))
        return report(_rows(args.benchmark, names), "cheat-base")
    source = Path(os.environ.get("VAR_DIR", ROOT / "var"))
    work = args.work / "var"
    shutil.rmtree(args.work, ignore_errors=True)
    c.copy_var(source, work)
    _django(work)
    ds = _dataset(args.benchmark)
    started = time.perf_counter()
    model = cheaters.base_cnn(ds.x_train, ds.y_train, num_classes=ds.num_classes, epochs=args.epochs)
    print(f"honest base trained on {len(ds.x_train)} train images in {time.perf_counter() - started:.0f} s", flush=True)
    folders = cheaters.export_corpus(model, args.work / "models", x_eval=ds.x_eval, y_eval=ds.y_eval)
    for kind, folder in folders.items():
        summary = _rank(work, folder, f"cheat-{kind}", args.benchmark)
        print(f"{summary.get('name', kind)}: {summary.get('status')} in {summary['seconds']:.0f} s"
              + (f" ({summary['error']})" if "error" in summary else ""), flush=True)
    return report(_rows(args.benchmark, names), "cheat-base")


if __name__ == "__main__":
    sys.exit(main())
