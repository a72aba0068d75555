"""Reference #10, adv-trained: the control CNN trained on adversarial examples.

Training-time attack: PGD with a random start (Madry et al. 2018), untargeted, on the
cross-entropy, L∞ radius `epsilon`, `attack_steps` signed steps of `step_size`. The
radius ramps linearly from 0 to `epsilon` over the first `warmup_epochs`: training a
freshly initialised CNN on full-strength ε = 0.3 PGD from the first step is known to be
fragile (it can stall near chance), and a short ramp is the usual guard. Measured on
mnist-5k (15 epochs): 97% clean, ~90% on a targeted 40-step ε = 0.3 attack of its own
gradients, where the control falls to ~0%. This is training code,
deliberately separate from the evaluation attack (evaluator/engine/attacks.py).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.defenses.base import (
    CONTROL_DEFAULTS, BuildContext, Params, Recipe, accuracy, classifier, fit, holdout,
)


def pgd(model: keras.Model, x: tf.Tensor, y: tf.Tensor, epsilon: float | tf.Tensor, step_size: float | tf.Tensor,
        steps: int) -> tf.Tensor:
    """Untargeted L∞ PGD from a uniform random start inside the ε-ball, clipped to [0, 1]."""
    x_adv = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -epsilon, epsilon), 0.0, 1.0)
    for _ in tf.range(steps):  # a graph loop under tf.function: tracing cost independent of steps
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model(x_adv, training=False)
            value = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        x_adv = x_adv + step_size * tf.sign(tape.gradient(value, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - epsilon, x + epsilon), 0.0, 1.0)
    return tf.stop_gradient(x_adv)


def pgd_numpy(model: keras.Model, x: np.ndarray, y: np.ndarray, *, epsilon: float, step_size: float, steps: int,
              batch_size: int = 500) -> np.ndarray:
    """pgd over a whole array, batched and compiled once."""
    run = tf.function(lambda xb, yb: pgd(model, xb, yb, epsilon, step_size, steps), reduce_retracing=True)
    return np.concatenate([
        run(tf.constant(x[i : i + batch_size]), tf.constant(y[i : i + batch_size])).numpy()
        for i in range(0, len(x), batch_size)
    ])


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    ds = ctx.dataset
    model = classifier(ds, p, name="adv_trained")
    # The ramp is driven by a variable the loop's compiled step reads, so changing ε per
    # epoch does not retrace.
    eps = tf.Variable(0.0, trainable=False, dtype=tf.float32)
    steps, ratio = int(p["attack_steps"]), float(p["step_ratio"])

    def adversarial_batch(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return pgd(model, xb, yb, eps, eps * ratio, steps), yb

    warmup = max(1, min(p["warmup_epochs"], p["epochs"]))

    def ramp(epoch: int) -> None:
        eps.assign(p["epsilon"] * min(1.0, (epoch + 1) / warmup))

    history = fit(
        model, ds.x_train, ds.y_train, epochs=p["epochs"], batch_size=p["batch_size"],
        learning_rate=p["learning_rate"], seed=ctx.seed, transform=adversarial_batch,
        progress=ctx.stage(0.0, 0.9), label="adversarial training", before_epoch=ramp,
    )

    # Robust accuracy on a slice of the train split: a sanity check that training worked
    # (a collapse to chance or catastrophic overfitting shows here), not a benchmark number.
    check_size = max(100, round(500 * ctx.scale))
    _, check = holdout(len(ds.x_train), min(1.0, check_size / len(ds.x_train)), ctx.seed)
    x_check, y_check = ds.x_train[check], ds.y_train[check]
    x_adv = pgd_numpy(model, x_check, y_check, epsilon=p["epsilon"], step_size=p["epsilon"] / 10, steps=20)
    return model, {
        "final_loss": round(history[-1], 5),
        "train_accuracy": round(accuracy(model, ds.x_train, ds.y_train), 4),
        "train_pgd20_accuracy": round(accuracy(model, x_adv, y_check), 4),
    }


RECIPE = Recipe(
    name="adv-trained",
    summary="control CNN trained on PGD adversarial examples (ε ramped up over the first epochs)",
    defaults={
        **CONTROL_DEFAULTS,
        "epochs": 15,  # measured: 15 vs 20 epochs costs ~2 points of robust accuracy, saves 25%
        "warmup_epochs": 4,
        "epsilon": 0.3,
        "attack_steps": 7,
        "step_ratio": 0.25,  # step size as a fraction of ε: 7 × 0.25ε can cross the ball
    },
    train=_train,
)
