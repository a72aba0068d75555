"""Issue 15, part 1: can the GAN discriminator detect adversarial images?

The detection figures (engine.detection) against scikit-learn and SciPy on tiny arrays;
the gan-data recipe keeps its discriminator; the analysis job scores real sets with it
and with the Mahalanobis baseline (the AUCs stored match scikit-learn on the stored
per-image scores); the services on the session's mini benchmark: rows for every set,
idempotent, the discriminator kept by a reference build and used, the command's lines.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.metrics import roc_auc_score, roc_curve

from evaluator.engine import detection

# --------------------------------------------------------------------------- the figures


def _scores(seed: int, n: int = 60, shift: float = 0.7, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean, adv = rng.normal(size=n), rng.normal(loc=shift, size=n)
    if ties:  # rounded: many equal scores across and within the two sets
        clean, adv = clean.round(1), adv.round(1)
    return clean, adv


@pytest.mark.parametrize("seed,shift,ties", [(0, 0.7, True), (1, -0.4, True), (2, 2.0, False), (3, 0.0, True)])
def test_auc_matches_scikit_learn(seed: int, shift: float, ties: bool) -> None:
    clean, adv = _scores(seed, shift=shift, ties=ties)
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    assert detection.roc_auc(clean, adv) == pytest.approx(roc_auc_score(y, np.r_[clean, adv]), abs=1e-12)


def test_roc_curve_and_rate_at_five_percent_match_scikit_learn() -> None:
    for seed in range(5):
        clean, adv = _scores(seed, n=80 + seed)
        y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
        fpr, tpr, _ = roc_curve(y, np.r_[clean, adv], drop_intermediate=False)
        ours_fpr, ours_tpr, _ = detection.roc_curve(clean, adv)
        np.testing.assert_allclose(ours_fpr, fpr)
        np.testing.assert_allclose(ours_tpr, tpr)
        rate, threshold = detection.rate_at_false_positives(clean, adv)
        assert rate == pytest.approx(tpr[fpr <= 0.05].max())
        assert np.mean(clean > threshold) <= 0.05


def test_detect_interval_is_a_paired_bootstrap_of_the_auc() -> None:
    """The interval recomputed with scikit-learn over the same resamples of image
    indices (each clean image with its own adversarial version)."""
    clean, adv = _scores(7, n=50)
    found = detection.detect(clean, adv, rounds=200, seed=3)
    rng = np.random.default_rng(3)
    aucs = []
    for _ in range(200):
        i = rng.integers(0, 50, 50)
        aucs.append(roc_auc_score(np.r_[np.zeros(50), np.ones(50)], np.r_[clean[i], adv[i]]))
    assert found.low == pytest.approx(np.percentile(aucs, 2.5))
    assert found.high == pytest.approx(np.percentile(aucs, 97.5))
    assert found.low <= found.auc <= found.high
    assert found.rate_low <= found.rate <= found.rate_high
    assert found.false_positives <= 0.05
    assert found.fpr[0] == 0.0 and found.fpr[-1] == 1.0 and found.tpr[-1] == 1.0
    assert all(a <= b for a, b in zip(found.tpr, found.tpr[1:]))


def test_detect_refuses_scores_that_say_nothing() -> None:
    with pytest.raises(ValueError, match="finite"):
        detection.detect(np.array([0.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least one"):
        detection.detect(np.array([]), np.array([1.0]))


def test_compare_needs_disjoint_intervals() -> None:
    a = {"auc": 0.8, "low": 0.75, "high": 0.85}
    assert detection.compare(a, {"auc": 0.6, "low": 0.55, "high": 0.7}) == "better"
    assert detection.compare(a, {"auc": 0.78, "low": 0.7, "high": 0.8}) == "as well"
    assert detection.compare({"auc": 0.5, "low": 0.45, "high": 0.55}, a) == "worse"


def test_mahalanobis_score_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(120, 4)) + labels[:, None] * np.array([2.0, 0.0, -1.0, 0.5])
    fit = detection.mahalanobis_fit(features, labels, classes=3, ridge=0.0)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(3)])
    within = np.concatenate([features[labels == c] - means[c] for c in range(3)])
    inverse = np.linalg.inv(within.T @ within / len(features))
    queries = rng.normal(size=(10, 4)) * 3
    expected = [min(scipy_mahalanobis(q, means[c], inverse) ** 2 for c in range(3)) for q in queries]
    np.testing.assert_allclose(detection.mahalanobis_score(fit, queries), expected, rtol=1e-8)


def test_mahalanobis_leaves_out_a_class_without_train_images() -> None:
    rng = np.random.default_rng(1)
    fit = detection.mahalanobis_fit(rng.normal(size=(30, 3)), np.zeros(30, int), classes=4)
    assert fit.present.tolist() == [True, False, False, False]
    assert np.isfinite(detection.mahalanobis_score(fit, rng.normal(size=(5, 3)))).all()


# --------------------------------------------------------------------------- the job, with real models


TINY = 0.05


@pytest.fixture(scope="module")
def built(mnist_small, tmp_path_factory: pytest.TempPathFactory):
    """control and gan-data at tiny scale, the control's targeted attack on the eval images,
    and a universal-style set: everything the analysis job reads."""
    pytest.importorskip("tensorflow")
    from evaluator.engine.attacks import AttackConfig, targeted_attack
    from evaluator.engine.datasets import Dataset, draw_targets, save_dataset
    from evaluator.engine.defenses import RECIPES, BuildContext
    from evaluator.engine.network import load_network

    x_train, y_train, x_eval, y_eval = mnist_small
    ds = Dataset("digits", x_train[:300], y_train[:300], x_eval[:120], y_eval[:120],
                 draw_targets(y_eval[:120], 10, 1), tuple(str(i) for i in range(10)), (28, 28, 1))
    root = tmp_path_factory.mktemp("analysis")
    control = RECIPES["control"].build(BuildContext(ds, root / "control", scale=TINY))
    RECIPES["gan-data"].build(BuildContext(ds, root / "gan", scale=TINY))
    net = load_network(root / "control", expected_shape=ds.shape, num_classes=10, probe=ds.x_eval[:64])
    attack = targeted_attack(net, ds.x_eval, ds.y_eval, ds.targets, AttackConfig(epsilon=0.3, step=0.05, steps=10))
    np.savez(root / "adv.npz", adversarial=attack.adversarial, targets=attack.targets)
    rng = np.random.default_rng(0)
    np.savez(root / "universal.npz", perturbations=rng.choice([-0.3, 0.3], size=(6, 28, 28, 1)).astype(np.float32))
    save_dataset(ds, root / "dataset.npz")
    return {"root": root, "ds": ds, "control": {"model_dir": str(root / "control"), "info": net.info.as_dict(),
                                                "params": control.params}}


def test_gan_recipe_keeps_its_discriminator_beside_the_export(built) -> None:
    import keras

    root = built["root"]
    folder = root / "gan-discriminator"
    assert not (root / "gan" / "discriminator.keras").exists(), "the model folder holds only the model"
    model = keras.models.load_model(folder / "discriminator.keras", compile=False, safe_mode=True)
    out = np.asarray(model(built["ds"].x_eval[:4], training=False))
    assert out.shape == (4, 11)  # real/fake logit + 10 class logits


def test_analysis_job_scores_sets_with_both_detectors(built) -> None:
    from evaluator.engine.analysis_jobs import analyse

    root = built["root"]
    value = analyse(dataset=str(root / "dataset.npz"), out_dir=str(root / "out"), budget=0.3,
                    control=built["control"], discriminator=str(root / "gan-discriminator"),
                    sets=[{"key": "net-1", "file": str(root / "adv.npz")},
                          {"key": "universal", "file": str(root / "universal.npz"), "universal": True}])
    assert value["basis"]["features"] == "penultimate"  # the control was rebuilt from its recorded recipe
    assert value["basis"]["detectors"] == ["discriminator", "mahalanobis"]
    basis = np.load(root / "out" / "basis.npz")
    n = len(built["ds"].y_eval)
    for key in ("net-1", "universal"):
        arrays = np.load(root / "out" / f"{key}.npz")
        for name in ("discriminator", "mahalanobis"):
            clean, adv = basis[f"clean_{name}"], arrays[f"score_{name}"]
            stored = value["sets"][key]["detection"][name]
            expected = roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[clean, adv])
            assert stored["auc"] == pytest.approx(expected, abs=1e-12)
    # A second run with the stored basis gives the same figures without refitting.
    again = analyse(dataset=str(root / "dataset.npz"), out_dir=str(root / "out2"), budget=0.3,
                    control=built["control"], discriminator=str(root / "gan-discriminator"),
                    basis=str(root / "out" / "basis.npz"), sets=[{"key": "net-1", "file": str(root / "adv.npz")}])
    assert again["basis"] is None
    assert again["sets"]["net-1"]["detection"] == value["sets"]["net-1"]["detection"]


def test_control_features_follow_the_recorded_backbone(built, tmp_path: Path) -> None:
    """A control built with the MLP backbone (mnist-5k-mlp) is rebuilt as an MLP: its
    penultimate features, whose last layer gives the stored model's outputs."""
    from evaluator.engine.analysis_jobs import control_features
    from evaluator.engine.defenses import RECIPES, BuildContext
    from evaluator.engine.network import load_network

    ds = built["ds"]
    mlp = RECIPES["control"].build(BuildContext(ds, tmp_path / "mlp", scale=TINY, params={"backbone": "mlp"}))
    net = load_network(tmp_path / "mlp", expected_shape=ds.shape, num_classes=10, probe=ds.x_eval[:64])
    extract, kind = control_features(str(tmp_path / "mlp"), net.info.as_dict(), mlp.params, ds)
    assert kind == "penultimate"
    assert extract(ds.x_eval[:5]).shape == (5, mlp.params["dense_units"])


def test_control_features_fall_back_to_outputs_for_another_architecture(built, tiny_cnn_dir) -> None:
    """A control that is not the control recipe's architecture (here the session's tiny
    CNN) cannot give penultimate features: its log-probabilities are used, and said so."""
    from evaluator.engine.analysis_jobs import control_features
    from evaluator.engine.network import load_network

    ds = built["ds"]
    net = load_network(tiny_cnn_dir, expected_shape=ds.shape, num_classes=10, probe=ds.x_eval[:64])
    extract, kind = control_features(str(tiny_cnn_dir), net.info.as_dict(), built["control"]["params"], ds)
    assert kind == "log-probabilities"
    np.testing.assert_allclose(extract(ds.x_eval[:8]), net.predict_log_probs(ds.x_eval[:8]), rtol=1e-5)


# --------------------------------------------------------------------------- the services, on the mini benchmark


@pytest.mark.django_db
def test_build_analyses_every_set_and_a_rerun_does_nothing(mini_benchmark) -> None:
    from evaluator.models import Analysis, Job
    from evaluator.services.analysis import benchmark_analyse
    from leaderboard.models import Network

    refs = Network.objects.filter(benchmark=mini_benchmark, is_reference=True)
    rows = {r.network_id: r for r in Analysis.objects.filter(benchmark=mini_benchmark)}
    assert {r.pk for r in refs} <= set(rows), "the build analysed every reference's set"
    basis = Analysis.objects.get(benchmark=mini_benchmark, kind="basis")
    assert basis.vectorspace["detectors"] == ["mahalanobis"]  # mini has no gan-data reference
    assert Analysis.objects.filter(benchmark=mini_benchmark, kind="universal").exists()
    from evaluator.services import storage

    clean = np.load(storage.media_path(basis.file))["clean_mahalanobis"]
    for ref in refs:
        row = rows[ref.pk]
        adv = np.load(storage.media_path(row.file))["score_mahalanobis"]
        expected = roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv])
        assert row.detection["mahalanobis"]["auc"] == pytest.approx(expected, abs=1e-12)
        assert "discriminator" not in row.detection
    jobs = Job.objects.filter(kind=Job.Kind.ANALYSE).count()
    lines: list[str] = []
    outcome = benchmark_analyse(benchmark=mini_benchmark, report=lines.append)
    assert Job.objects.filter(kind=Job.Kind.ANALYSE).count() == jobs
    sets = Analysis.objects.filter(benchmark=mini_benchmark).exclude(kind="basis").count()
    assert outcome.analysed == 0 and outcome.current == sets == len(refs) + 1 and not outcome.errors
    assert any("--rebuild gan-data" in line for line in lines)


@pytest.mark.django_db
def test_a_rebuilt_gan_keeps_its_discriminator_and_the_analysis_uses_it(mini_benchmark) -> None:
    """reference_build keeps the discriminator beside the model (hashed, not in the
    archive); the next analysis sees new sources, drops the stale rows and scores every
    set with the discriminator too."""
    from django.core.management import call_command

    from evaluator.models import Analysis
    from evaluator.services import storage
    from evaluator.services.analysis import discriminator_of, sources
    from evaluator.services.benchmarks import reference_build

    before = sources(mini_benchmark).fingerprint
    gan = reference_build(benchmark=mini_benchmark, recipe="gan-data", scale=TINY, report=lambda line: None)
    try:
        kept = discriminator_of(gan)
        assert kept is not None and list(kept["files"]) == ["discriminator.keras"]
        folder = storage.media_path(kept["dir"])
        assert folder.parent == storage.network_dir(gan.pk)
        with zipfile.ZipFile(io.BytesIO(storage.media_path(gan.archive).read_bytes())) as zf:
            assert not [n for n in zf.namelist() if "discriminator" in n]
            assert "model/saved_model.pb" in zf.namelist()
        assert sources(mini_benchmark).fingerprint != before
        out = io.StringIO()
        call_command("analyse_benchmark", "mini", stdout=out)
        text = out.getvalue()
        assert "analysis job 1/1: basis + " in text and "discriminator AUC" in text
        basis = Analysis.objects.get(benchmark=mini_benchmark, kind="basis")
        assert basis.vectorspace["detectors"] == ["discriminator", "mahalanobis"]
        clean = np.load(storage.media_path(basis.file))["clean_discriminator"]
        for row in Analysis.objects.filter(benchmark=mini_benchmark).exclude(kind="basis"):
            adv = np.load(storage.media_path(row.file))["score_discriminator"]
            expected = roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv])
            assert row.detection["discriminator"]["auc"] == pytest.approx(expected, abs=1e-12)
    finally:
        storage.remove_tree(storage.network_dir(gan.pk))


@pytest.mark.django_db
def test_network_analyse_reuses_the_stored_row(mini_benchmark) -> None:
    from evaluator.models import Analysis, Job
    from evaluator.services.analysis import network_analyse
    from leaderboard.models import Network

    ref = Network.objects.filter(benchmark=mini_benchmark, is_reference=True).first()
    jobs = Job.objects.filter(kind=Job.Kind.ANALYSE).count()
    assert network_analyse(network=ref) == Analysis.objects.get(network=ref)
    assert Job.objects.filter(kind=Job.Kind.ANALYSE).count() == jobs


def test_analysis_modules_stay_light() -> None:
    """The web process reads rows and arrays only: the engine modules it may import pull in
    neither Django nor TensorFlow."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\nimport evaluator.engine.detection, evaluator.engine.vectorspace, "
            "evaluator.engine.analysis_jobs\nprint(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "tensorflow" not in loaded and "django" not in loaded
