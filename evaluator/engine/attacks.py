"""Targeted iterative gradient ascent: the gradient-adversarial dataset adv(B) (SPEC §2).

From each eval image x, S signed steps of size alpha ascend log p_B(t | x') for the
image's fixed target t, each step projected onto the L-infinity ball of radius epsilon
around x and onto [0, 1] (Madry et al. 2018's PGD, targeted, no random start, so the
result is a deterministic function of the network and the inputs).

Speed: the whole S-step loop for a batch is one compiled `tf.function` (a
`tf.while_loop`, see docs/PERFORMANCE.md for the measured alternatives), so a batch costs
one Python call and no per-step numpy round-trips. Compiled functions are cached per
network, so attacking several image sets traces once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from evaluator.engine.network import LoadedNetwork, graph_gradient


@dataclass(frozen=True)
class AttackConfig:
    """Attack settings (mnist-5k: the Madry MNIST setting)."""

    epsilon: float = 0.3
    step: float = 0.01
    steps: int = 40
    # Expectation over transformation: for a non-deterministic network each step uses
    # the mean gradient of this many passes (Athalye et al. 2018; summed, which has the
    # same sign). Ignored for deterministic networks: every pass gives the same gradient.
    eot_samples: int = 1
    batch_size: int = 500


@dataclass
class AttackResult:
    adversarial: np.ndarray  # float32, same shape as the inputs
    targets: np.ndarray
    predictions: np.ndarray  # the attacked network's labels on `adversarial`
    success_rate: float  # fraction predicted as the target
    whitebox_accuracy: float  # fraction still predicted as the true label
    seconds: float
    # Fraction of images whose gradient was exactly zero on every step: the attack could
    # not move them at all (gradient masking suspected, a leaderboard flag).
    vanished_fraction: float


# Loop strategies measured in bench/attack_vs_art.py; "while" is the default because it
# traces one step (fast to build) and ran as fast as the unrolled loop.
LOOP = "while"
JIT_COMPILE = False


def _target_gradient(net: LoadedNetwork, adv: tf.Tensor, targets: tf.Tensor, eot_samples: int) -> tf.Tensor:
    """Gradient of sum_i log p(t_i | adv_i), summed over eot_samples passes."""
    total = tf.zeros_like(adv)
    for _ in range(eot_samples):  # unrolled: eot_samples is a small static count
        log_probs = net.log_probs(adv)
        objective = tf.reduce_sum(tf.gather(log_probs, targets, axis=1, batch_dims=1))
        total += graph_gradient(objective, adv)
    return total


def attack_function(net: LoadedNetwork, *, steps: int, eot_samples: int, batch: int | None,
                    loop: str = LOOP, jit_compile: bool = JIT_COMPILE) -> Callable:
    """The compiled attack for one batch shape: (x, targets, epsilon, step) -> (adv, moved).

    Cached per network and settings: epsilon and step are tensor arguments, so any
    values reuse the trace.
    """
    key = ("attack", steps, eot_samples, batch, loop, jit_compile)
    if key in net.function_cache:
        return net.function_cache[key]
    h, w, c = net.info.input_shape

    def one_step(adv, moved, x_low, x_high, targets, step):
        grad = _target_gradient(net, adv, targets, eot_samples)
        moved = tf.logical_or(moved, tf.reduce_any(tf.not_equal(grad, 0.0), axis=[1, 2, 3]))
        adv = tf.clip_by_value(adv + step * tf.sign(grad), x_low, x_high)
        return adv, moved

    def run(x, targets, epsilon, step):
        # The intersection of the epsilon ball and [0, 1] is a box: one clip projects.
        x_low = tf.maximum(x - epsilon, 0.0)
        x_high = tf.minimum(x + epsilon, 1.0)
        moved = tf.zeros(tf.shape(x)[:1], tf.bool)
        adv = x
        if loop == "unrolled":
            for _ in range(steps):
                adv, moved = one_step(adv, moved, x_low, x_high, targets, step)
            return adv, moved

        def body(i, adv, moved):
            adv, moved = one_step(adv, moved, x_low, x_high, targets, step)
            return i + 1, adv, moved

        _, adv, moved = tf.while_loop(
            lambda i, *_: i < steps, body, (tf.constant(0), adv, moved),
            maximum_iterations=steps,
        )
        return adv, moved

    compiled = tf.function(
        run,
        input_signature=[
            tf.TensorSpec([batch, h, w, c], tf.float32),
            tf.TensorSpec([batch], tf.int32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
        jit_compile=jit_compile,
    )
    net.function_cache[key] = compiled
    return compiled


def targeted_attack(
    net: LoadedNetwork,
    x: np.ndarray,
    y: np.ndarray,
    targets: np.ndarray,
    config: AttackConfig = AttackConfig(),
    progress: Callable[[float], None] | None = None,
) -> AttackResult:
    """Attack every image towards its target; returns the adversarial set and its scores."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    targets = np.asarray(targets).astype(np.int64)
    if not (len(x) == len(y) == len(targets)):
        raise ValueError(f"{len(x)} images, {len(y)} labels and {len(targets)} targets")
    started = time.perf_counter()
    eot = 1 if net.info.deterministic else max(1, config.eot_samples)
    fixed = net.info.fixed_batch is not None
    # A fixed-batch network needs a static batch (a multiple of its own); others take any.
    function = attack_function(
        net, steps=config.steps, eot_samples=eot,
        batch=net.batch_step(config.batch_size) if fixed else None,
    )
    epsilon = tf.constant(config.epsilon, tf.float32)
    step = tf.constant(config.step, tf.float32)
    adversarial = np.empty_like(x)
    moved = np.zeros(len(x), bool)
    start = 0
    for chunk, count in net.batches(x, config.batch_size, allow_multiple=True):
        chunk_targets = np.zeros(len(chunk), np.int32)
        chunk_targets[:count] = targets[start : start + count]
        adv, chunk_moved = function(tf.constant(chunk), tf.constant(chunk_targets), epsilon, step)
        adversarial[start : start + count] = adv.numpy()[:count]
        moved[start : start + count] = chunk_moved.numpy()[:count]
        start += count
        if progress is not None:
            progress(start / len(x))

    predictions = net.predict(adversarial, batch_size=max(config.batch_size, 1000))
    return AttackResult(
        adversarial=adversarial,
        targets=targets,
        predictions=predictions,
        success_rate=float(np.mean(predictions == targets)) if len(x) else 0.0,
        whitebox_accuracy=float(np.mean(predictions == y)) if len(x) else 0.0,
        seconds=time.perf_counter() - started,
        vanished_fraction=float(np.mean(~moved)) if len(x) else 0.0,
    )
