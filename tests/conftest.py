"""Session-wide fixtures shared by the test files.

The tiny MNIST subset and the tiny trained CNN (devkit/mini.py) are built once per test
session: they are what most engine tests attack, load and scan. Nothing here depends
on the order the tests run in (`pytest -p random_order --random-order-bucket=global`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devkit import mini
from devkit.mini import MINI_RECIPES, MINI_SCALE, build_tiny_cnn, mini_dataset_npz  # noqa: F401 (tests import them from here)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_small() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1,000 train and 300 eval MNIST digits (float32 in [0, 1], 28x28x1)."""
    return mini.mnist_small()


@pytest.fixture(scope="session")
def tiny_cnn(mnist_small):
    """The trained Keras model itself (for tests that need a reference answer)."""
    x_train, y_train, _, _ = mnist_small
    return build_tiny_cnn(x_train, y_train)


@pytest.fixture(scope="session")
def tiny_cnn_dir(tiny_cnn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN exported the usual Keras way (`model.export`): a SavedModel folder."""
    path = tmp_path_factory.mktemp("tiny_cnn") / "model"
    tiny_cnn.export(str(path), verbose=False)
    return path


@pytest.fixture(autouse=True, scope="session")
def _session_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Media, job folders and the broker of the test session live in a temporary VAR_DIR.

    Session-wide (not per test) because the mini benchmark built once per session
    stores its files there and later tests read them.
    """
    from django.conf import settings

    from evaluator.services import spares

    var = tmp_path_factory.mktemp("var")
    settings.VAR_DIR = var
    settings.MEDIA_ROOT = var / "media"
    # In-process jobs run as a worker's do: the next job starts in a spare child that
    # imported TensorFlow while this process did other things (the suite runs a few
    # hundred jobs, each ~3 s of import when cold).
    settings.SANDBOX_SPARE = True
    spares.spare_enable()
    yield
    spares.spares_release()


@pytest.fixture(autouse=True)
def _network_folders_as_found():
    """Each test leaves MEDIA_ROOT/networks/ as it found it. A test's rows go with its
    rollback (or flush) and their ids are handed out again, so a folder left behind
    would belong to the next test's network of the same id: its upload "unpacked"
    before it was, a stale adversarial set beside it."""
    from django.conf import settings

    root = Path(settings.MEDIA_ROOT) / "networks"
    before = set(os.listdir(root)) if root.is_dir() else set()
    yield
    if root.is_dir():
        for name in set(os.listdir(root)) - before:
            shutil.rmtree(root / name, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _collected_static(_session_var_dir, tmp_path_factory: pytest.TempPathFactory):
    """Static files as production serves them: collected, fingerprinted and compressed
    (STORAGES["staticfiles"] is a manifest storage, so pages name css/site.<hash>.css,
    which exists only after collectstatic; about a second). The browser tests' live
    server hands /static/ to whitenoise, as `manage.py run` does, instead of Django's
    finder-based handler, which knows no fingerprinted name."""
    from django.conf import settings
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.contrib.staticfiles.storage import staticfiles_storage
    from django.core.management import call_command
    from django.utils.functional import empty

    settings.STATIC_ROOT = tmp_path_factory.mktemp("static")
    staticfiles_storage._wrapped = empty  # built for the new STATIC_ROOT on first use
    call_command("collectstatic", interactive=False, verbosity=0)
    patch = pytest.MonkeyPatch()
    patch.setattr(StaticFilesHandler, "_should_handle", lambda self, path: False)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def _mini_built(django_db_setup, django_db_blocker, tmp_path_factory: pytest.TempPathFactory):
    """The 'mini' benchmark built once per session into the test database through the
    real build command, and its rows dumped to a fixture file (see _mini_rows)."""
    from django.core.management import call_command
    from django.db import connection

    from leaderboard.models import Benchmark

    with django_db_blocker.unblock():
        # pytest-django creates the test database only when a collected test is marked
        # django_db; otherwise this would build into the developer's real database.
        assert "memory" in connection.settings_dict["NAME"] or "test" in connection.settings_dict["NAME"], (
            "mini_benchmark needs the test database: mark the test module django_db"
        )
        Benchmark.objects.filter(name="mini").delete()
        root = tmp_path_factory.mktemp("mini")
        npz = mini_dataset_npz(root / "mini.npz")
        call_command("import_benchmark", "mini", "--npz", str(npz), "--steps", "20")
        call_command("build_benchmark", "mini", "--recipes", MINI_RECIPES, "--scale", MINI_SCALE)
        call_command("dumpdata", "leaderboard", "evaluator", "--output", str(root / "rows.json"))
        return Benchmark.objects.get(name="mini"), root / "rows.json"


@pytest.fixture(scope="session")
def mini_benchmark(_mini_built):
    """The 'mini' benchmark (300 train / 200 eval digits, three references), built once
    per session; its rows are back in the database for every test that asks for it."""
    return _mini_built[0]


def _mini_rows_back(request: pytest.FixtureRequest) -> None:
    """A test that flushes the database (transactional_db, live_server) wipes the
    session's mini benchmark with it. Whatever uses the benchmark afterwards, in whatever
    order the tests run, gets its rows loaded back first, with their primary keys, so
    the session's Benchmark object and every stored file still match them."""
    if "mini_benchmark" not in request.fixturenames:
        return
    from django.core.management import call_command

    from leaderboard.models import Benchmark

    bench, rows = request.getfixturevalue("_mini_built")
    with request.getfixturevalue("django_db_blocker").unblock():
        if not Benchmark.objects.filter(pk=bench.pk, state=Benchmark.State.READY).exists():
            call_command("loaddata", str(rows), verbosity=0)


@pytest.fixture(autouse=True, scope="module")
def _mini_rows_for_the_module(request: pytest.FixtureRequest) -> None:
    """Before a module's own fixtures read the benchmark (test_e2e.py dumps it into its
    deployments), outside any test's transaction, so the rows stay."""
    _mini_rows_back(request)


@pytest.fixture(autouse=True)
def _mini_rows(request: pytest.FixtureRequest) -> None:
    """Before each test that uses the benchmark: a flushing test may have run since the
    module started. (Rows loaded inside a test's transaction go with its rollback.)"""
    _mini_rows_back(request)


CI = os.getenv("CI", "").lower() == "true"


def need(ok: bool, reason: str) -> None:
    """Skip with a visible reason when a service or tool is missing, except under
    CI=true, where everything must run: a skip there would hide a gap."""
    if ok:
        return
    if CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


# Named users shared by the Django tests (Healthchecks style): alice owns things,
# bob is the other user who must not see them.
@pytest.fixture
def alice(db):
    from django.contrib.auth.models import User

    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(db):
    from django.contrib.auth.models import User

    return User.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def world(db, monkeypatch, settings):
    """tests.fakes.World: alice, bob and staff with tokens, public and private uploads."""
    from tests.fakes import fake_world

    # Four accounts per test: the production hasher would cost seconds each time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Nothing may reach a broker from these tests.
    monkeypatch.setattr("evaluator.services.lifecycle._send", lambda name, *args: None)
    return fake_world()


@pytest.fixture
def queued(monkeypatch) -> list[tuple[str, tuple]]:
    """Tasks queued through evaluator.services.lifecycle, as (task's short name, args);
    nothing reaches a broker."""
    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr("evaluator.services.lifecycle._send",
                        lambda name, *args: calls.append((name.rsplit(".", 1)[-1], args)))
    return calls
