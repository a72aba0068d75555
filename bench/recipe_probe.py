"""Train a built-in benchmark's references in-process and probe each one (issue 15).

    .venv/bin/python -m bench.recipe_probe digits-8x8
    .venv/bin/python -m bench.recipe_probe mnist-5k-mlp
    .venv/bin/python -m bench.recipe_probe digits-8x8 --recipes adv-trained --epsilon 0.297

A sanity check of the scaled recipes (docs/GENERALISATION.md), not the benchmark's
numbers: every reference is trained with the benchmark's parameters (seed 0, one
thread, no sandbox, no export), then its clean eval accuracy and its accuracy under
untargeted 40-step PGD (step ε/30) on the eval split are printed, one JSON line each.
`--epsilon` trains adv-trained and attacks at another budget (how digits-8x8's ε was
compared with 0.3). The pipeline's own numbers appear on /benchmark/ after a build.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark")
    parser.add_argument("--recipes", default="", help="comma-separated subset (default: all ten)")
    parser.add_argument("--epsilon", type=float, default=None, help="attack (and adv-training) budget")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from evaluator.engine import builtins
    from evaluator.engine.defenses import RECIPES, BuildContext
    from evaluator.engine.defenses.adversarial import pgd_numpy
    from evaluator.engine.defenses.base import accuracy

    bench = builtins.BUILTINS[args.benchmark]
    eps = bench.epsilon if args.epsilon is None else args.epsilon
    ds = bench.load()
    names = [r for r in args.recipes.split(",") if r] or list(RECIPES)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            recipe = RECIPES[name]
            params = bench.params_for(name)
            if name == "adv-trained" and args.epsilon is not None:
                params["epsilon"] = eps
            keras.utils.set_random_seed(0)
            started = time.perf_counter()
            model, report = recipe.train(BuildContext(ds, Path(tmp) / name, params=params), recipe.resolve(params))
            seconds = time.perf_counter() - started
            total += seconds
            adversarial = pgd_numpy(model, ds.x_eval, ds.y_eval, epsilon=eps, step_size=eps / 30, steps=40)
            print(json.dumps({
                "benchmark": bench.name, "recipe": name, "epsilon": eps, "train_s": round(seconds, 1),
                "clean": round(accuracy(model, ds.x_eval, ds.y_eval), 3),
                "untargeted_pgd40": round(accuracy(model, adversarial, ds.y_eval), 3),
                **{k: v for k, v in report.items() if k in ("sigma", "components", "real_accuracy")},
            }), flush=True)
    print(f"total train seconds: {total:.1f}")


if __name__ == "__main__":
    main()
