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


def _step_function(net: LoadedNetwork, count: int, batch: int | None) -> Callable:
    """Compiled SGA step of `count` perturbations at once, each on its own mini-batch:
    (delta [K,H,W,C], x [K,B,H,W,C], y [K,B], weight [K,B], xi, step) -> new delta.

    The K losses are independent, so the gradient of their sum gives each perturbation
    its own gradient: one network call on K x B images instead of K calls on B (the
    same perturbations; measured, no faster on the tiny CNN: the arithmetic is the cost).
    `weight` masks padding rows (fixed-batch networks get zero-padded mini-batches).
    """
    key = ("universal-step", count, batch)
    if key in net.function_cache:
        return net.function_cache[key]
    h, w, c = net.info.input_shape

    def step_fn(delta, x, y, weight, xi, step):
        images = tf.reshape(tf.clip_by_value(x + delta[:, None], 0.0, 1.0), [-1, h, w, c])
        log_probs = net.log_probs(images)
        nll = tf.reshape(-tf.gather(log_probs, tf.reshape(y, [-1]), axis=1, batch_dims=1), tf.shape(y))
        loss = tf.reduce_sum(tf.reduce_sum(nll * weight, axis=1) / tf.maximum(tf.reduce_sum(weight, axis=1), 1.0))
        grad = graph_gradient(loss, delta)
        return tf.clip_by_value(delta + step * tf.sign(grad), -xi, xi)

    compiled = tf.function(
        step_fn,
        input_signature=[
            tf.TensorSpec([count, h, w, c], tf.float32),
            tf.TensorSpec([count, batch, h, w, c], tf.float32),
            tf.TensorSpec([count, batch], tf.int32),
            tf.TensorSpec([count, batch], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
    )
    net.function_cache[key] = compiled
    return compiled


def _minibatches(net: LoadedNetwork, x: np.ndarray, y: np.ndarray, orders: list[np.ndarray], batch: int):
    """Per step, every perturbation's mini-batch stacked: (x [K,B,...], y [K,B], weight [K,B]).
    A fixed-batch network's last, short mini-batches are zero-padded to B (weight 0)."""
    fixed = net.info.fixed_batch is not None
    for start in range(0, len(orders[0]), batch):
        index = np.stack([order[start : start + batch] for order in orders])  # [K, b]
        xb, yb = x[index], y[index].astype(np.int32)
        wb = np.ones(index.shape, np.float32)
        if fixed and index.shape[1] < batch:
            pad = batch - index.shape[1]
            xb = np.concatenate([xb, np.zeros((len(orders), pad, *x.shape[1:]), np.float32)], axis=1)
            yb = np.concatenate([yb, np.zeros((len(orders), pad), np.int32)], axis=1)
            wb = np.concatenate([wb, np.zeros((len(orders), pad), np.float32)], axis=1)
        yield xb, yb, wb


def universal_perturbations(
    net: LoadedNetwork,
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: UniversalConfig = UniversalConfig(),
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """K = config.count perturbations [K, H, W, C], each with L-infinity norm <= xi.

    Perturbation k is fitted on its own random train subset, visited in its own order,
    both drawn with seed (seed, k), so the K perturbations differ and the whole set is
    reproducible from `seed`. The K fits run side by side (one compiled step for all).
    """
    x_train = np.asarray(x_train, dtype=np.float32)
    y_train = np.asarray(y_train).astype(np.int64)
    fixed = net.info.fixed_batch is not None
    batch = net.batch_step(config.batch_size)
    rngs = [np.random.default_rng([seed, k]) for k in range(config.count)]
    subsets = [rng.choice(len(x_train), size=min(config.subset, len(x_train)), replace=False) for rng in rngs]
    step_fn = _step_function(net, config.count, batch if fixed else None)
    xi = tf.constant(config.xi, tf.float32)
    step = tf.constant(config.step, tf.float32)
    delta = tf.zeros((config.count, *net.info.input_shape), tf.float32)
    total = config.epochs * -(-len(subsets[0]) // batch)
    done = 0
    for _ in range(config.epochs):
        # Each epoch visits every subset in a fresh order (indices into x_train).
        orders = [subset[rng.permutation(len(subset))] for subset, rng in zip(subsets, rngs)]
        for xb, yb, wb in _minibatches(net, x_train, y_train, orders, batch):
            delta = step_fn(delta, tf.constant(xb), tf.constant(yb), tf.constant(wb), xi, step)
            done += 1
            if progress is not None:
                progress(done / total)
    # Guard the contract against float drift: the bound is part of the dataset's definition.
    return np.clip(delta.numpy(), -config.xi, config.xi).astype(np.float32)


def universal_dataset(x_eval: np.ndarray, perturbations: np.ndarray) -> np.ndarray:
    """Eval image i plus perturbation i mod K, clipped to [0, 1] (float32)."""
    x_eval = np.asarray(x_eval, dtype=np.float32)
    perturbations = np.asarray(perturbations, dtype=np.float32)
    index = np.arange(len(x_eval)) % len(perturbations)
    return np.clip(x_eval + perturbations[index], 0.0, 1.0).astype(np.float32)
