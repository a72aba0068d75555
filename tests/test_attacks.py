"""Targeted gradient ascent (evaluator/engine/attacks.py) against the tiny CNN and variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from evaluator.engine.attacks import AttackConfig, attack_function, targeted_attack
from tests.test_network import export_module, load

CONFIG = AttackConfig(epsilon=0.3, step=0.01, steps=40, batch_size=500)


def draw_targets(y: np.ndarray, seed: int = 1) -> np.ndarray:
    """A target != label for every image (shift by 1..9 mod 10)."""
    return (y + 1 + np.random.default_rng(seed).integers(0, 9, len(y))) % 10


@pytest.fixture(scope="module")
def net(tiny_cnn_dir):
    return load(tiny_cnn_dir)


@pytest.fixture(scope="module")
def eval_set(mnist_small):
    _, _, x_eval, y_eval = mnist_small
    return x_eval, y_eval, draw_targets(y_eval)


@pytest.fixture(scope="module")
def result(net, eval_set):
    x, y, targets = eval_set
    return targeted_attack(net, x, y, targets, CONFIG)


def test_targets_never_equal_labels(eval_set):
    _, y, targets = eval_set
    assert not np.any(targets == y)


def test_attack_breaks_the_tiny_cnn_and_hits_targets(net, eval_set, result):
    x, y, targets = eval_set
    assert np.mean(net.predict(x) == y) > 0.8
    assert result.whitebox_accuracy < 0.2
    assert result.success_rate > 0.7
    np.testing.assert_array_equal(result.predictions, net.predict(result.adversarial))
    assert result.success_rate == pytest.approx(np.mean(result.predictions == targets))
    assert result.vanished_fraction == 0.0
    assert result.seconds > 0


def test_adversarial_images_stay_in_the_epsilon_box(eval_set, result):
    x, _, _ = eval_set
    adversarial = result.adversarial
    assert adversarial.dtype == np.float32 and adversarial.shape == x.shape
    assert np.abs(adversarial - x).max() <= CONFIG.epsilon + 1e-6
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0


def test_attack_is_deterministic_and_reports_progress(net, eval_set, result):
    x, y, targets = eval_set
    seen: list[float] = []
    again = targeted_attack(net, x, y, targets, AttackConfig(batch_size=128), progress=seen.append)
    np.testing.assert_array_equal(again.adversarial, result.adversarial)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 3


def test_unrolled_loop_matches_while_loop(net, eval_set):
    x, _, targets = eval_set
    args = (tf.constant(x[:50]), tf.constant(targets[:50].astype(np.int32)), tf.constant(0.3), tf.constant(0.01))
    while_adv, _ = attack_function(net, steps=10, eot_samples=1, batch=None, loop="while")(*args)
    unrolled_adv, _ = attack_function(net, steps=10, eot_samples=1, batch=None, loop="unrolled")(*args)
    np.testing.assert_allclose(while_adv.numpy(), unrolled_adv.numpy(), atol=1e-6)


def test_rounded_input_is_flagged_as_vanishing_gradients(tiny_cnn, eval_set, tmp_path):
    x, y, targets = eval_set
    path = export_module(tmp_path / "m", lambda m, images: m(tf.round(images)), model=tiny_cnn)
    rounded = load(path)
    attacked = targeted_attack(rounded, x, y, targets, CONFIG)
    assert attacked.vanished_fraction > 0.9
    np.testing.assert_array_equal(attacked.adversarial, x)  # nothing could move


def test_fixed_batch_network_attack_equals_dynamic(tiny_cnn, net, eval_set, tmp_path: Path):
    x, y, targets = eval_set  # 300 images = 9 * 32 + 12: the last chunk is padded
    path = export_module(tmp_path / "m", lambda m, images: m(images), model=tiny_cnn, shape=(32, 28, 28, 1))
    fixed = load(path)
    config = AttackConfig(steps=10, batch_size=100)  # 96-image chunks: 3 calls of 32 each
    fixed_result = targeted_attack(fixed, x, y, targets, config)
    dynamic_result = targeted_attack(net, x, y, targets, config)
    # Batch shapes differ, so float rounding may flip the sign of a near-zero gradient
    # component; the images and the verdicts must still agree.
    assert np.mean(fixed_result.adversarial == dynamic_result.adversarial) > 0.999
    assert np.mean(fixed_result.predictions == dynamic_result.predictions) > 0.99


def test_noisy_network_uses_expectation_over_its_noise(tiny_cnn, eval_set, tmp_path):
    x, y, targets = eval_set
    path = export_module(
        tmp_path / "m", lambda m, images: m(images + tf.random.normal(tf.shape(images), stddev=0.05)), model=tiny_cnn
    )
    noisy = load(path)
    assert not noisy.info.deterministic
    attacked = targeted_attack(noisy, x[:100], y[:100], targets[:100], AttackConfig(eot_samples=3))
    assert attacked.whitebox_accuracy < 0.3
    assert ("attack", 40, 3, None, "while", False) in noisy.function_cache


def test_probability_network_is_attacked_through_log_probabilities(tiny_cnn, eval_set, tmp_path):
    x, y, targets = eval_set
    path = export_module(tmp_path / "m", lambda m, images: tf.nn.softmax(m(images)), model=tiny_cnn)
    probs = load(path)
    assert probs.info.outputs_probabilities
    attacked = targeted_attack(probs, x[:100], y[:100], targets[:100], CONFIG)
    assert attacked.success_rate > 0.7 and attacked.vanished_fraction < 0.1
