"""Settings are validated: a typo or an impossible limit is an error at start-up."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from evaluator import checks
from evaluator.engine import isolation
from leaderboard.settings import envbool


@pytest.mark.parametrize("raw, expected", [("True", True), ("on", True), ("1", True), (" yes ", True),
                                           ("False", False), ("off", False), ("0", False), ("", False)])
def test_booleans(monkeypatch, raw, expected):
    monkeypatch.setenv("SOME_FLAG", raw)
    assert envbool("SOME_FLAG", "false") is expected


@pytest.mark.parametrize("raw", ["Ture", "of", "2", "enabled"])
def test_a_typo_is_refused_not_read_as_false(monkeypatch, raw):
    monkeypatch.setenv("DEBUG", raw)
    with pytest.raises(ImproperlyConfigured, match="DEBUG=.* is not a boolean"):
        envbool("DEBUG", "False")


def test_limits_out_of_range_are_errors(settings):
    assert checks.sandbox_limits(None) == []
    settings.SANDBOX_MEMORY_MB = 100
    settings.JOB_MAX_ATTEMPTS = 0
    errors = checks.sandbox_limits(None)
    assert {e.id for e in errors} == {"evaluator.E001"} and len(errors) == 2
    assert "SANDBOX_MEMORY_MB=100" in errors[0].msg


def test_isolation_state_is_reported(settings, monkeypatch):
    settings.SANDBOX_ISOLATION = False
    assert [w.id for w in checks.sandbox_isolation(None)] == ["evaluator.W001"]
    settings.SANDBOX_ISOLATION = True
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    (warning,) = checks.sandbox_isolation(None)
    assert warning.id == "evaluator.W002" and "not installed" in warning.msg
    assert "apt-get install bubblewrap" in warning.hint


def test_celery_limits_must_exceed_every_attempt_of_the_longest_job(settings):
    settings.SANDBOX_TIMEOUT_S, settings.JOB_MAX_ATTEMPTS = 600, 3
    settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT = 1801, 2000
    assert checks.sandbox_limits(None) == []
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 1800  # exactly 3 × 600: the last attempt would be cut
    (error,) = checks.sandbox_limits(None)
    assert error.id == "evaluator.E002" and "1800" in error.msg
    settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT = 2500, 2400  # hard below soft
    assert [e.id for e in checks.sandbox_limits(None)] == ["evaluator.E002"]


@pytest.mark.parametrize("command", [["build_benchmark", "mnist-5k"], ["rank", "model"],
                                     ["import_benchmark", "x", "--npz", "x.npz"]])
def test_a_database_never_migrated_is_named_not_a_traceback(tmp_path, command):
    """The operator's commands on a fresh VAR_DIR nobody migrated: one line that says
    what to run, exit status 1, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="leaderboard.settings", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "manage.py", *command], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "not set up" in done.stderr and "manage.py migrate" in done.stderr
    assert "Traceback" not in done.stderr
