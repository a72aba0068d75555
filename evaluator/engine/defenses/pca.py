"""Reference #2, pca: project the input onto the principal components keeping 99% of
the train split's variance, then the control architecture.

The projection (x - mean) @ V @ Vᵀ + mean is fitted once with NumPy's SVD and baked
into the graph as two fixed matmuls (non-trainable weights): the exported network
needs nothing outside itself, and the attack differentiates through the projection
like any other layer (no gradient masking by construction).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.defenses.base import CONTROL_DEFAULTS, BuildContext, Params, Recipe, classifier, fit_classifier


def fit_pca(x: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean [d], components [d, k], variance kept) with the fewest k reaching `variance`."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    # Economy SVD of the centred data: rows of vt are the principal directions.
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    ratio = np.cumsum(s**2) / np.sum(s**2)
    k = int(min(np.searchsorted(ratio, variance) + 1, len(ratio)))
    return mean.astype(np.float32), vt[:k].T.astype(np.float32), float(ratio[k - 1])


class Projection(keras.layers.Layer):
    """Orthogonal projection onto a fixed affine subspace of the flattened image."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._initial = (mean, components)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        mean, components = self._initial
        self.mean = self.add_weight(shape=mean.shape, initializer="zeros", trainable=False, name="mean")
        self.components = self.add_weight(shape=components.shape, initializer="zeros", trainable=False, name="components")
        self.mean.assign(mean)
        self.components.assign(components)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(x, [-1, self.mean.shape[0]]) - self.mean
        projected = tf.matmul(tf.matmul(flat, self.components), self.components, transpose_b=True) + self.mean
        return tf.reshape(projected, tf.shape(x))


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    mean, components, kept = fit_pca(ctx.dataset.x_train, p["variance"])
    model = classifier(ctx.dataset, p, [Projection(mean, components, name="pca")], name="pca")
    report = fit_classifier(ctx, model, p)
    return model, {**report, "components": int(components.shape[1]), "variance_kept": round(kept, 5),
                   "input_dims": int(mean.shape[0])}


RECIPE = Recipe(
    name="pca",
    summary="projection onto the principal components keeping 99% of variance, then the control CNN",
    defaults={**CONTROL_DEFAULTS, "variance": 0.99},
    train=_train,
)
