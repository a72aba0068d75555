"""Write fixtures/mnist-5k/recipes.json from the code, and optionally measure the suite.

    python -m evaluator.engine.defenses.record            # regenerate recipes.json
    python -m evaluator.engine.defenses.record --measure  # + build all ten at scale 1.0

The measurement builds every reference on mnist-5k, reloads each exported SavedModel
and prints its training seconds and clean eval accuracy (a one-off check of the time
budget, not a test: it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from evaluator.engine.datasets import MNIST5K_NAME, load_mnist5k
from evaluator.engine.defenses import RECIPES, BuildContext, default_params

FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / MNIST5K_NAME / "recipes.json"


def fixture_document() -> dict:
    return {"benchmark": MNIST5K_NAME, "seed": 0, "scale": 1.0, "recipes": default_params()}


def write_fixture(path: Path = FIXTURE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fixture_document(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
    write_fixture()
    print(f"wrote {FIXTURE}")
    if args.measure:
        measure()
