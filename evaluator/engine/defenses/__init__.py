"""The reference suite (SPEC §3): ten recipes, in ladder-table order.

    from evaluator.engine.defenses import RECIPES, BuildContext
    result = RECIPES["pca"].build(BuildContext(dataset, out_dir=Path("models/pca")))

`default_params()` is what fixtures/<benchmark>/recipes.json records; a test keeps the
two in step (regenerate with `python -m evaluator.engine.defenses.record`).
"""

from __future__ import annotations

from typing import Any

from evaluator.engine.defenses import adversarial, autoencoder, control, downsample, gan, mtl, noise, pca
from evaluator.engine.defenses.base import BuildContext, BuildResult, Recipe

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        control.RECIPE,
        pca.RECIPE,
        noise.RECIPE,
        downsample.DOWN50,
        downsample.DOWN75,
        autoencoder.AUTOENCODER,
        autoencoder.CONV_AUTOENCODER,
        mtl.RECIPE,
        gan.RECIPE,
        adversarial.RECIPE,
    )
}


def default_params() -> dict[str, dict[str, Any]]:
    """Every recipe's default parameters and one-line summary, JSON-ready, in order."""
    return {name: {"summary": r.summary, "params": dict(r.defaults)} for name, r in RECIPES.items()}


__all__ = ["RECIPES", "BuildContext", "BuildResult", "Recipe", "default_params"]
