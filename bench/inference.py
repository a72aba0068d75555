"""Inference throughput: our batched predict vs a bare batched call of the same model.

    .venv/bin/python -m bench.inference [--repeats 5] [--batch-size 1000] [--images 20000]

  ours   LoadedNetwork.predict (the SavedModel through our loader: chunking, log-softmax,
         argmax, numpy out)
  bare   the restored signature function called directly on the same batches, argmax
         in numpy (what a hand-written loop over the SavedModel would do)
  keras  a tf.function around the Keras model itself on the same batches

Uses the control-like CNN cached by bench/attack_vs_art.py (trained on first use) and
the 2,000 mnist-5k eval images tiled to --images. Warm-up, then interleaved repeats;
medians, best runs and per-round ratios. Figures are recorded in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.attack_vs_art import control_model, load_data, report, timed_rounds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--images", type=int, default=20000)
    args = parser.parse_args()

    from evaluator.engine.network import load_network

    x_train, y_train, x_eval, _, _ = load_data()
    model, saved_path = control_model(x_train, y_train)
    net = load_network(saved_path, expected_shape=(28, 28, 1), num_classes=10, probe=x_eval[:64])
    images = np.tile(x_eval, (args.images // len(x_eval) + 1, 1, 1, 1))[: args.images]
    size = args.batch_size
    signature = net.signature_function  # the restored function our loader wraps (unfrozen)
    keras_call = tf.function(lambda z: model(z, training=False), input_signature=[tf.TensorSpec([None, 28, 28, 1])])

    def bare() -> np.ndarray:
        return np.concatenate([
            signature(**{net.info.input_key: tf.constant(images[s : s + size])})[net.info.output_key].numpy().argmax(1)
            for s in range(0, len(images), size)
        ])

    def keras_batched() -> np.ndarray:
        return np.concatenate([keras_call(images[s : s + size]).numpy().argmax(1) for s in range(0, len(images), size)])

    parts = {"ours": lambda: net.predict(images, batch_size=size), "bare": bare, "keras": keras_batched}
    assert all(np.array_equal(parts["ours"](), run()) for run in (bare, keras_batched))
    print(f"{len(images)} images, batch {size}, {os.cpu_count()} CPUs")
    report(timed_rounds(parts, args.repeats), len(images), "images/s")

if __name__ == "__main__":
    main()
