"""Issue 15, part 2: how adversarial images sit in image vector space.

Each figure of engine.vectorspace against an independent computation on tiny arrays:
principal components against scikit-learn's PCA, energy shares against a direct
projection onto an orthonormal basis of the top components, nearest-neighbour distances
against brute force, norms and histograms against NumPy one image at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from evaluator.engine import vectorspace as vs


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Low-rank "images" (6×6×1) with structure PCA can find, a train split with labels,
    eval images, and perturbations of several kinds."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(5, 36))
    train = np.clip(0.5 + 0.1 * rng.normal(size=(80, 5)) @ basis + 0.01 * rng.normal(size=(80, 36)), 0, 1)
    evaluation = np.clip(0.5 + 0.1 * rng.normal(size=(30, 5)) @ basis, 0, 1)
    along = 0.05 * rng.normal(size=(30, 5)) @ basis  # in the span of the data's directions
    sign = 0.1 * rng.choice([-1.0, 1.0], size=(30, 36)) * (rng.random((30, 36)) < 0.4)
    return {
        "train": train.reshape(80, 6, 6, 1).astype(np.float32),
        "y_train": np.arange(80) % 4,
        "eval": evaluation.reshape(30, 6, 6, 1).astype(np.float32),
        "y_eval": np.arange(30) % 4,
        "targets": (np.arange(30) + 1) % 4,
        "along": along.reshape(30, 6, 6, 1),
        "sign": sign.reshape(30, 6, 6, 1),
    }


def test_principal_components_match_scikit_learn(data) -> None:
    basis = vs.pca_basis(data["train"], k=12)
    reference = PCA(n_components=12, svd_solver="full").fit(data["train"].reshape(80, -1).astype(np.float64))
    np.testing.assert_allclose(basis.explained, reference.explained_variance_ratio_, rtol=1e-6)
    # Same subspace (signs of components are arbitrary): |cos| of matching components is 1.
    cos = np.abs((basis.components.astype(np.float64) * reference.components_).sum(axis=1))
    np.testing.assert_allclose(cos[:5], 1.0, atol=1e-4)
    np.testing.assert_allclose(basis.mean, reference.mean_, atol=1e-6)


def test_energy_shares_match_a_direct_projection(data) -> None:
    basis = vs.pca_basis(data["train"], k=20)
    ks = vs.ks_for(basis, (3, 10, 20))
    delta = data["sign"]
    shares = vs.energy_shares(delta, basis, ks)
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    for j, k in enumerate(ks):
        q, _ = np.linalg.qr(basis.components[:k].astype(np.float64).T)  # orthonormal basis of the span
        projected = flat @ q @ q.T
        expected = (projected**2).sum(axis=1) / (flat**2).sum(axis=1)
        np.testing.assert_allclose(shares[:, j], expected, rtol=1e-5)
    # A perturbation inside the data's directions is (almost) all in the top 5 components.
    inside = vs.energy_shares(data["along"], basis, [5])
    assert inside.min() > 0.99
    # No perturbation: no share (not 0, not 1).
    assert np.isnan(vs.energy_shares(np.zeros((2, 6, 6, 1)), basis, [5])).all()


def test_noise_of_the_same_norm_spreads_evenly(data) -> None:
    basis = vs.pca_basis(data["train"], k=36)
    delta = np.repeat(data["sign"], 40, axis=0)
    noise = vs.noise_like(delta)
    np.testing.assert_allclose(np.linalg.norm(noise, axis=1),
                               np.linalg.norm(delta.reshape(len(delta), -1), axis=1), rtol=1e-6)
    shares = vs.energy_shares(noise, basis, [9, 18])
    # An isotropic direction puts k/D of its energy in any k-dimensional subspace on average.
    assert np.nanmean(shares[:, 0]) == pytest.approx(9 / 36, abs=0.03)
    assert np.nanmean(shares[:, 1]) == pytest.approx(18 / 36, abs=0.03)


def test_ks_are_capped_at_the_components_there_are() -> None:
    basis = vs.PCABasis(np.zeros(64, np.float32), np.eye(64, dtype=np.float32), np.full(64, 1 / 64))
    assert vs.ks_for(basis) == [10, 50, 64]
    assert vs.ks_for(vs.PCABasis(np.zeros(8), np.eye(8), np.ones(8) / 8)) == [8]


def test_nearest_by_class_matches_brute_force(data) -> None:
    x = data["eval"] + data["sign"].astype(np.float32)
    found = vs.nearest_by_class(x, data["train"], data["y_train"], classes=5, chunk=7)
    flat, train = x.reshape(30, -1).astype(np.float64), data["train"].reshape(80, -1).astype(np.float64)
    for i in range(30):
        for c in range(4):
            brute = min(np.linalg.norm(flat[i] - t) for t, y in zip(train, data["y_train"]) if y == c)
            assert found[i, c] == pytest.approx(brute, rel=1e-4, abs=1e-5)
    assert np.isinf(found[:, 4]).all()  # class 4 has no train image


def test_norms_and_histograms_match_numpy(data) -> None:
    delta = data["sign"]
    norms = vs.perturbation_norms(delta)
    for i, d in enumerate(delta.reshape(30, -1)):
        assert norms["l0"][i] == pytest.approx(np.count_nonzero(d) / d.size)
        assert norms["l2"][i] == pytest.approx(np.sqrt(np.sum(d.astype(np.float64) ** 2)))
        assert norms["linf"][i] == pytest.approx(np.max(np.abs(d)))
    edges = vs.histogram_edges(36, 0.1)
    assert edges["l2"][-1] == pytest.approx(0.1 * 6) and edges["linf"][-1] == pytest.approx(0.1)
    counts = vs.histogram(norms["linf"], edges["linf"])
    assert sum(counts) == 30 and counts[-1] == np.count_nonzero(norms["linf"] >= edges["linf"][-2])
    # A value a rounding error past the last edge still lands in the last bin.
    assert vs.histogram(np.array([0.1 + 1e-7]), edges["linf"])[-1] == 1


def test_summary_of_a_set_is_recomputable_from_its_arrays(data) -> None:
    basis = vs.pca_basis(data["train"], k=20)
    ks = vs.ks_for(basis, (3, 10))
    x_adv = np.clip(data["eval"] + data["sign"], 0, 1).astype(np.float32)
    arrays = vs.analyse_set(data["eval"], x_adv, basis, ks, data["train"], data["y_train"], 4)
    clean = vs.nearest_by_class(data["eval"], data["train"], data["y_train"], 4)
    summary = vs.summarise(arrays, clean, data["y_eval"], data["targets"], ks, vs.histogram_edges(36, 0.1))
    n = np.arange(30)
    d_true, d_target = arrays.distances[n, data["y_eval"]], arrays.distances[n, data["targets"]]
    nb = summary["neighbours"]
    assert nb["true"]["adversarial"]["mean"] == pytest.approx(d_true.mean())
    assert nb["target"]["clean"]["mean"] == pytest.approx(clean[n, data["targets"]].mean())
    assert nb["closer_to_target"]["adversarial"]["mean"] == pytest.approx(np.mean(d_target < d_true))
    assert nb["other_class"]["clean"]["mean"] == pytest.approx(np.mean(clean.argmin(axis=1) != data["y_eval"]))
    half = 1.959963984540054 * d_true.std(ddof=1) / np.sqrt(30)
    assert nb["true"]["adversarial"]["low"] == pytest.approx(d_true.mean() - half)
    assert summary["energy"][0]["k"] == 3
    assert summary["energy"][0]["adversarial"]["mean"] == pytest.approx(np.nanmean(arrays.shares[:, 0]))
    assert summary["norms"]["l0"]["counts"] == np.histogram(arrays.l0, np.linspace(0, 1, 21))[0].tolist()
    np.testing.assert_allclose(arrays.projection, (x_adv.reshape(30, -1) - basis.mean) @ basis.components[:2].T,
                               rtol=1e-5, atol=1e-6)
    untargeted = vs.summarise(arrays, clean, data["y_eval"], None, ks, vs.histogram_edges(36, 0.1))
    assert untargeted["neighbours"]["target"] is None and untargeted["neighbours"]["closer_to_target"] is None
