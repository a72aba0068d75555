"""References #6 and #7, autoencoder and conv-autoencoder: an autoencoder in front of
the control classifier.

Two stages, not joint training: (1) the autoencoder learns to reconstruct the train
images (pixel cross-entropy, no labels); (2) it is frozen and the control architecture
is trained on its reconstructions. Freezing keeps the autoencoder a pure input
purifier: trained jointly, the classifier loss would turn it into just more classifier
layers, and the defense the charter names would disappear. The exported network is
autoencoder -> classifier, end to end differentiable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.defenses.base import (
    CONTROL_DEFAULTS, BuildContext, Params, Recipe, classifier, fit, fit_classifier, predict,
)

Shape = tuple[int, int, int]


def dense_autoencoder(shape: Shape, p: Params) -> keras.Model:
    """Flatten -> hidden -> code -> hidden -> sigmoid pixels."""
    inputs = keras.Input(shape=shape)
    h = keras.layers.Flatten()(inputs)
    for units in (p["ae_hidden"], p["ae_code"], p["ae_hidden"]):
        h = keras.layers.Dense(units, activation="relu")(h)
    h = keras.layers.Dense(int(np.prod(shape)), activation="sigmoid")(h)
    return keras.Model(inputs, keras.layers.Reshape(shape)(h), name="dense_autoencoder")


def conv_autoencoder(shape: Shape, p: Params) -> keras.Model:
    """Conv+pool encoder, transposed-conv decoder mirroring it, sigmoid pixels."""
    inputs = keras.Input(shape=shape)
    h = inputs
    for width in p["ae_filters"]:
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D(padding="same")(h)
    for width in reversed(p["ae_filters"]):
        h = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(shape[2], 3, padding="same", activation="sigmoid")(h)
    if tuple(h.shape[1:3]) != shape[:2]:
        # Sides not divisible by 2^blocks come back slightly larger: crop to the input.
        h = keras.layers.Cropping2D(((0, h.shape[1] - shape[0]), (0, h.shape[2] - shape[1])))(h)
    return keras.Model(inputs, h, name="conv_autoencoder")


def _reconstruction_loss(model: keras.Model, x: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    # Pixel-wise binary cross-entropy, not squared error: on mostly-black digits a sigmoid
    # decoder trained on squared error can settle on an all-black output (its gradient
    # vanishes as the sigmoid saturates); cross-entropy keeps pushing.
    return tf.reduce_mean(keras.losses.binary_crossentropy(target, model(x, training=True)))


def _trainer(make: Callable[[Shape, Params], keras.Model]) -> Callable[[BuildContext, Params], tuple[keras.Model, dict[str, Any]]]:
    def train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
        ds = ctx.dataset
        autoencoder = make(ds.shape, p)
        history = fit(
            autoencoder, ds.x_train, ds.x_train, epochs=p["ae_epochs"], batch_size=p["batch_size"],
            learning_rate=p["ae_learning_rate"], seed=ctx.seed, loss=_reconstruction_loss,
            progress=ctx.stage(0.0, 0.4), label="autoencoder",
        )
        mse = float(np.mean((predict(autoencoder, ds.x_train) - ds.x_train) ** 2))
        autoencoder.trainable = False  # stage 2 trains the classifier only
        model = classifier(ds, p, [autoencoder], name=autoencoder.name.replace("autoencoder", "ae_classifier"))
        report = fit_classifier(ctx, model, p, progress=ctx.stage(0.4, 0.95))
        return model, {**report, "ae_final_loss": round(history[-1], 6), "ae_train_mse": round(mse, 6)}

    return train


AUTOENCODER = Recipe(
    name="autoencoder",
    summary="dense autoencoder (trained first, then frozen) in front of the control CNN",
    defaults={**CONTROL_DEFAULTS, "ae_hidden": 256, "ae_code": 64, "ae_epochs": 20, "ae_learning_rate": 1e-3},
    train=_trainer(dense_autoencoder),
)

CONV_AUTOENCODER = Recipe(
    name="conv-autoencoder",
    summary="convolutional autoencoder (trained first, then frozen) in front of the control CNN",
    defaults={**CONTROL_DEFAULTS, "ae_filters": [32, 16], "ae_epochs": 10, "ae_learning_rate": 1e-3},
    train=_trainer(conv_autoencoder),
)
