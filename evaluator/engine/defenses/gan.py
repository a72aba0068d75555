"""Reference #9, gan-data: a classifier that never sees a real image.

A small conditional GAN learns the train split: an AC-GAN (Odena et al. 2017) with
dense layers. The generator takes noise + a one-hot class (batch-normalised hidden
layers); the discriminator (dropout) says real/fake and also classifies the image, and
the generator is rewarded when its sample is classified as the class it was asked for.
Why not the plain "class concatenated to the discriminator input" cGAN: on 3,000
digits it mode-collapsed and ignored the class (measured: ~10% of its samples
recognisable as their class, against ~95% for the AC-GAN at the same cost).
Non-saturating loss, real labels smoothed to 0.9. The control architecture is then trained only on generated images: every
batch's images are replaced by fresh generator samples of the batch's labels (so the
train split supplies the class balance, and the classifier sees new samples every
epoch instead of a fixed set it could memorise). The report's `real_accuracy` is the
classifier's accuracy on the real eval images, `generated_accuracy` on generated ones.
The trained discriminator is kept beside the export (save_discriminator): its real/fake
score is the detector of issue 15 (engine.detection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.defenses.base import (
    CONTROL_DEFAULTS, BuildContext, Params, Recipe, accuracy, batches, classifier, fit_classifier,
)

# The discriminator is kept as <export>-discriminator/discriminator.keras (BuildContext.extra_path).
DISCRIMINATOR = "discriminator"
DISCRIMINATOR_FILE = "discriminator.keras"


def _generator(shape: tuple[int, int, int], k: int, p: Params) -> keras.Model:
    z, label = keras.Input(shape=(p["latent_dim"],)), keras.Input(shape=(k,))
    h = keras.layers.Concatenate()([z, label])
    for units in p["generator_units"]:
        # Batch normalisation here is what keeps the dense generator from collapsing.
        h = keras.layers.LeakyReLU(0.2)(keras.layers.BatchNormalization()(keras.layers.Dense(units)(h)))
    h = keras.layers.Dense(int(np.prod(shape)), activation="sigmoid")(h)
    return keras.Model([z, label], keras.layers.Reshape(shape)(h), name="generator")


def _discriminator(shape: tuple[int, int, int], k: int, p: Params) -> keras.Model:
    """Image -> [real/fake logit, k class logits]."""
    image = keras.Input(shape=shape)
    h = keras.layers.Flatten()(image)
    for units in p["discriminator_units"]:
        h = keras.layers.Dropout(p["discriminator_dropout"])(keras.layers.LeakyReLU(0.2)(keras.layers.Dense(units)(h)))
    return keras.Model(image, keras.layers.Dense(1 + k)(h), name="discriminator")


def _train_gan(ctx: BuildContext, p: Params) -> tuple[keras.Model, keras.Model, list[float]]:
    ds, k = ctx.dataset, ctx.dataset.num_classes
    gen, disc = _generator(ds.shape, k, p), _discriminator(ds.shape, k, p)
    g_opt = keras.optimizers.Adam(p["gan_learning_rate"], beta_1=0.5)
    d_opt = keras.optimizers.Adam(p["gan_learning_rate"], beta_1=0.5)
    bce = lambda target, logits: tf.reduce_mean(  # noqa: E731
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), target), logits=logits))

    def class_ce(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    @tf.function(reduce_retracing=True)
    def step(real: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        z = tf.random.normal([tf.shape(real)[0], p["latent_dim"]])
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake = gen([z, tf.one_hot(y, k)], training=True)
            real_out, fake_out = disc(real, training=True), disc(fake, training=True)
            # One-sided label smoothing (0.9) on the real/fake logit; the class head
            # learns from real images only, and judges the generator's samples.
            d_loss = bce(0.9, real_out[:, :1]) + bce(0.0, fake_out[:, :1]) + class_ce(y, real_out[:, 1:])
            g_loss = bce(1.0, fake_out[:, :1]) + class_ce(y, fake_out[:, 1:])  # non-saturating
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, disc.trainable_variables), disc.trainable_variables))
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, gen.trainable_variables), gen.trainable_variables))
        return d_loss, g_loss

    rng = np.random.default_rng(ctx.seed)
    stage, epochs, losses = ctx.stage(0.0, 0.6), p["gan_epochs"], [0.0, 0.0]
    for epoch in range(epochs):
        for idx in batches(len(ds.x_train), p["batch_size"], rng):
            losses = [float(v) for v in step(tf.constant(ds.x_train[idx]), tf.constant(ds.y_train[idx]))]
        stage((epoch + 1) / epochs, f"GAN: epoch {epoch + 1}/{epochs}, D {losses[0]:.3f} G {losses[1]:.3f}")
    return gen, disc, losses


def save_discriminator(disc: keras.Model, ctx: BuildContext) -> Path:
    """Keep the trained discriminator beside the export (issue 15): its real/fake logit is
    the detector engine.detection scores adversarial sets with. A Keras file of plain
    layers (no custom objects), so keras.models.load_model reads it in safe mode."""
    folder = ctx.extra_path(DISCRIMINATOR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DISCRIMINATOR_FILE
    disc.save(path)
    return path


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    ds, k = ctx.dataset, ctx.dataset.num_classes
    gen, disc, (d_loss, g_loss) = _train_gan(ctx, p)
    save_discriminator(disc, ctx)

    def generated(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        z = tf.random.normal([tf.shape(yb)[0], p["latent_dim"]])
        return gen([z, tf.one_hot(yb, k)], training=False), yb

    model = classifier(ds, p, name="gan_data")
    report = fit_classifier(ctx, model, p, transform=generated, progress=ctx.stage(0.6, 0.95))
    labels = np.arange(1000) % k
    x_gen, _ = generated(tf.zeros([0]), tf.constant(labels))
    return model, {
        "final_loss": report["final_loss"],
        "real_train_accuracy": report["train_accuracy"],
        "real_accuracy": round(accuracy(model, ds.x_eval, ds.y_eval), 4),
        "generated_accuracy": round(accuracy(model, x_gen.numpy(), labels), 4),
        "gan_final_losses": {"discriminator": round(d_loss, 4), "generator": round(g_loss, 4)},
    }


RECIPE = Recipe(
    name="gan-data",
    summary="control CNN trained only on samples of a conditional GAN (AC-GAN) trained on the train split",
    defaults={
        **CONTROL_DEFAULTS,
        "gan_epochs": 25,
        "latent_dim": 64,
        "generator_units": [256, 512],
        "discriminator_units": [512, 256],
        "discriminator_dropout": 0.3,
        "gan_learning_rate": 2e-4,
    },
    train=_train,
)
