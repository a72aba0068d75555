"""The untargeted audit attack (evaluator/engine/audit.py): hand-checkable models, the
worst case over restarts and ε, expectation over noise, and ART's PGD on the same images.

Hand-checkable: a model that ignores its input keeps exactly its accuracy at every ε;
a linear model's worst case in the ε-box is known in closed form (push every pixel
against the sign of its weight, clipped to [0, 1]) and the audit must find exactly it.
Independent: ART's ProjectedGradientDescent on the tiny CNN leaves at least as many
images right as the audit (minus a small tolerance).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from evaluator.engine.audit import AuditConfig, audit, curve_accuracies
from evaluator.engine.metrics import wilson_interval
from tests.test_network import export_module, load

FAST = AuditConfig(epsilon=0.3, steps=20, restarts=2, curve_steps=10, batch_size=128)


@pytest.fixture(scope="module")
def net(tiny_cnn_dir):
    return load(tiny_cnn_dir)


@pytest.fixture(scope="module")
def images(mnist_small):
    _, _, x_eval, y_eval = mnist_small
    return x_eval[:120], y_eval[:120]


@pytest.fixture(scope="module")
def result(net, images):
    x, y = images
    return audit(net, x, y, FAST)


def test_the_audit_breaks_the_tiny_cnn_and_its_curve_falls_with_epsilon(net, images, result) -> None:
    x, y = images
    assert np.mean(net.predict(x) == y) > 0.8
    assert result.accuracy < 0.05
    epsilons = [e for e, _ in curve_accuracies(result.curve)]
    assert epsilons == pytest.approx([0.05, 0.1, 0.2, 0.3])
    accuracies = [a for _, a in curve_accuracies(result.curve)]
    assert accuracies == sorted(accuracies, reverse=True)  # monotone by construction
    assert accuracies[0] > accuracies[-1]
    assert result.curve[-1]["steps"] == FAST.steps and result.curve[-1]["restarts"] == FAST.restarts


def test_predictions_are_the_worst_case_found(net, images, result) -> None:
    x, y = images
    # Right exactly where the stored prediction is the label; a wrong label where fooled.
    np.testing.assert_array_equal(result.predictions == y, result.correct)
    # Images wrong on the clean image are wrong at every epsilon.
    clean_wrong = net.predict(x) != y
    assert not result.correct[clean_wrong].any()


def test_a_deterministic_network_gets_the_same_audit_twice(net, images, result) -> None:
    x, y = images
    again = audit(net, x, y, FAST)
    np.testing.assert_array_equal(again.predictions, result.predictions)
    assert again.curve == result.curve


def test_fooled_images_stop_early(result, images) -> None:
    x, _ = images
    budget = sum(r * s for _, s, r in FAST.points()) * len(x)
    # An undefended CNN falls within a few steps: far less than the whole budget runs.
    assert 0 < result.gradient_steps < budget / 2


def test_taking_fooled_images_out_between_blocks_changes_no_answer(net, images, result) -> None:
    # One block per run (nothing taken out) against a block per step (taken out at once):
    # a fooled image of a deterministic network stops moving, so its answer is final.
    x, y = images
    whole = audit(net, x, y, dataclasses.replace(FAST, block_steps=FAST.steps))
    single = audit(net, x, y, dataclasses.replace(FAST, block_steps=1))
    np.testing.assert_array_equal(whole.predictions, single.predictions)
    assert whole.curve == single.curve == result.curve
    assert single.gradient_steps < whole.gradient_steps


def _constant_model(tmp_path, cls: int):
    # Depends on x only through 0 * x: a zero gradient, the same answer everywhere.
    return load(export_module(
        tmp_path / "const", lambda m, x: tf.one_hot(tf.fill(tf.shape(x)[:1], cls), 10) * 5.0
        + 0.0 * tf.reduce_sum(x, axis=[1, 2, 3])[:, None],
    ))


def test_a_model_that_ignores_its_input_keeps_its_accuracy(tmp_path, images) -> None:
    x, y = images
    net = _constant_model(tmp_path, 3)
    result = audit(net, x, y, FAST)
    expected = int(np.sum(y == 3))
    assert [p["correct"] for p in result.curve] == [expected] * 4
    np.testing.assert_array_equal(result.correct, y == 3)
    # Every one of its images right on the clean pass is attacked at every point: no early stop.
    assert result.gradient_steps == sum(r * s for _, s, r in FAST.points()) * expected


def _linear(tmp_path, rng: np.random.Generator):
    """Two live classes: logits (f/2, -f/2, -50, ...) with f(x) = w.x + b, w sparse."""
    w = np.zeros(28 * 28, np.float32)
    live = rng.choice(w.size, 16, replace=False)
    w[live] = rng.normal(0.0, 1.0, 16).astype(np.float32)
    b = np.float32(-0.5 * w.sum())  # centre f on images of mid-grey noise
    wt = tf.constant(w)

    def body(_m, x):
        f = tf.linalg.matvec(tf.reshape(x, [-1, 28 * 28]), wt) + b
        dead = tf.fill(tf.stack([tf.shape(x)[0], 8]), -50.0)
        return tf.concat([f[:, None] / 2, -f[:, None] / 2, dead], axis=1)

    return load(export_module(tmp_path / "linear", body)), w, b


def _closed_form_robust(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, eps: float) -> np.ndarray:
    """Right at every point of the eps-box iff the worst corner is still right: label 0
    needs min f > 0 (each pixel pushed against sign(w)), label 1 needs max f < 0."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    down = np.clip(flat - eps * np.sign(w), 0.0, 1.0) @ w + b
    up = np.clip(flat + eps * np.sign(w), 0.0, 1.0) @ w + b
    return np.where(y == 0, down > 0, up < 0)


def test_a_linear_model_loses_exactly_the_images_the_closed_form_says(tmp_path) -> None:
    rng = np.random.default_rng(3)
    net, w, b = _linear(tmp_path, rng)
    x = rng.random((300, 28, 28, 1), dtype=np.float32)
    f = x.reshape(300, -1) @ w + b
    keep = np.abs(f) > 1e-3  # no ties on the decision boundary
    x = x[keep]
    y = np.where(f[keep] > 0, 0, 1).astype(np.int64)
    config = AuditConfig(epsilon=0.2, steps=20, restarts=1, curve_steps=10)
    result = audit(net, x, y, config)
    for point in result.curve:
        expected = _closed_form_robust(x, y, w, b, point["epsilon"])
        assert point["correct"] == int(expected.sum()), point
    np.testing.assert_array_equal(result.correct, _closed_form_robust(x, y, w, b, 0.2))
    # The example is not trivial: some images survive the full epsilon, some do not.
    assert 0 < result.correct.sum() < len(y)


def test_a_noisy_network_is_audited_with_expectation_over_its_noise(tiny_cnn, images, tmp_path) -> None:
    x, y = images
    noisy = load(export_module(
        tmp_path / "noisy", lambda m, v: m(v + tf.random.normal(tf.shape(v), stddev=0.05)), model=tiny_cnn
    ))
    assert not noisy.info.deterministic
    config = AuditConfig(epsilon=0.3, steps=10, restarts=1, curve_fractions=(1.0,), eot_samples=3, judge_samples=4)
    result = audit(noisy, x[:60], y[:60], config)
    assert result.eot_samples == 3
    assert ("audit", 3, None) in noisy.function_cache
    assert result.accuracy < 0.2


def test_a_fixed_batch_network_is_audited_in_padded_chunks(tiny_cnn, images, tmp_path) -> None:
    x, y = images  # 120 images in chunks of 32: the last one padded
    fixed = load(export_module(tmp_path / "fixed", lambda m, v: m(v), model=tiny_cnn, shape=(32, 28, 28, 1)))
    config = AuditConfig(epsilon=0.3, steps=10, restarts=1, curve_fractions=(1.0,), batch_size=64)
    result = audit(fixed, x, y, config)
    assert len(result.predictions) == len(y) and result.accuracy < 0.1


def test_progress_runs_to_one_in_order(net, images) -> None:
    x, y = images
    seen: list[float] = []
    audit(net, x[:40], y[:40], FAST, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_no_higher_than_art_pgd_on_the_same_images(tiny_cnn, net, mnist_small) -> None:
    """ART's untargeted PGD (random init, same eps, step and steps) on the tiny CNN: our
    audit must leave no more images right than ART does, up to sampling luck of the
    random starts (2 points)."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    _, _, x_eval, y_eval = mnist_small
    x, y = x_eval[:200], y_eval[:200]
    eps, steps, restarts = 0.1, 20, 2
    classifier = TensorFlowV2Classifier(
        model=tiny_cnn, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pgd = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps, targeted=False,
        num_random_init=restarts, batch_size=100, verbose=False,
    )
    art_adv = pgd.generate(x=x, y=y)
    art_accuracy = float(np.mean(classifier.predict(art_adv).argmax(axis=1) == y))
    ours = audit(net, x, y, AuditConfig(epsilon=eps, steps=steps, restarts=restarts, curve_fractions=(1.0,)))
    print(f"ART PGD {art_accuracy:.3f}, audit {ours.accuracy:.3f} (eps {eps}, {steps} steps x {restarts})")
    assert 0.05 < art_accuracy < 0.95  # a comparison with room on both sides
    assert ours.accuracy <= art_accuracy + 0.02


# --------------------------------------------------------------------------- stored, ranked, shown


def _audited_suite(references: int = 3, uploads: int = 1, seed: int = 0):
    """The fake suite with an audit stored for every network, the way the pipeline does."""
    from tests.fakes import fake_suite

    suite = fake_suite(references=references, uploads=uploads)
    rng = np.random.default_rng(seed)
    for net in [*suite.references, *suite.uploads]:
        store_fake_audit(net, suite.labels, accuracy=0.6 * net.params["strength"], rng=rng)
    from evaluator.services.ranking import benchmark_rank

    benchmark_rank(benchmark=suite.benchmark)
    return suite


def store_fake_audit(net, labels: np.ndarray, *, accuracy: float, rng: np.random.Generator,
                     epsilon: float = 0.3) -> None:
    """An audit of `accuracy` at full epsilon, stored through results.audit_store."""
    from evaluator.services import results, storage

    right = rng.random(len(labels)) < accuracy
    preds = np.where(right, labels, (labels + 1) % 10)
    path = storage.network_dir(net.pk) / "audit.npz"
    np.savez(path, predictions=preds.astype(np.uint8))
    n = len(labels)
    curve = [{"epsilon": epsilon * f, "correct": int(min(n, right.sum() + (n - right.sum()) * (1 - f))),
              "total": n, "steps": 10, "restarts": 1} for f in (1 / 6, 1 / 3, 2 / 3)]
    curve.append({"epsilon": epsilon, "correct": int(right.sum()), "total": n, "steps": 50, "restarts": 2})
    results.audit_store(net, {"curve": curve, "epsilon": epsilon, "steps": 50, "restarts": 2, "eot_samples": 1,
                              "seconds": 1.0}, path)


def _independent_robust(net, labels: np.ndarray) -> np.ndarray:
    """Right on the clean, universal, own, audit and every other network's set: read
    straight from the rows, not through results.robust_sets."""
    from evaluator.models import AdversarialDataset, AuditResult, Evaluation

    sets = [AdversarialDataset.objects.get(network=net).prediction_array() == labels,
            AuditResult.objects.get(network=net).prediction_array() == labels]
    sets += [e.prediction_array() == labels for e in Evaluation.objects.filter(network=net)]
    return np.logical_and.reduce(sets)


@pytest.mark.django_db
def test_robust_accuracy_is_the_worst_case_of_every_stored_set() -> None:
    from evaluator.engine.metrics import accuracy_from_correct
    from leaderboard.models import Network

    suite = _audited_suite()
    for net in Network.objects.filter(benchmark=suite.benchmark):
        expected = accuracy_from_correct(_independent_robust(net, suite.labels))
        assert (net.robust_accuracy, net.robust_low, net.robust_high) == pytest.approx(
            (expected.value, expected.low, expected.high))
        assert net.robust_accuracy <= min(net.whitebox_accuracy, net.clean_accuracy, net.universal_accuracy,
                                          net.audit.accuracy)
        assert [p["epsilon"] for p in net.audit_curve] == pytest.approx([0.05, 0.1, 0.2, 0.3])
        assert net.audit_curve[-1]["accuracy"] == pytest.approx(net.audit.accuracy)


@pytest.mark.django_db
def test_a_new_network_adds_a_set_to_everyones_worst_case() -> None:
    from evaluator.services.ranking import benchmark_rank
    from leaderboard.models import Network
    from tests.fakes import fake_network

    suite = _audited_suite(references=3, uploads=0)
    # This suite's networks only (the session's mini benchmark may be in the database).
    before = dict(Network.objects.filter(benchmark=suite.benchmark).values_list("pk", "robust_accuracy"))
    newcomer = fake_network(suite.benchmark, suite.labels, name="newcomer", strength=0.9,
                            peers=suite.references, seed=7)
    store_fake_audit(newcomer, suite.labels, accuracy=0.5, rng=np.random.default_rng(1))
    benchmark_rank(benchmark=suite.benchmark)
    for pk, value in Network.objects.filter(pk__in=before).values_list("pk", "robust_accuracy"):
        net = Network.objects.get(pk=pk)
        assert value == pytest.approx(_independent_robust(net, suite.labels).mean())
        assert value <= before[pk]
    assert any(v < before[pk] for pk, v in Network.objects.filter(pk__in=before).values_list("pk", "robust_accuracy"))


@pytest.mark.django_db
def test_without_an_audit_there_is_no_robust_accuracy() -> None:
    from tests.fakes import fake_suite

    suite = fake_suite(references=2)
    for net in suite.references:
        net.refresh_from_db()
        assert net.robust_accuracy is None and net.audit_curve == []


@pytest.mark.django_db
def test_a_stored_audit_is_kept_once() -> None:
    from evaluator.models import AuditResult
    from tests.fakes import fake_suite

    suite = fake_suite(references=1)
    net = suite.references[0]
    for seed in (0, 1):  # a redelivered task stores again: the first one stands
        store_fake_audit(net, suite.labels, accuracy=0.3, rng=np.random.default_rng(seed))
    stored = AuditResult.objects.get(network=net)
    assert stored.correct == int((stored.prediction_array() == suite.labels).sum())
    assert (stored.low, stored.high) == pytest.approx(wilson_interval(stored.correct, stored.total))


@pytest.mark.django_db
def test_the_board_sorts_by_level_then_robust_accuracy_then_score(client) -> None:
    from django.contrib.auth.models import AnonymousUser

    from leaderboard import filters
    from leaderboard.models import Network

    suite = _audited_suite(references=2, uploads=3)
    a, b, c = suite.uploads
    # Same level; b has the higher robust accuracy but the lower score; c has none yet.
    Network.objects.filter(pk=a.pk).update(level=1, robust_accuracy=0.2, score=0.9, status="ranked")
    Network.objects.filter(pk=b.pk).update(level=1, robust_accuracy=0.4, score=0.1, status="ranked")
    Network.objects.filter(pk=c.pk).update(level=1, robust_accuracy=None, score=0.95, status="ranked")
    order = [n.pk for n in filters.leaderboard_networks(user=AnonymousUser(), benchmark=suite.benchmark)
             if n.pk in (a.pk, b.pk, c.pk)]
    assert order == [b.pk, a.pk, c.pk]
    page = filters.board_page(user=AnonymousUser(), benchmark=suite.benchmark, filters=filters.BoardFilters(),
                              page=None, per_page=100)
    assert [r["network"].pk for r in page.rows if r["network"].pk in (a.pk, b.pk, c.pk)] == order
    rows = client.get("/api/leaderboard").json()["networks"]
    assert [r["id"] for r in rows if r["id"] in (a.pk, b.pk, c.pk)] == order
    robust = next(r for r in rows if r["id"] == b.pk)["robust_accuracy"]
    assert set(robust) == {"value", "low", "high"} and robust["value"] == pytest.approx(0.4)
    # Shaped like the other accuracies, in the list and in the detail.
    detail = client.get(f"/api/networks/{suite.references[0].pk}").json()
    ref = Network.objects.get(pk=suite.references[0].pk)
    assert detail["robust_accuracy"] == {"value": ref.robust_accuracy, "low": ref.robust_low, "high": ref.robust_high}
    assert set(detail["robust_accuracy"]) == set(detail["clean_accuracy"])
    assert [p["epsilon"] for p in detail["audit_curve"]] == pytest.approx([0.05, 0.1, 0.2, 0.3])
    assert {"correct", "total", "accuracy", "low", "high", "steps", "restarts"} <= set(detail["audit_curve"][0])


@pytest.mark.django_db
def test_pages_show_robust_accuracy_the_curve_and_why_the_targeted_figure_is_higher(client) -> None:
    from leaderboard.models import Network

    suite = _audited_suite(references=2, uploads=0)
    html = client.get("/").content.decode()
    assert ">Robust<" in html
    ref = Network.objects.get(pk=suite.references[1].pk)
    page = client.get(f"/networks/{ref.pk}/").content.decode()
    assert "Robust accuracy" in page and f"{ref.robust_low * 100:.1f}–{ref.robust_high * 100:.1f}" in page
    assert 'id="audit"' in page and "50 × 2" in page and "0.050" in page
    # Its audit (0.6 x strength) is below its targeted white-box figure (0.8 x strength).
    full = ref.audit_curve[-1]["accuracy"]
    assert full < ref.whitebox_accuracy
    sentence = (f"The targeted attack leaves {ref.whitebox_accuracy * 100:.1f}%, an untargeted audit leaves "
                f"{full * 100:.1f}%: the lower figure is the one to trust.")
    assert sentence in page
    # A stochastic network (the noise reference) names its noise averaging.
    Network.objects.filter(pk=ref.pk).update(info={**ref.info, "deterministic": False})
    page = client.get(f"/networks/{ref.pk}/").content.decode()
    assert "The targeted attack (with noise averaging) leaves" in page
