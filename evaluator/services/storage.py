"""Where things live under MEDIA_ROOT, and how arrays are stored.

Paths in rows are relative to MEDIA_ROOT so several worker machines can share the
media folder at different mount points.
"""

from __future__ import annotations

import os
import secrets
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


def benchmark_dir(name: str) -> Path:
    path = media_path(f"benchmarks/{name}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def network_dir(network_id: int) -> Path:
    path = media_path(f"networks/{network_id}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def spare_workdir() -> Path:
    """A fresh folder for this process's spare sandbox child; removes the folders of
    spares whose process is gone (a worker that was killed)."""
    root = Path(settings.VAR_DIR) / "jobs"
    for old in root.glob("spare-*-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    path = root / f"spare-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    return path


def job_workdir(job_id: int) -> Path:
    path = Path(settings.VAR_DIR) / "jobs" / str(job_id)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def pack_predictions(predictions: np.ndarray) -> bytes:
    return np.asarray(predictions, dtype=np.uint8).tobytes()


@lru_cache(maxsize=16)
def _eval_labels_cached(path: str, mtime_ns: int) -> np.ndarray:
    with np.load(path) as data:
        return data["y_eval"].astype(np.int64)


def eval_labels(data_file: str) -> np.ndarray:
    """The eval labels of a stored benchmark (cached; numpy only, no TensorFlow)."""
    path = media_path(data_file)
    return _eval_labels_cached(str(path), path.stat().st_mtime_ns)
