"""What bubblewrap costs per job, side by side with the sandbox without it.

    .venv/bin/python -m bench.isolation_cost [--repeats 7] [--upload]

Alternating runs (the machine is shared and noisy: compare the ratios, not seconds):

  empty job, cold       a sandbox child that returns at once (process start)
  TF import job, cold   a child that imports TensorFlow
  spare hand-off        request → result of an empty job in a spare that is ready
  input staging         copying the tiny CNN (hashed against its manifest) + a dataset
  --upload              upload → ranked through a real deployment (web + worker),
                        SANDBOX_ISOLATION off then on, --rounds times (bench.upload_to_ranked);
                        --benchmark mnist-5k with VAR_DIR set, --uploads-before K for a board
                        that already holds K uploads
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench import _common as c
from bench.probes import probe_import_tf, probe_noop
from devkit.mini import mini_dataset_npz
from evaluator.engine import isolation
from evaluator.engine.sandbox import SandboxLimits, SpareChild, run_in_sandbox

MODES = {"off": SandboxLimits(timeout_s=300, isolation=False), "bwrap": SandboxLimits(timeout_s=300)}


def _timed(target: Callable[..., Any], limits: SandboxLimits, **kw) -> float:
    with tempfile.TemporaryDirectory(dir=c.CACHE) as tmp:
        started = time.perf_counter()
        r = run_in_sandbox(target, {}, workdir=Path(tmp), limits=limits, **kw)
        if not r.ok:
            raise SystemExit(f"{target}: {r.message}\n{r.log[-2000:]}")
        return time.perf_counter() - started


def _spare_handoff(limits: SandboxLimits) -> float:
    with tempfile.TemporaryDirectory(dir=c.CACHE) as tmp:
        spare = SpareChild(Path(tmp), limits=limits, preload=())
        while not spare.ready():
            time.sleep(0.02)
        started = time.perf_counter()
        r = run_in_sandbox(probe_noop, {}, workdir=Path(tmp), limits=limits, spare=spare)
        assert r.ok, r
        return time.perf_counter() - started


def _staging(model: Path, dataset: Path) -> float:
    manifest = isolation.folder_manifest(model)
    with tempfile.TemporaryDirectory(dir=c.CACHE) as tmp:
        started = time.perf_counter()
        isolation.stage_inputs(Path(tmp), {"model": model, "dataset.npz": dataset}, {"model": manifest})
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--upload", action="store_true", help="also upload → ranked, isolation off vs on")
    parser.add_argument("--benchmark", default="mini", help="for --upload: mini, or one built in $VAR_DIR")
    parser.add_argument("--uploads-before", type=int, default=0,
                        help="for --upload: earlier uploads on the board (bench.upload_to_ranked)")
    parser.add_argument("--rounds", type=int, default=1, help="for --upload: off/on pairs, alternating")
    args = parser.parse_args()
    c.header("isolation cost per job", "python -m bench.isolation_cost " + " ".join(sys.argv[1:]))
    if problem := isolation.bwrap_problem():
        raise SystemExit(f"bubblewrap unavailable: {problem}")
    c.CACHE.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, fn in (
        ("empty job, cold", lambda lim: _timed(probe_noop, lim)),
        ("TF import job, cold", lambda lim: _timed(probe_import_tf, lim)),
        ("spare hand-off (ready spare, empty job)", _spare_handoff),
    ):
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode, limits in MODES.items():  # alternate, so drift hits both alike
                times[mode].append(fn(limits))
        off, on = statistics.median(times["off"]), statistics.median(times["bwrap"])
        rows.append((name, off, on, on - off, on / off))
    model = c.tiny_cnn_dir()
    dataset = Path(tempfile.mkdtemp(dir=c.CACHE)) / "dataset.npz"
    mini_dataset_npz(dataset, n_train=3000, n_eval=2000)  # mnist-5k's size
    stage = statistics.median(_staging(model, dataset) for _ in range(args.repeats))
    shutil.rmtree(dataset.parent, ignore_errors=True)
    rows.append(("input staging (tiny CNN verified + 5k-image dataset)", 0.0, stage, stage, float("nan")))
    print(c.table(rows, ["per job", "no bwrap s", "bwrap s", "added s", "ratio"]))
    print(f"(medians of {args.repeats} alternating runs)")
    if args.upload:
        _upload_off_vs_on(args.benchmark, args.uploads_before, args.rounds)


def _upload_off_vs_on(benchmark: str, uploads_before: int, rounds: int) -> None:
    """Upload → ranked through a real deployment, SANDBOX_ISOLATION off then on, `rounds` times."""
    rows = []
    for round_ in range(1, rounds + 1):
        result: dict[str, dict] = {}
        for mode in ("off", "on"):
            env = {**os.environ, "SANDBOX_ISOLATION": mode}
            out = subprocess.run([sys.executable, "-m", "bench.upload_to_ranked", "--spare", "on", "--repeats", "1",
                                  "--benchmark", benchmark, "--uploads-before", str(uploads_before)],
                                 cwd=c.ROOT, capture_output=True, text=True, env=env, check=False)
            if out.returncode:
                raise SystemExit(f"upload_to_ranked with isolation {mode} failed:\n{out.stderr[-3000:]}")
            result[mode] = json.loads(out.stdout.rsplit("RESULT ", 1)[1].splitlines()[0])
        off, on = result["off"], result["on"]
        rows.append((round_, off["client_total"], on["client_total"], on["client_total"] / off["client_total"],
                     off["column_after"], on["column_after"]))
        print(f"round {round_}: off {off['client_total']:.1f} s, on {on['client_total']:.1f} s", flush=True)
    print(c.table(rows, ["round", "ranked, isolation off s", "ranked, bwrap s", "ratio",
                         "uploads' column after, off s", "after, bwrap s"]))
    print(f"upload → ranked on {benchmark} with {uploads_before} earlier uploads (client view): median ratio "
          f"bwrap / off {statistics.median(r[3] for r in rows):.2f} over {rounds} alternating pairs")


if __name__ == "__main__":
    main()
