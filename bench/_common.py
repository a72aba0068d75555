"""Shared helpers of the service benches (upload_to_ranked, incremental, web_load,
worker_memory): temporary deployments and the tiny upload (devkit/), the cached mini
benchmark, running a probe (bench/probes.py) in the sandbox, a line fit and a table
printer.

The bench processes themselves never import TensorFlow: the tiny CNN is trained in a
subprocess and the probes run in the engine's own sandbox child.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from devkit.deployment import Deployment, zip_folder  # noqa: F401 - zip_folder re-exported for the benches
from devkit.mini import MINI_RECIPES, MINI_SCALE, mini_dataset_npz

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.getenv("BENCH_CACHE", "/tmp/rl_bench"))
MINI_TEMPLATE = CACHE / "mini-template"
TINY_DIR = CACHE / "tiny-cnn" / "model"
PYTHON = sys.executable


# --------------------------------------------------------------------------- output


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain fixed-width table (also valid as a Markdown table)."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"  # noqa: E731
    out = [line(list(headers)), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in body]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def header(title: str, command: str) -> None:
    print(f"# {title}")
    print(f"# command: {command}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M %Z')}, host: {os.uname().nodename}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print()


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least squares y = slope * x + intercept; returns (slope, intercept, R²)."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((b - my) ** 2 for b in y)
    ss_res = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return slope, intercept, r2


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


median = statistics.median


# --------------------------------------------------------------------------- Django


def django_setup(var_dir: Path, database_url: str | None = None, **env: str) -> None:
    """Configure Django in this process against a deployment's VAR_DIR and database."""
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{var_dir / 'db.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for k, v in env.items():
        os.environ[k] = v
    import django

    django.setup()


def deployment(var_dir: Path) -> Deployment:
    return Deployment(var_dir=var_dir, database_url=f"sqlite:///{var_dir / 'db.sqlite3'}")


# --------------------------------------------------------------------------- fixtures


def tiny_cnn_dir() -> Path:
    """The tests' tiny CNN (2 conv + dense, logits), trained once in a subprocess (this
    process never imports TensorFlow) and exported as a SavedModel; cached under BENCH_CACHE."""
    if (TINY_DIR / "saved_model.pb").exists():
        return TINY_DIR
    TINY_DIR.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([PYTHON, "-m", "devkit.mini", str(TINY_DIR)], check=True, cwd=ROOT,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return TINY_DIR


def mini_template(*, fresh: bool = False, log=print) -> tuple[Path, float]:
    """The tests' mini benchmark (300 train / 200 eval digits, 20 attack steps, references
    control, down50, adv-trained at scale 0.1) built through the real commands into a
    cached VAR_DIR; returns (path, build seconds, 0 when cached)."""
    done = MINI_TEMPLATE / "READY"
    if done.exists() and not fresh:
        return MINI_TEMPLATE, 0.0
    shutil.rmtree(MINI_TEMPLATE, ignore_errors=True)
    MINI_TEMPLATE.mkdir(parents=True)
    d = deployment(MINI_TEMPLATE)
    log(f"building the mini benchmark into {MINI_TEMPLATE} ...")
    started = time.perf_counter()
    d.manage("migrate")
    npz = mini_dataset_npz(MINI_TEMPLATE / "mini.npz")
    d.manage("import_benchmark", "mini", "--npz", str(npz), "--steps", "20")
    d.manage("build_benchmark", "mini", "--recipes", MINI_RECIPES, "--scale", MINI_SCALE, timeout=1800)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": seconds}))
    return MINI_TEMPLATE, seconds


def copy_var(source: Path, target: Path) -> Path:
    """A private copy of a built VAR_DIR (database + media), without jobs and broker."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("jobs", "broker", "*.log", "READY"))
    return target


# --------------------------------------------------------------------------- sandbox and processes


def sandbox(target: Callable[..., Any], kwargs: dict | None = None, workdir: Path | None = None):
    """Run one probe (bench/probes.py) in the engine's sandbox; returns the SandboxResult."""
    from evaluator.engine.sandbox import SandboxLimits, run_in_sandbox

    workdir = workdir or (CACHE / "probe-work")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # Without bubblewrap: the probes read the deployment's files by their host paths and
    # measure compute, not isolation (bench/isolation_cost.py measures that).
    result = run_in_sandbox(target, kwargs or {}, workdir=workdir, limits=SandboxLimits(timeout_s=600, isolation=False))
    if not result.ok:
        raise RuntimeError(f"probe {target} failed: {result.message}\n{result.log[-2000:]}")
    return result


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one process in MB, from /proc."""
    rss = hwm = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, hwm
