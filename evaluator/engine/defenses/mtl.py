"""Reference #8, mtl: a multi-task network, shared trunk with a class head and an
auxiliary head that reconstructs the input image.

Trunk: the control architecture up to its dense layer (base.trunk: conv blocks, flatten,
dense; or the MLP backbone's dense layers).
Heads: class logits, and a sigmoid image of the input's shape (decoder: one dense
layer). Loss: cross-entropy + aux_weight × pixel mean squared error; the auxiliary task
needs no extra labels and works for any benchmark, and it makes the shared features
keep the whole image rather than only what separates the classes. The exported network
has the class head only.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.defenses.base import CONTROL_DEFAULTS, BuildContext, Params, Recipe, fit_classifier, trunk


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    ds = ctx.dataset
    inputs = keras.Input(shape=ds.shape, name="images")
    h = inputs
    for layer in trunk(ds.shape, p):
        h = layer(h)
    logits = keras.layers.Dense(ds.num_classes, name="classes")(h)
    pixels = keras.layers.Dense(int(np.prod(ds.shape)), activation="sigmoid", name="reconstruction")(h)
    reconstruction = keras.layers.Reshape(ds.shape)(pixels)
    both = keras.Model(inputs, [logits, reconstruction], name="mtl_training")
    aux_weight = float(p["aux_weight"])

    def loss(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        class_logits, image = model(x, training=True)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=class_logits))
        return ce + aux_weight * tf.reduce_mean(tf.square(image - x))

    classes_only = keras.Model(inputs, logits, name="mtl")  # shares every layer with `both`
    report = fit_classifier(ctx, both, p, loss=loss, evaluate=classes_only)
    return classes_only, report


RECIPE = Recipe(
    name="mtl",
    summary="multi-task CNN: shared trunk, class head + input-reconstruction head (exported: class head)",
    defaults={**CONTROL_DEFAULTS, "aux_weight": 5.0},
    train=_train,
)
