"""Reference #1, control: the plain CNN every other rung is compared with."""

from __future__ import annotations

from typing import Any

import keras

from evaluator.engine.defenses.base import CONTROL_DEFAULTS, BuildContext, Params, Recipe, classifier, fit_classifier


def _train(ctx: BuildContext, p: Params) -> tuple[keras.Model, dict[str, Any]]:
    model = classifier(ctx.dataset, p, name="control")
    return model, fit_classifier(ctx, model, p)


RECIPE = Recipe(
    name="control",
    summary="plain CNN: 2 conv+pool blocks, dense 128, logits",
    defaults=dict(CONTROL_DEFAULTS),
    train=_train,
)
