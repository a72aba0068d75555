"""Reference #3, noise: Gaussian noise added to the input at inference, σ chosen by a
recorded grid search of clean accuracy against robustness.

Training: the control architecture on train images with noise of a σ drawn per image
from the grid (σ = 0 included), so a single network serves every grid point; it is
what Gaussian data augmentation for randomised smoothing does.
Grid search: for every σ, clean accuracy on a held-out slice of the train split and
accuracy on the probe (adversarial images of the control network, from the
orchestrator). Rule: the σ with the best probe accuracy among those losing at most
`max_clean_drop` clean accuracy against σ = 0 (ties -> the smaller σ). Without a probe
the recipe makes its own: PGD against its own noise-free classifier on the held-out
slice (recorded as report["probe_source"]). params["sigma"] fixes σ instead.
Inference: clip(x + σ·N(0, 1), 0, 1) inside the graph, fresh noise on every call and in
every process, so the exported network is deliberately not deterministic. Fixed seeds
serve the training (augmentation, shuffling, initialisation) and the σ grid only; the
inference noise op is exported unseeded (seed = seed2 = 0: TensorFlow seeds its kernel
from the operating system when the model is loaded), so nobody can replay it from the
code, whatever global seed was set while the build traced the graph.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.defenses.adversarial import pgd_numpy
from evaluator.engine.defenses.base import (
    CONTROL_DEFAULTS, BuildContext, Params, Recipe, accuracy, classifier, fit_classifier, holdout,
)


def fresh_normal(shape: tf.Tensor) -> tf.Tensor:
    """N(0, 1) noise from an unseeded source: a RandomStandardNormal op with seed = seed2 = 0.

    tf.random.normal would not do: under the global seed a build sets
    (keras.utils.set_random_seed) it bakes a derived, fixed (seed, seed2) into the op, and
    every process that loads the SavedModel replays the same "random" noise. With both
    attributes 0 TensorFlow seeds the kernel from the operating system (random::New64) when
    the model is loaded; its state then advances, so every call draws new noise too.
    """
    return tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)


class InputNoise(keras.layers.Layer):
    """Adds N(0, σ²) noise and clips to [0, 1], at inference too (unlike keras GaussianNoise),
    drawn fresh on every call from an unseeded source (fresh_normal)."""

    def __init__(self, sigma: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sigma = float(sigma)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x, dtype=tf.float32)
        return tf.clip_by_value(x + self.sigma * fresh_normal(tf.shape(x)), 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sigma": self.sigma}


def _noisy(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Fixed-seed noise for the grid, so the recorded rows are reproducible."""
    noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    return np.clip(x + sigma * noise, 0.0, 1.0)


def choose_sigma(rows: list[dict[str, float]], max_clean_drop: float) -> float:
    """The most robust σ whose clean accuracy is within `max_clean_drop` of σ = 0's."""
    baseline = rows[0]["clean_acc"]
    allowed = [r for r in rows if r["clean_acc"] >= baseline - max_clean_drop]
    return max(allowed, key=lambda r: (r["probe_acc"], -r["sigma"]))["sigma"]


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    ds = ctx.dataset
    grid = sorted({0.0, *map(float, p["sigma_grid"])})
    fit_idx, val_idx = holdout(len(ds.x_train), p["holdout_fraction"], ctx.seed)
    base = classifier(ds, p, name="noise_base")
    sigmas = tf.constant(grid, dtype=tf.float32)

    # Training noise stays seeded (the build's global seed): same seed, same weights.
    def augment(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pick = tf.random.uniform([tf.shape(xb)[0], 1, 1, 1], 0, len(grid), dtype=tf.int32)
        sigma = tf.gather(sigmas, pick)
        return tf.clip_by_value(xb + sigma * tf.random.normal(tf.shape(xb)), 0.0, 1.0), yb

    report = fit_classifier(ctx, base, p, x=ds.x_train[fit_idx], y=ds.y_train[fit_idx], transform=augment,
                            progress=ctx.stage(0.0, 0.8))

    x_val, y_val = ds.x_train[val_idx], ds.y_train[val_idx]
    if ctx.probe is not None:
        x_probe, y_probe = (np.asarray(a) for a in ctx.probe)
        source = "orchestrator: adversarial images of the control network"
    else:
        x_probe = pgd_numpy(base, x_val, y_val, epsilon=p["probe_epsilon"],
                            step_size=p["probe_epsilon"] / 10, steps=p["probe_steps"])
        y_probe = y_val
        source = f"own: PGD-{p['probe_steps']} ε={p['probe_epsilon']} on the noise-free classifier, held-out train slice"
    ctx.report_progress(0.85, "noise: grid search")
    rows = [
        {
            "sigma": sigma,
            "clean_acc": round(accuracy(base, _noisy(x_val, sigma, ctx.seed), y_val), 4),
            "probe_acc": round(accuracy(base, _noisy(x_probe.astype(np.float32), sigma, ctx.seed + 1), y_probe), 4),
        }
        for sigma in grid
    ]
    # A fixed σ (to rebuild a recorded network, or to study one level) skips the choice;
    # the grid is still measured and recorded beside it.
    sigma = choose_sigma(rows, p["max_clean_drop"]) if p["sigma"] is None else float(p["sigma"])

    inputs = keras.Input(shape=ds.shape, name="images")
    model = keras.Model(inputs, base(InputNoise(sigma, name="input_noise")(inputs)), name="noise")
    return model, {**report, "sigma": sigma, "grid": rows, "probe_source": source,
                   "probe_size": int(len(y_probe)), "validation_size": int(len(y_val))}


RECIPE = Recipe(
    name="noise",
    summary="Gaussian input noise at inference (σ by grid search), control CNN trained with noise",
    defaults={
        **CONTROL_DEFAULTS,
        "sigma": None,  # None: chosen by the grid search below
        "sigma_grid": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        "max_clean_drop": 0.05,
        "holdout_fraction": 0.15,
        "probe_epsilon": 0.3,
        "probe_steps": 20,
    },
    train=_train,
)
