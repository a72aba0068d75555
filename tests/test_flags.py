"""Flags that hold (evaluator/engine/flags.py): each rule on hand-built evidence, then
each flag fired by a tiny model built to trigger it, through the same engine code the
pipeline runs (the validation's checks, the targeted attack), and never by a clean CNN;
then what the services store and the pages, API and badge say."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.engine import flags
from evaluator.engine.flags import Evidence
from evaluator.engine.metrics import accuracy_from_correct, accuracy_from_counts


def acc(correct: int, total: int = 2000):
    return accuracy_from_counts(correct, total)


def names(evidence: Evidence) -> list[str]:
    return [f.name for f in flags.decide(evidence)]


# --------------------------------------------------------------------------- the rules


def test_a_transfer_set_beyond_the_intervals_is_gradient_masking() -> None:
    found = flags.decide(Evidence(num_classes=10, whitebox=acc(870), transfers={"control": acc(200)}))
    assert [f.name for f in found] == [flags.GRADIENT_MASKING]
    assert "control" in found[0].note and "43.5%" in found[0].note and "10.0%" in found[0].note
    # Overlapping intervals: sampling noise, no flag.
    assert names(Evidence(num_classes=10, whitebox=acc(870), transfers={"control": acc(840)})) == []
    # A transfer set the network does better on than on its own attack: as it should be.
    assert names(Evidence(num_classes=10, whitebox=acc(100), transfers={"control": acc(900)})) == []


def test_the_audit_flags_a_targeted_figure_it_beats_by_far() -> None:
    # The noise reference: 52% under the noise-averaged targeted attack, 2% under the audit.
    found = flags.decide(Evidence(num_classes=10, whitebox=acc(1040), audit=acc(40)))
    assert [f.name for f in found] == [flags.GRADIENT_MASKING] and "audit" in found[0].note
    # An undefended CNN: a random-target attack leaves 1.5%, the untargeted one 0%. The
    # intervals separate, but a few points is what untargeted costs an honest network.
    assert names(Evidence(num_classes=10, whitebox=acc(30), audit=acc(0))) == []
    assert names(Evidence(num_classes=10, whitebox=acc(1800), audit=acc(1700))) == []
    # The adversarially trained reference (scale 0.4, measured): 82.6% -> 58.7%, an
    # honest gap between a random-target attack and an untargeted one.
    assert names(Evidence(num_classes=10, whitebox=acc(1652), audit=acc(1174))) == []


def test_vanished_gradients_are_gradient_masking() -> None:
    assert names(Evidence(num_classes=10, whitebox=acc(1900), vanished_fraction=0.9)) == [flags.GRADIENT_MASKING]
    assert names(Evidence(num_classes=10, whitebox=acc(1900), vanished_fraction=0.1)) == []


def test_non_determinism_from_the_full_passes_or_the_probe() -> None:
    found = flags.decide(Evidence(num_classes=10, disagreements=7, compared=2000))
    assert [f.name for f in found] == [flags.NONDETERMINISTIC] and "7 of 2000" in found[0].note
    assert names(Evidence(num_classes=10, probe_deterministic=False)) == [flags.NONDETERMINISTIC]
    assert names(Evidence(num_classes=10, disagreements=0, compared=2000)) == []


def test_memorisation_needs_five_points_and_the_intervals() -> None:
    found = flags.decide(Evidence(num_classes=10, noise_clean=acc(2000), noise_noisy=acc(210)))
    assert [f.name for f in found] == [flags.MEMORISATION] and "1/255" in found[0].note
    # A real classifier loses a fraction of a point to one pixel step.
    assert names(Evidence(num_classes=10, noise_clean=acc(1950), noise_noisy=acc(1944))) == []
    # 6 points on 100 images is within the intervals: no flag on so little evidence.
    assert names(Evidence(num_classes=10, noise_clean=acc(90, 100), noise_noisy=acc(84, 100))) == []


def test_the_kept_flags() -> None:
    assert names(Evidence(num_classes=10, outputs_probabilities=True)) == [flags.PROBABILITIES]
    assert names(Evidence(num_classes=10, clean=acc(300))) == [flags.LOW_ACCURACY]
    assert names(Evidence(num_classes=10, clean=acc(500))) == []
    assert names(Evidence(num_classes=10, failures=2)) == [flags.FAILED_LATER]


def test_disagreements_ignore_rounding_but_not_real_flips() -> None:
    rng = np.random.default_rng(0)
    first = np.log(rng.dirichlet(np.ones(10), 500))
    jitter = first + rng.normal(0, 1e-6, first.shape)
    assert flags.prediction_disagreements(first, jitter) == 0
    flipped = first.copy()
    flipped[:5] = flipped[:5, ::-1]
    assert flags.prediction_disagreements(first, flipped) == 5


def test_the_noise_is_one_pixel_step_clipped_and_fresh() -> None:
    x = np.random.default_rng(0).random((20, 8, 8, 1), dtype=np.float32)
    x[0] = 0.0
    a, b = flags.imperceptible_noise(x), flags.imperceptible_noise(x)
    assert np.abs(a - x).max() <= 1 / 255 + 1e-7 and a.min() >= 0.0 and a.max() <= 1.0
    assert not np.array_equal(a, b)  # drawn fresh: nothing to train against
    assert (a != x).mean() > 0.9


# --------------------------------------------------------------------------- tiny models


tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def ds(mnist_small):
    from evaluator.engine.datasets import Dataset

    x_train, y_train, x_eval, y_eval = mnist_small
    targets = (y_eval + 1 + np.random.default_rng(1).integers(0, 9, len(y_eval))) % 10
    return Dataset(name="t", x_train=x_train, y_train=y_train, x_eval=x_eval, y_eval=y_eval,
                   targets=targets, class_names=tuple(map(str, range(10))), shape=(28, 28, 1))


def _checks(net, ds) -> tuple[object, dict]:
    from evaluator.engine.jobs import _checks

    return _checks(net, ds, net.predict_log_probs(ds.x_eval, batch_size=1000))


def _check_evidence(net, checks: dict) -> Evidence:
    n = checks["compared"]
    return Evidence(
        num_classes=10, probe_deterministic=checks["probe_deterministic"], disagreements=checks["disagreements"],
        compared=n, noise_clean=acc(checks["noise_clean_correct"], n), noise_noisy=acc(checks["noise_noisy_correct"], n),
    )


@pytest.fixture(scope="module")
def clean(tiny_cnn_dir):
    from tests.test_network import load

    return load(tiny_cnn_dir)


@pytest.fixture(scope="module")
def clean_attack(clean, ds):
    from evaluator.engine.attacks import AttackConfig, targeted_attack

    n = 150
    return targeted_attack(clean, ds.x_eval[:n], ds.y_eval[:n], ds.targets[:n], AttackConfig())


def test_a_clean_cnn_raises_no_check(clean, ds) -> None:
    net, checks = _checks(clean, ds)
    assert checks["disagreements"] == 0 and net.info.deterministic
    assert abs(checks["noise_clean_correct"] - checks["noise_noisy_correct"]) <= 3
    assert names(_check_evidence(net, checks)) == []


def _lookup_table(tmp_path, tiny_cnn, ds):
    """Right only on the exact eval pixels: a random projection of each image is the key
    (exact match up to float rounding), the label the answer; anything else gets zeros."""
    from tests.test_network import export_module

    rng = np.random.default_rng(0)
    projection = tf.constant(rng.normal(0, 1, (28 * 28, 8)).astype(np.float32))
    keys = tf.matmul(tf.constant(ds.x_eval.reshape(len(ds.x_eval), -1)), projection)
    labels = tf.constant(ds.y_eval.astype(np.int32))

    def body(_m, x):
        proj = tf.matmul(tf.reshape(x, [-1, 28 * 28]), projection)
        distance = tf.reduce_max(tf.abs(proj[:, None, :] - keys[None]), axis=-1)
        hit = tf.reduce_min(distance, axis=1) < 1e-3
        answer = tf.one_hot(tf.gather(labels, tf.argmin(distance, axis=1)), 10) * 10.0
        return tf.where(hit[:, None], answer, tf.zeros_like(answer))

    from tests.test_network import load

    return load(export_module(tmp_path / "lookup", body, model=tiny_cnn), probe=ds.x_eval[:64])


def test_a_lookup_table_is_flagged_for_memorisation(tmp_path, tiny_cnn, ds) -> None:
    net = _lookup_table(tmp_path, tiny_cnn, ds)
    assert np.mean(net.predict(ds.x_eval) == ds.y_eval) == 1.0
    net, checks = _checks(net, ds)
    assert checks["noise_noisy_correct"] < 0.3 * checks["compared"]
    assert flags.MEMORISATION in names(_check_evidence(net, checks))


def test_a_gradient_decoy_is_flagged_by_a_transfer_set(tmp_path, tiny_cnn, clean, clean_attack, ds) -> None:
    """stop_gradient(classifier) + 1e-3 * decoy: the attack follows the decoy's gradients
    and leaves the classifier untouched, gradients never vanish; the clean CNN's own
    adversarial images, transferred, break it."""
    from evaluator.engine.attacks import AttackConfig, targeted_attack
    from tests.test_network import export_module, load

    decoy = tf.constant(np.random.default_rng(0).normal(0, 1, (28 * 28, 10)).astype(np.float32))
    net = load(export_module(
        tmp_path / "decoy", lambda m, x: tf.stop_gradient(m(x)) + 1e-3 * tf.matmul(tf.reshape(x, [-1, 784]), decoy),
        model=tiny_cnn,
    ))
    n = len(clean_attack.predictions)
    x, y = ds.x_eval[:n], ds.y_eval[:n]
    own = targeted_attack(net, x, y, ds.targets[:n], AttackConfig())
    assert own.vanished_fraction == 0.0 and own.whitebox_accuracy > 0.6
    evidence = Evidence(
        num_classes=10, whitebox=accuracy_from_correct(own.predictions == y),
        vanished_fraction=own.vanished_fraction,
        transfers={"clean cnn": accuracy_from_correct(net.predict(clean_attack.adversarial) == y)},
    )
    assert names(evidence) == [flags.GRADIENT_MASKING]
    # The clean CNN on the decoy's images (a transfer set it resists) is not flagged.
    honest = Evidence(
        num_classes=10, whitebox=accuracy_from_correct(clean_attack.predictions == y),
        transfers={"decoy": accuracy_from_correct(clean.predict(own.adversarial) == y)},
    )
    assert names(honest) == []


def test_a_batch_size_trick_is_caught_by_the_full_passes(tmp_path, tiny_cnn, ds) -> None:
    """Noisy except at the probe's batch of 64: the loader's probe calls it deterministic,
    the two full passes do not, and the network is reopened for noise-averaged attacks."""
    from tests.test_network import export_module, load

    def body(m, x):
        noisy = m(x + tf.random.normal(tf.shape(x), stddev=0.3))
        return tf.cond(tf.equal(tf.shape(x)[0], 64), lambda: m(x), lambda: noisy)

    net = load(export_module(tmp_path / "batch64", body, model=tiny_cnn), probe=ds.x_eval[:64])
    assert net.info.deterministic  # fooled the probe
    net, checks = _checks(net, ds)
    assert checks["probe_deterministic"] and checks["disagreements"] > 0
    assert not net.info.deterministic and not net.frozen
    assert flags.NONDETERMINISTIC in names(_check_evidence(net, checks))


def test_a_deterministic_batch_size_dependence_is_caught(tmp_path, tiny_cnn, ds) -> None:
    """No randomness at all: the answer just depends on how many images come together."""
    from tests.test_network import export_module, load

    net = load(export_module(
        tmp_path / "batchdep", lambda m, x: m(x) + 20.0 * tf.one_hot(tf.shape(x)[0] % 10, 10)[None], model=tiny_cnn,
    ), probe=ds.x_eval[:64])
    net, checks = _checks(net, ds)
    assert checks["disagreements"] > 100
    assert names(_check_evidence(net, checks)) == [flags.NONDETERMINISTIC]


# --------------------------------------------------------------------------- stored and shown


def _memorising(suite) -> object:
    """A reference whose validation's noise check collapsed (what _checks records)."""
    from evaluator.services.results import summary_refresh
    from leaderboard.models import Network

    net = Network.objects.get(pk=suite.references[0].pk)
    net.info = {**net.info, "checks": {"probe_deterministic": True, "disagreements": 0, "compared": 200,
                                       "noise_clean_correct": 200, "noise_noisy_correct": 21}}
    net.save(update_fields=["info"])
    summary_refresh(net)
    net.refresh_from_db()
    return net


@pytest.mark.django_db
def test_the_services_store_each_flag_with_its_sentence() -> None:
    from evaluator.services import results
    from tests.fakes import fake_suite

    suite = fake_suite(references=2)
    net = _memorising(suite)
    assert net.flags == [flags.MEMORISATION]
    assert set(net.flag_notes) == {flags.MEMORISATION} and "1/255" in net.flag_notes[flags.MEMORISATION]
    # One definition: results re-exports the engine's names, it does not keep its own.
    assert results.FLAG_FAILED_LATER is flags.FAILED_LATER and not hasattr(results, "VANISHED_THRESHOLD")
    # The ranking recomputes flags for every network and keeps them.
    from evaluator.services.ranking import benchmark_rank

    benchmark_rank(benchmark=suite.benchmark)
    net.refresh_from_db()
    assert net.flags == [flags.MEMORISATION] and net.level is not None


@pytest.mark.django_db
def test_a_transfer_set_below_the_white_box_interval_flags_after_ranking() -> None:
    """Stored predictions: the network resists its own attack but not a peer's."""
    from evaluator.models import AdversarialDataset, Evaluation
    from evaluator.services import storage
    from evaluator.services.ranking import benchmark_rank
    from leaderboard.models import Network
    from tests.fakes import fake_suite

    suite = fake_suite(references=3)
    net, peer = suite.references[2], suite.references[0]
    AdversarialDataset.objects.filter(network=net).update(
        predictions=storage.pack_predictions(suite.labels), whitebox_correct=len(suite.labels))
    wrong = (suite.labels + 1) % 10
    Evaluation.objects.filter(network=net, source=peer).update(predictions=storage.pack_predictions(wrong),
                                                                correct=0, accuracy=0.0, low=0.0, high=0.02)
    benchmark_rank(benchmark=suite.benchmark)
    net.refresh_from_db()
    assert flags.GRADIENT_MASKING in net.flags
    assert f"the attack of {peer.name}" in net.flag_notes[flags.GRADIENT_MASKING].lower()
    assert net.level is not None  # kept, not trusted


@pytest.mark.django_db
def test_the_badge_and_pages_say_the_level_is_not_trusted_and_why(client) -> None:
    from tests.fakes import fake_suite

    suite = fake_suite(references=2)
    net = _memorising(suite)
    assert net.status == "ranked" and net.level is not None
    svg = client.get(f"/networks/{net.pk}/badge.svg").content.decode()
    assert f"level {net.level} (not trusted)" in svg and "memorisation suspected" in svg
    assert "#8a8a8a" in svg
    other = suite.references[1]
    clean_svg = client.get(f"/networks/{other.pk}/badge.svg").content.decode()
    assert "not trusted" not in clean_svg
    page = client.get(f"/networks/{net.pk}/").content.decode()
    assert "This level is not trusted: 1 flag below says why." in page
    assert net.flag_notes[flags.MEMORISATION] in page.replace("&ndash;", "–")
    board = client.get("/").content.decode()
    assert "level not trusted" in board
    detail = client.get(f"/api/networks/{net.pk}").json()
    assert detail["flags"] == [flags.MEMORISATION] and detail["flag_notes"] == net.flag_notes
