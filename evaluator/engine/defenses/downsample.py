"""References #4 and #5, down50 and down75: shrink the image and enlarge it back, then
the control architecture.

"Downsample by 50% / by 75%" is read as reducing the side *by* that much: down50 keeps
1/2 of each side (28 -> 14), down75 keeps 1/4 (28 -> 7). Why this reading: it is the
literal one, and it makes down75 a distinct, stronger low-pass rung; keeping 75% of the
side (28 -> 21) is nearly the identity on MNIST and would duplicate the control. (The
charter's ImageNet numbers, where down75 was closer to the control than down50, hint
that it kept 75%; that variant is one override away: params={"keep": 0.75}.)
Shrinking averages every pixel (average pooling, or antialiased bilinear), enlarging is
bilinear; both are fixed, differentiable graph ops.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from evaluator.engine.defenses.base import CONTROL_DEFAULTS, BuildContext, Params, Recipe, classifier, fit_classifier


class DownUp(keras.layers.Layer):
    """Shrink to `size` by area averaging, enlarge back bilinearly to the input's size.

    When the input's sides are whole multiples of `size` (28 -> 14 or 7, 32 -> 16 or 8),
    area averaging is exactly average pooling, which is used then: the same numbers with
    the most common op there is (tf.image.resize's area method exports as the rarer
    ScaleAndTranslate, which an op allowlist is less likely to carry).
    """

    def __init__(self, size: tuple[int, int], pool: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.pool = size, pool

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if self.pool:
            small = tf.nn.avg_pool2d(x, self.pool, self.pool, "VALID")
        else:
            # ResizeArea has no gradient, and the evaluation attack must differentiate
            # every reference; antialiased bilinear also averages every pixel.
            small = tf.image.resize(x, self.size, method="bilinear", antialias=True)
        return tf.image.resize(small, tf.shape(x)[1:3], method="bilinear")


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    h, w, _ = ctx.dataset.shape
    size = (max(1, round(h * p["keep"])), max(1, round(w * p["keep"])))
    name = f"down{round(100 * (1 - p['keep']))}"
    pool = h // size[0] if h % size[0] == 0 and w % size[1] == 0 and h // size[0] == w // size[1] else None
    model = classifier(ctx.dataset, p, [DownUp(size, pool, name="down_up")], name=name)
    return model, {**fit_classifier(ctx, model, p), "low_resolution": list(size),
                   "shrink": f"average pooling {pool}x{pool}" if pool else "antialiased bilinear"}


def _recipe(name: str, keep: float) -> Recipe:
    return Recipe(
        name=name,
        summary=f"average-downsample to {keep:.0%} of the side and bilinear back up, then the control CNN",
        defaults={**CONTROL_DEFAULTS, "keep": keep},
        train=_train,
    )


DOWN50 = _recipe("down50", 0.5)
DOWN75 = _recipe("down75", 0.25)
