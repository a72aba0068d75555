"""Write fixtures/<benchmark>/recipes.json from the code, and optionally measure the suite.

    python -m evaluator.engine.defenses.record            # regenerate every recipes.json
    python -m evaluator.engine.defenses.record --measure  # + build all ten at scale 1.0

One file per built-in benchmark (engine.builtins): mnist-5k's records the recipes'
defaults; digits-8x8's and mnist-5k-mlp's the parameters their references are trained
with (defaults + the benchmark's overrides), their attack settings and the rules that
scaled them. The measurement builds every reference on mnist-5k, reloads each exported
SavedModel and prints its training seconds and clean eval accuracy (a one-off check of
the time budget, not a test: it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from evaluator.engine import builtins
from evaluator.engine.datasets import MNIST5K_NAME, load_mnist5k
from evaluator.engine.defenses import RECIPES, BuildContext, default_params

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
FIXTURE = FIXTURES / MNIST5K_NAME / "recipes.json"
# Why digits-8x8 and mnist-5k-mlp differ from mnist-5k (engine.builtins says it at length).
RULES = {
    builtins.DIGITS8: [
        f"epsilon: {builtins.DIGITS8_EPSILON:g} = 0.3 x {builtins.PIXEL_CONTRAST[builtins.DIGITS8]} / "
        f"{builtins.PIXEL_CONTRAST[builtins.MNIST5K]}: the same share of the pixel contrast between classes "
        "(median over eval images of sum|d|^3/sum|d|^2, d = image minus its nearest train image of another "
        "class) as 0.3 is on mnist-5k; step = epsilon/30 and xi = epsilon as on mnist-5k",
        "adv-trained epsilon and noise probe_epsilon = epsilon; noise sigma_grid = mnist-5k's x epsilon/0.3",
        "every epoch count x 3000/1078 (the train split sizes): as many optimizer steps as on mnist-5k",
        "widths of layers that encode or generate whole images (dense autoencoder, GAN) x 8/28 (the image "
        "side), to the nearest power of two",
        "kept: the classifier (conv filters, dense units), PCA's 99% of variance, downsampling to 1/2 and 1/4 "
        "of the side, loss weights, learning rates, batch size",
    ],
    builtins.MNIST5K_MLP: [
        "every classifier's backbone is an MLP (flatten, dense mlp_units, dense dense_units, logits) instead "
        "of the CNN; summaries that say 'control CNN' mean this MLP; the conv autoencoder stays convolutional "
        "(it is the defense, not the backbone)",
        "the images, split, attack settings and attack targets are mnist-5k's",
    ],
}


def fixture_document(name: str = MNIST5K_NAME) -> dict:
    if name == MNIST5K_NAME:
        return {"benchmark": MNIST5K_NAME, "seed": 0, "scale": 1.0, "recipes": default_params()}
    bench = builtins.BUILTINS[name]
    return {
        "benchmark": name,
        "seed": 0,
        "scale": 1.0,
        "attack": {"epsilon": bench.epsilon, "step": bench.step, "steps": bench.steps,
                   "universal_xi": bench.universal_xi},
        "rules": RULES[name],
        "recipes": {
            recipe: {"summary": r.summary, "params": r.resolve(bench.params_for(recipe))}
            for recipe, r in RECIPES.items()
        },
    }


def fixture_path(name: str) -> Path:
    return FIXTURES / name / "recipes.json"


def write_fixture(path: Path = FIXTURE, name: str = MNIST5K_NAME) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fixture_document(name), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def measure(scale: float = 1.0) -> list[dict]:
    import tensorflow as tf

    ds = load_mnist5k()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in RECIPES.items():
            result = recipe.build(BuildContext(ds, Path(tmp) / name, scale=scale))
            serve = tf.saved_model.load(str(result.model_dir)).signatures["serving_default"]
            logits = np.concatenate([
                next(iter(serve(tf.constant(ds.x_eval[i : i + 500])).values())).numpy()
                for i in range(0, len(ds.x_eval), 500)
            ])
            extra = {k: v for k, v in result.report.items() if k in ("components", "sigma", "real_accuracy", "train_pgd20_accuracy")}
            row = {"recipe": name, "train_seconds": result.report["train_seconds"],
                   "clean_accuracy": float(np.mean(logits.argmax(1) == ds.y_eval)), **extra}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"total train seconds: {sum(r['train_seconds'] for r in rows):.1f}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="also build all ten at scale 1.0 and time them")
    args = parser.parse_args()
    for benchmark in builtins.BUILTINS:
        write_fixture(fixture_path(benchmark), benchmark)
        print(f"wrote {fixture_path(benchmark)}")
    if args.measure:
        measure()
