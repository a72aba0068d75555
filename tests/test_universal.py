"""Universal perturbations and the universal dataset (evaluator/engine/universal.py)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.engine.universal import UniversalConfig, universal_dataset, universal_perturbations
from tests.test_network import export_module, load

CONFIG = UniversalConfig(count=6, xi=0.3, epochs=5, batch_size=100, subset=500)


@pytest.fixture(scope="module")
def net(tiny_cnn_dir):
    return load(tiny_cnn_dir)


@pytest.fixture(scope="module")
def perturbations(net, mnist_small):
    x_train, y_train, _, _ = mnist_small
    return universal_perturbations(net, x_train, y_train, CONFIG, seed=0)


def test_perturbations_are_bounded_and_distinct(perturbations):
    assert perturbations.shape == (6, 28, 28, 1) and perturbations.dtype == np.float32
    assert np.abs(perturbations).max() <= CONFIG.xi + 1e-6
    flat = perturbations.reshape(6, -1)
    assert all(not np.array_equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))


def test_universal_beats_random_sign_noise_of_the_same_norm(net, mnist_small, perturbations):
    _, _, x_eval, y_eval = mnist_small
    signs = np.sign(np.random.default_rng(0).standard_normal(perturbations.shape)).astype(np.float32)
    noise = CONFIG.xi * signs
    clean = np.mean(net.predict(x_eval) == y_eval)
    noisy = np.mean(net.predict(universal_dataset(x_eval, noise)) == y_eval)
    universal = np.mean(net.predict(universal_dataset(x_eval, perturbations)) == y_eval)
    assert universal < noisy - 0.2
    assert universal < clean - 0.3


def test_reproducible_from_seed_and_reports_progress(net, mnist_small):
    x_train, y_train, _, _ = mnist_small
    config = UniversalConfig(count=2, epochs=2, subset=200)
    seen: list[float] = []
    first = universal_perturbations(net, x_train, y_train, config, seed=3, progress=seen.append)
    second = universal_perturbations(net, x_train, y_train, config, seed=3)
    np.testing.assert_array_equal(first, second)
    assert seen == [0.25, 0.5, 0.75, 1.0]
    assert not np.array_equal(first, universal_perturbations(net, x_train, y_train, config, seed=4))


def test_fixed_batch_network_gets_padded_minibatches(tiny_cnn, mnist_small, tmp_path):
    x_train, y_train, _, _ = mnist_small
    path = export_module(tmp_path / "m", lambda m, images: m(images), model=tiny_cnn, shape=(32, 28, 28, 1))
    config = UniversalConfig(count=1, epochs=1, subset=150, batch_size=100)  # 96-image batches, last one padded
    result = universal_perturbations(load(path), x_train, y_train, config)
    assert result.shape == (1, 28, 28, 1) and np.abs(result).max() > 0


def test_universal_dataset_uses_i_mod_k_and_clips():
    x = np.full((7, 2, 2, 1), 0.5, np.float32)
    perturbations = np.stack([np.full((2, 2, 1), value, np.float32) for value in (0.1, -0.2, 0.7)])
    out = universal_dataset(x, perturbations)
    assert out.dtype == np.float32 and out.shape == x.shape
    expected = [0.6, 0.3, 1.0, 0.6, 0.3, 1.0, 0.6]  # image i gets i mod 3; 0.5 + 0.7 clips to 1
    np.testing.assert_allclose(out[:, 0, 0, 0], expected, atol=1e-6)
    assert universal_dataset(np.zeros((1, 2, 2, 1), np.float32), -perturbations).min() == 0.0


def test_deployment_seeds_are_63_bit_and_reproducible(net, mnist_small):
    """Deployments pass HMAC-derived seeds (evaluator.services.secret): up to 2**63 - 1."""
    x_train, y_train, _, _ = mnist_small
    config = UniversalConfig(count=1, epochs=1, subset=100)
    big = 2**63 - 1
    first = universal_perturbations(net, x_train, y_train, config, seed=big)
    np.testing.assert_array_equal(first, universal_perturbations(net, x_train, y_train, config, seed=big))
    assert not np.array_equal(first, universal_perturbations(net, x_train, y_train, config, seed=big - 1))


def test_side_by_side_fits_do_not_touch_each_other(net, mnist_small):
    # The K perturbations share one compiled step; perturbation 0 of a set of three must
    # be what it is when fitted alone (its own subset, order and gradient).
    x_train, y_train, _, _ = mnist_small
    three = universal_perturbations(net, x_train, y_train, UniversalConfig(count=3, epochs=2, subset=200), seed=5)
    alone = universal_perturbations(net, x_train, y_train, UniversalConfig(count=1, epochs=2, subset=200), seed=5)
    np.testing.assert_allclose(three[0], alone[0], atol=1e-6)
