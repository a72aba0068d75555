"""An independent audit of the product's robust accuracy with ART (issue 12).

    VAR_DIR=/path/to/built/var .venv/bin/python -m bench.independent_audit [--n 500] [--steps 100] [--restarts 5]

For every reference of a built benchmark: ART 1.20's ProjectedGradientDescent (untargeted,
ε of the benchmark, step 0.01, `--steps` steps, `--restarts` random restarts; for a
stochastic network, expectation over its randomness: the classifier ART attacks is the
mean of `--eot` forward passes) on the first `--n` eval images, through plain
`tf.saved_model.load` (none of the product's attack or loading code). The product's
figure is its stored per-image robust correctness (results.network_robust_correct) on
the same images. The check issue 12 asks: ART's accuracy is no more than 2 points below
the product's robust accuracy for every reference (the product found at least as much
as an independent strong attack, give or take sampling). Exit status 1 when it fails.
Read-only on the build.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

TOLERANCE = 0.02  # issue 12: "no more than 2 points below"


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import django

    django.setup()


def _classifier(model_dir: Path, *, probabilities: bool, stochastic: bool, eot: int, shape: tuple, classes: int):
    """ART's view of a SavedModel: its serving signature as log-probabilities (the mean of
    `eot` passes' probabilities for a stochastic network)."""
    import tensorflow as tf
    from art.estimators.classification import TensorFlowV2Classifier

    loaded = tf.saved_model.load(str(model_dir))
    signature = loaded.signatures.get("serving_default") or next(iter(loaded.signatures.values()))
    (input_name,) = signature.structured_input_signature[1].keys()

    def once(x: tf.Tensor) -> tf.Tensor:
        (out,) = signature(**{input_name: x}).values()
        return out if probabilities else tf.nn.softmax(out)

    def model(x: tf.Tensor, training: bool = False) -> tf.Tensor:
        samples = eot if stochastic else 1
        mean = tf.add_n([once(x) for _ in range(samples)]) / samples
        return tf.math.log(tf.maximum(mean, 1e-12))

    model._keep = loaded  # keep the loaded object (and its variables) alive
    return TensorFlowV2Classifier(
        model=model, nb_classes=classes, input_shape=shape, clip_values=(0.0, 1.0),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ), once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="mnist-5k")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--eot", type=int, default=8, help="passes averaged for a stochastic network")
    parser.add_argument("--only", default="", help="comma-separated reference recipes (default: all)")
    parser.add_argument("--skip-vacuous", action="store_true",
                        help="skip references whose product robust accuracy is at most the tolerance: ART cannot "
                             "be 2 points below it, so the check holds whatever ART finds")
    args = parser.parse_args()
    _django()
    from art.attacks.evasion import ProjectedGradientDescent

    from evaluator.engine.datasets import load_dataset
    from evaluator.services import results, storage
    from leaderboard import selectors
    from leaderboard.models import Network

    bench = selectors.benchmark_get(args.benchmark)
    ds = load_dataset(storage.media_path(bench.data_file))
    x, y = ds.x_eval[: args.n], ds.y_eval[: args.n]
    refs = Network.objects.filter(benchmark=bench, is_reference=True).order_by("pk")
    only = {r for r in args.only.split(",") if r}
    print(f"ART PGD, untargeted, eps {bench.epsilon}, step {args.step}, {args.steps} steps, {args.restarts} restarts, "
          f"EOT {args.eot} for stochastic networks; first {len(x)} eval images of {bench.name}\n")
    print("| reference | product robust accuracy | ART PGD accuracy | ART − product | single-pass ART* | seconds |")
    print("|---|---|---|---|---|---|")
    failures = []
    for ref in refs:
        if only and ref.recipe not in only:
            continue
        robust = results.network_robust_correct(ref)
        if robust is None:
            print(f"| {ref.name} | not audited | | | | |")
            continue
        product = float(robust[: args.n].mean())
        if args.skip_vacuous and product <= TOLERANCE:
            print(f"| {ref.name} | {product:.1%} | skipped: holds whatever ART finds | | | |", flush=True)
            continue
        info = ref.info or {}
        stochastic = not info.get("deterministic", True)
        classifier, once = _classifier(
            storage.media_path(info["model_dir"]), probabilities=bool(info.get("outputs_probabilities")),
            stochastic=stochastic, eot=args.eot, shape=tuple(x.shape[1:]), classes=bench.num_classes,
        )
        started = time.perf_counter()
        attack = ProjectedGradientDescent(
            classifier, norm=np.inf, eps=bench.epsilon, eps_step=args.step, max_iter=args.steps, targeted=False,
            num_random_init=args.restarts, batch_size=500, verbose=False,
        )
        adversarial = attack.generate(x=x, y=np.eye(classifier.nb_classes, dtype=np.float32)[y])
        art = float(np.mean(classifier.predict(adversarial, batch_size=500).argmax(axis=1) == y))
        single = float(np.mean(np.asarray(once(adversarial)).argmax(axis=1) == y)) if stochastic else None
        seconds = time.perf_counter() - started
        gap = art - product
        if gap < -TOLERANCE:
            failures.append(f"{ref.name}: ART {art:.1%} is {-gap:.1%} below the product's robust {product:.1%}")
        print(f"| {ref.name} | {product:.1%} | {art:.1%} | {gap * 100:+.1f} points | "
              f"{'' if single is None else f'{single:.1%}'} | {seconds:.0f} |", flush=True)
    print("\n* a stochastic network's accuracy on ART's images judged by one forward pass instead of the mean of "
          f"{args.eot}.")
    print("\n" + ("\n".join("FAIL " + f for f in failures) if failures else
                  f"OK: for every reference ART's accuracy is at most {TOLERANCE:.0%} below the product's robust accuracy."))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
