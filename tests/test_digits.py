"""Issue 15, part 3: the second built-in dataset, scikit-learn's 8x8 digits (digits-8x8).

The loader against sklearn.datasets.load_digits itself (shapes, values, split sizes,
determinism); the scaled ε recomputed from the two datasets with an independent
nearest-neighbour search; the scaled recipes against the stated rules and the recorded
fixture; and a tiny-scale build through the real command.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from django.core.management import call_command

from evaluator.engine import builtins
from evaluator.engine.datasets import load_digits8x8


@pytest.fixture(scope="module")
def digits():
    return load_digits8x8()


def _rows(x: np.ndarray) -> list[bytes]:
    return sorted(np.ascontiguousarray(img).tobytes() for img in x)


def test_loader_is_sklearns_digits_split_like_mnist_5k(digits) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert digits.name == "digits-8x8" and digits.shape == (8, 8, 1) and digits.num_classes == 10
    assert digits.x_train.shape == (1078, 8, 8, 1) and digits.x_eval.shape == (719, 8, 8, 1)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    for x in (digits.x_train, digits.x_eval):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x * 16, np.round(x * 16))  # 17 grey levels, k/16 exactly
    # Train and eval together are exactly sklearn's 1,797 images (pixels 0..16 / 16) and labels.
    every = np.concatenate([digits.x_train, digits.x_eval])[..., 0].astype(np.float64) * 16
    assert _rows(every) == _rows(raw.images.astype(np.float64))
    labels = np.concatenate([digits.y_train, digits.y_eval])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(raw.target))
    # Stratified: every class keeps 60% of its images in train (within one image).
    for c, total in enumerate(np.bincount(raw.target)):
        assert abs(int((digits.y_train == c).sum()) - 0.6 * total) <= 1, c
    # Each eval image keeps its own label.
    by_pixels = {img.astype(np.float64).tobytes(): int(t) for img, t in zip(raw.images, raw.target)}
    assert all(by_pixels[(img[..., 0].astype(np.float64) * 16).tobytes()] == y
               for img, y in zip(digits.x_eval, digits.y_eval))
    assert np.all(digits.targets != digits.y_eval)


def test_loader_is_deterministic(digits) -> None:
    again = load_digits8x8()
    for key in ("x_train", "y_train", "x_eval", "y_eval", "targets"):
        np.testing.assert_array_equal(getattr(again, key), getattr(digits, key))


def _contrast_brute(ds) -> float:
    """Σ|Δ|³/Σ|Δ|² to the nearest train image of another class, by a scipy cdist search."""
    from scipy.spatial.distance import cdist

    train = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64)
    values = []
    for start in range(0, len(ds.x_eval), 400):
        x = ds.x_eval[start:start + 400].reshape(-1, train.shape[1]).astype(np.float64)
        d = cdist(x, train)
        d[ds.y_eval[start:start + 400, None] == ds.y_train[None, :]] = np.inf
        delta = np.abs(x - train[d.argmin(axis=1)])
        values += list((delta**3).sum(1) / (delta**2).sum(1))
    return float(np.median(values))


def test_epsilon_is_the_same_share_of_the_pixel_contrast(digits) -> None:
    """digits-8x8's ε = 0.3 × contrast(digits) / contrast(mnist-5k), both measured here."""
    from evaluator.engine.datasets import load_mnist5k

    measured = {builtins.MNIST5K: _contrast_brute(load_mnist5k()), builtins.DIGITS8: _contrast_brute(digits)}
    for name, value in measured.items():
        assert round(value, 3) == builtins.PIXEL_CONTRAST[name], (name, value)
    assert builtins.pixel_contrast(digits) == pytest.approx(measured[builtins.DIGITS8], abs=1e-9)
    expected = round(0.3 * measured[builtins.DIGITS8] / measured[builtins.MNIST5K], 2)
    spec = builtins.BUILTINS[builtins.DIGITS8]
    assert spec.epsilon == expected == 0.21
    assert (spec.step, spec.steps, spec.universal_xi) == (pytest.approx(expected / 30), 40, expected)


def test_recipes_follow_the_stated_scaling_rules() -> None:
    from evaluator.engine.defenses import RECIPES
    from evaluator.engine.defenses.record import fixture_document, fixture_path

    spec = builtins.BUILTINS[builtins.DIGITS8]
    eps = spec.epsilon
    factor = 3000 / 1078
    assert list(builtins.RECIPE_NAMES) == list(RECIPES)
    for name, recipe in RECIPES.items():
        default, scaled = dict(recipe.defaults), recipe.resolve(spec.params_for(name))
        for key, value in default.items():
            if key == "epochs" or key.endswith("_epochs"):
                assert scaled[key] == round(value * factor), (name, key)
            elif key in ("ae_hidden", "ae_code", "latent_dim"):
                assert scaled[key] == 2 ** round(np.log2(value * 8 / 28)), (name, key)
            elif key in ("generator_units", "discriminator_units"):
                assert scaled[key] == [2 ** round(np.log2(v * 8 / 28)) for v in value], (name, key)
            elif key in ("epsilon", "probe_epsilon"):
                assert scaled[key] == eps, (name, key)
            elif key == "sigma_grid":
                assert scaled[key] == pytest.approx([s * eps / 0.3 for s in value], abs=0.005)
            else:
                assert scaled[key] == value, (name, key)  # the classifier and all relative settings kept
    # The recorded fixture is what the code trains with.
    recorded = json.loads(fixture_path(builtins.DIGITS8).read_text())
    assert recorded == json.loads(json.dumps(fixture_document(builtins.DIGITS8)))
    assert recorded["attack"] == {"epsilon": eps, "step": spec.step, "steps": 40, "universal_xi": eps}
    assert recorded["recipes"]["autoencoder"]["params"]["ae_code"] == 16


@pytest.mark.django_db
def test_import_refuses_a_built_in_name(tmp_path) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="built-in benchmark: build it with `python manage.py build_benchmark"):
        call_command("import_benchmark", "digits-8x8", "--npz", str(tmp_path / "x.npz"))


@pytest.mark.django_db
@pytest.mark.slow
def test_tiny_build_of_digits_through_the_command(digits, capsys) -> None:
    from evaluator.engine.datasets import load_dataset
    from evaluator.models import AdversarialDataset
    from evaluator.services import secret, storage
    from leaderboard.models import Benchmark, Network

    started = time.perf_counter()
    call_command("build_benchmark", "digits-8x8", "--recipes", "control,down50", "--scale", "0.05")
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "[  0%] dataset" in out and "training reference down50 (2/2)" in out and "[100%] ready" in out
    bench = Benchmark.objects.get(name="digits-8x8")
    assert bench.state == Benchmark.State.READY and len(bench.ladder) == 2
    assert (bench.height, bench.width, bench.channels, bench.train_size, bench.eval_size) == (8, 8, 1, 1078, 719)
    assert (bench.epsilon, bench.universal_xi, bench.steps) == (0.21, 0.21, 40)
    stored = load_dataset(storage.media_path(bench.data_file))
    np.testing.assert_array_equal(stored.x_eval, digits.x_eval)
    # The deployment's secret targets, not the loader's public ones.
    from evaluator.engine.datasets import draw_targets

    np.testing.assert_array_equal(stored.targets, draw_targets(digits.y_eval, 10,
                                                               secret.benchmark_seed("digits-8x8", "targets")))
    for net in Network.objects.filter(benchmark=bench, is_reference=True):
        assert net.status == Network.Status.RANKED, (net.name, net.status, net.reason)
        # Trained with digits' parameters: 33 epochs at scale 1, so 2 at the tiny scale.
        assert net.params["dataset"] == "digits-8x8" and net.params["epochs"] == round(33 * 0.05)
        assert net.params["input_shape"] == [8, 8, 1]
        adversarial = AdversarialDataset.objects.get(network=net)
        assert adversarial.epsilon == 0.21
        with np.load(storage.media_path(adversarial.file)) as data:
            x_adv = data["adversarial"]
        # The attack stayed inside the scaled budget.
        assert x_adv.shape == stored.x_eval.shape
        assert np.abs(x_adv - stored.x_eval).max() <= 0.21 + 1e-6
    print(f"tiny digits-8x8 build: {seconds:.1f} s")
