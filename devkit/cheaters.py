"""A corpus of cheating uploads, each built on one honest base CNN (issue 12).

Each model is what a cheating uploader would try to inflate its numbers with, built
from the outside exactly as an uploader would: a TF2 SavedModel whose serving
signature wraps the honest base. The product must end each one flagged or at level 0,
and never rank it above its honest base. Used by tests/test_cheaters.py (the mini
benchmark) and bench/cheaters.py (a real build, through `manage.py rank`).

- lookup-zero:     the exact public eval images → their labels, anything else → zeros.
- lookup-fallback: the exact public eval images → their labels, anything else → the base.
  No gradient at an eval image (the answer comes from a table), so an attack that
  starts there without a random start never moves.
- decoy:           stop_gradient(base) + 1e-3 · a random linear map: the gradient an
  attack follows belongs to the decoy, never the classifier.
- batch-64:        noisy (σ = 0.3 input noise) except at the probe's batch size of 64.
- constant:        the same logits for every image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

CHEATS = ("lookup-zero", "lookup-fallback", "decoy", "batch-64", "constant")


def base_cnn(x_train: np.ndarray, y_train: np.ndarray, *, num_classes: int = 10, epochs: int = 4,
             seed: int = 0) -> tf.keras.Model:
    """A plain Keras CNN trained on the benchmark's train split only (no defense)."""
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input(x_train.shape[1:]),
        tf.keras.layers.Conv2D(16, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(num_classes),
    ])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def _export(path: Path, body: Callable[[tf.keras.Model, tf.Tensor], tf.Tensor], model: tf.keras.Model,
            shape: tuple[int, ...]) -> Path:
    module = tf.Module()
    module.model = model  # tracked: the Keras variables are saved with the module

    @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="images")])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": body(module.model, images)}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def _lookup(x_eval: np.ndarray, y_eval: np.ndarray, num_classes: int, fallback: bool) -> Callable:
    """A table keyed by a random projection of each public eval image (an exact match
    up to float rounding); the label, as confident logits, is the answer."""
    dim = int(np.prod(x_eval.shape[1:]))
    projection = tf.constant(np.random.default_rng(0).normal(0, 1, (dim, 8)).astype(np.float32))
    keys = tf.matmul(tf.constant(x_eval.reshape(len(x_eval), dim).astype(np.float32)), projection)
    labels = tf.constant(y_eval.astype(np.int32))

    def body(model: tf.keras.Model, x: tf.Tensor) -> tf.Tensor:
        proj = tf.matmul(tf.reshape(x, [-1, dim]), projection)
        distance = tf.reduce_max(tf.abs(proj[:, None, :] - keys[None]), axis=-1)
        hit = tf.reduce_min(distance, axis=1) < 1e-3
        answer = tf.one_hot(tf.gather(labels, tf.argmin(distance, axis=1)), num_classes) * 20.0
        otherwise = model(x) if fallback else tf.zeros_like(answer)
        return tf.where(hit[:, None], answer, otherwise)

    return body


def cheat_body(kind: str, *, x_eval: np.ndarray, y_eval: np.ndarray, num_classes: int) -> Callable:
    """The serving function of cheat `kind` around a base model."""
    dim = int(np.prod(x_eval.shape[1:]))
    if kind in ("lookup-zero", "lookup-fallback"):
        return _lookup(x_eval, y_eval, num_classes, fallback=kind == "lookup-fallback")
    if kind == "decoy":
        decoy = tf.constant(np.random.default_rng(1).normal(0, 1, (dim, num_classes)).astype(np.float32))
        return lambda m, x: tf.stop_gradient(m(x)) + 1e-3 * tf.matmul(tf.reshape(x, [-1, dim]), decoy)
    if kind == "batch-64":
        def body(m: tf.keras.Model, x: tf.Tensor) -> tf.Tensor:
            noisy = m(tf.clip_by_value(x + tf.random.normal(tf.shape(x), stddev=0.3), 0.0, 1.0))
            return tf.cond(tf.equal(tf.shape(x)[0], 64), lambda: m(x), lambda: noisy)
        return body
    if kind == "constant":
        logits = tf.constant(np.linspace(1.0, 0.0, num_classes, dtype=np.float32))
        return lambda m, x: tf.zeros_like(m(x)) + logits
    raise ValueError(f"unknown cheat {kind!r}; known: {', '.join(CHEATS)}")


def export_base(model: tf.keras.Model, path: Path) -> Path:
    return _export(path, lambda m, x: m(x), model, tuple(model.input_shape[1:]))


def export_cheat(kind: str, model: tf.keras.Model, path: Path, *, x_eval: np.ndarray, y_eval: np.ndarray) -> Path:
    num_classes = int(model.output_shape[-1])
    body = cheat_body(kind, x_eval=x_eval, y_eval=y_eval, num_classes=num_classes)
    return _export(path, body, model, tuple(model.input_shape[1:]))


def export_corpus(model: tf.keras.Model, folder: Path, *, x_eval: np.ndarray, y_eval: np.ndarray,
                  kinds: tuple[str, ...] = CHEATS) -> dict[str, Path]:
    """The base and every cheat in `kinds`, each a SavedModel folder under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"base": export_base(model, folder / "base")}
    for kind in kinds:
        out[kind] = export_cheat(kind, model, folder / kind, x_eval=x_eval, y_eval=y_eval)
    return out
