"""The engine is plain TF/NumPy: it must import with Django absent, and the
modules the web process touches must not pull in TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Modules the web process and the worker's main process may import.
LIGHT_MODULES = [
    "evaluator.engine.errors",
    "evaluator.engine.archive",
    "evaluator.engine.opscan",
    "evaluator.engine.metrics",
    "evaluator.engine.ladder",
    "evaluator.engine.datasets",
    "evaluator.engine.sandbox",
    "evaluator.engine.suite",
    # The job entry points: TensorFlow is imported inside them, after the cheap checks.
    "evaluator.engine.jobs",
]
# Modules that run only in sandboxed children: TensorFlow allowed, Django not.
HEAVY_MODULES = [
    "evaluator.engine.network",
    "evaluator.engine.attacks",
    "evaluator.engine.universal",
    "evaluator.engine.defenses",
]


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_light_engine_modules_import_neither_django_nor_tensorflow() -> None:
    loaded = _imported_after(LIGHT_MODULES)
    assert "django" not in loaded
    assert "tensorflow" not in loaded


def test_heavy_engine_modules_import_without_django() -> None:
    loaded = _imported_after(HEAVY_MODULES)
    assert "django" not in loaded
    assert "tensorflow" in loaded


def test_web_and_worker_processes_never_import_tensorflow() -> None:
    code = (
        "import os, sys, json\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'leaderboard.settings'\n"
        "import django; django.setup()\n"
        "import leaderboard.urls, leaderboard.admin, evaluator.tasks\n"
        "import evaluator.services.pipeline, evaluator.services.benchmarks, evaluator.services.ranking\n"
        "from django.core.management import load_command_class\n"
        "for name in ('rank', 'build_benchmark', 'import_benchmark', 'create_token', 'run'):\n"
        "    load_command_class('leaderboard', name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "django" in loaded
    assert "tensorflow" not in loaded
