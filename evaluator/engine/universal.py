"""Universal adversarial perturbations and the universal adversarial dataset (SPEC §2).

The charter follows Moosavi-Dezfooli et al., "Universal adversarial perturbations"
(CVPR 2017, arXiv:1610.08401, 2016), whose algorithm runs DeepFool on every image it
has not fooled yet and accumulates the minimal perturbations. DeepFool needs one
gradient per class per iteration per image, one image at a time, which on a 2-core CPU
means minutes per perturbation and per network. We use the stochastic-gradient variant
of Shafahi et al., "Universal adversarial training" (AAAI 2020): maximise the mean
cross-entropy of the true label over mini-batches with signed gradient steps on the one
shared perturbation, projected onto the L-infinity ball of radius xi after every step.
It is batched (one compiled step per mini-batch), so a perturbation costs seconds, and
it optimises the quantity the universal dataset is scored on (accuracy under the
perturbation) directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from evaluator.engine.network import LoadedNetwork, graph_gradient


@dataclass(frozen=True)
class UniversalConfig:
    count: int = 6  # the charter used 6 perturbations
    xi: float = 0.3  # L-infinity bound (mnist-5k)
    epochs: int = 5
    # Signed step on the shared perturbation; 0.02 reaches the ball's surface in 15
    # steps, leaving most of the 50 steps (5 epochs x 10 batches) to refine it.
    step: float = 0.02
    batch_size: int = 100
    subset: int = 1000  # train images per perturbation, drawn per seed


def _step_function(net: LoadedNetwork, batch: int | None) -> Callable:
    """Compiled SGA step: (delta, x, y, weight, xi, step) -> new delta.

    `weight` masks padding rows (fixed-batch networks get zero-padded mini-batches).
    """
    key = ("universal-step", batch)
    if key in net.function_cache:
        return net.function_cache[key]
    h, w, c = net.info.input_shape

    def step_fn(delta, x, y, weight, xi, step):
        log_probs = net.log_probs(tf.clip_by_value(x + delta, 0.0, 1.0))
        nll = -tf.gather(log_probs, y, axis=1, batch_dims=1)
        loss = tf.reduce_sum(nll * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
        grad = graph_gradient(loss, delta)
        return tf.clip_by_value(delta + step * tf.sign(grad), -xi, xi)

    compiled = tf.function(
        step_fn,
        input_signature=[
            tf.TensorSpec([h, w, c], tf.float32),
            tf.TensorSpec([batch, h, w, c], tf.float32),
            tf.TensorSpec([batch], tf.int32),
            tf.TensorSpec([batch], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
    )
    net.function_cache[key] = compiled
    return compiled


def _one_perturbation(
    net: LoadedNetwork,
    x: np.ndarray,
    y: np.ndarray,
    config: UniversalConfig,
    rng: np.random.Generator,
    tick: Callable[[], None],
) -> np.ndarray:
    fixed = net.info.fixed_batch is not None
    batch = net.batch_step(config.batch_size)
    step_fn = _step_function(net, batch if fixed else None)
    xi = tf.constant(config.xi, tf.float32)
    step = tf.constant(config.step, tf.float32)
    delta = tf.zeros(net.info.input_shape, tf.float32)
    for _ in range(config.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            index = order[start : start + batch]
            xb, yb, wb = x[index], y[index].astype(np.int32), np.ones(len(index), np.float32)
            if fixed and len(index) < batch:
                pad = batch - len(index)
                xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), np.float32)])
                yb = np.concatenate([yb, np.zeros(pad, np.int32)])
                wb = np.concatenate([wb, np.zeros(pad, np.float32)])
            delta = step_fn(delta, tf.constant(xb), tf.constant(yb), tf.constant(wb), xi, step)
        tick()
    return delta.numpy()


def universal_perturbations(
    net: LoadedNetwork,
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: UniversalConfig = UniversalConfig(),
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """K = config.count perturbations [K, H, W, C], each with L-infinity norm <= xi.

    Perturbation k is fitted on its own random train subset drawn with seed (seed, k), so
    the K perturbations differ and the whole set is reproducible from `seed`.
    """
    x_train = np.asarray(x_train, dtype=np.float32)
    y_train = np.asarray(y_train).astype(np.int64)
    total = config.count * config.epochs
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / total)

    perturbations = []
    for k in range(config.count):
        rng = np.random.default_rng([seed, k])
        subset = rng.choice(len(x_train), size=min(config.subset, len(x_train)), replace=False)
        perturbations.append(_one_perturbation(net, x_train[subset], y_train[subset], config, rng, tick))
    result = np.stack(perturbations).astype(np.float32)
    # Guard the contract against float drift: the bound is part of the dataset's definition.
    return np.clip(result, -config.xi, config.xi)


def universal_dataset(x_eval: np.ndarray, perturbations: np.ndarray) -> np.ndarray:
    """Eval image i plus perturbation i mod K, clipped to [0, 1] (float32)."""
    x_eval = np.asarray(x_eval, dtype=np.float32)
    perturbations = np.asarray(perturbations, dtype=np.float32)
    index = np.arange(len(x_eval)) % len(perturbations)
    return np.clip(x_eval + perturbations[index], 0.0, 1.0).astype(np.float32)
