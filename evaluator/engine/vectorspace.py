"""How adversarial images sit in image vector space (issue 15).

For one set of adversarial images x′ of the eval images x (δ = x′ − x, flattened):

- perturbation sizes per image: the share of pixels changed (L0), ‖δ‖₂ and ‖δ‖∞, as
  histograms on edges fixed by the benchmark so sets can be overlaid;
- the share of ‖δ‖² inside the top-k principal components of the train images
  (k = 10, 50, 314, capped at the dimension), against the same share for Gaussian noise
  of the same L2 norm per image. Noise spreads evenly (about k/D); a share far above it
  means the attack moves along the directions the data varies in (PCA keeps it), far
  below means it pushes off the data manifold (PCA removes it);
- a 2-D projection on the first two principal components of clean and adversarial images;
- the distance from each image to the nearest train image of every class, from which the
  distance to its true class and to its attack's target class follow.

NumPy only: no TensorFlow, no Django.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluator.engine.metrics import wilson_interval

KS = (10, 50, 314)
CHANGED = 1e-6  # a pixel counts as changed when it moved by more than this
BINS = {"l0": 20, "l2": 30, "linf": 20}
Z_95 = 1.959963984540054
NOISE_SEED = 0
CHUNK = 512  # images per block of the distance computation


def flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


# --------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class PCABasis:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows, by decreasing variance
    explained: np.ndarray  # (k,) share of the train variance of each component

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])


def pca_basis(x_train: np.ndarray, k: int = max(KS)) -> PCABasis:
    """The top-k principal components of the (flattened) train images."""
    x = flat(x_train).astype(np.float64)
    mean = x.mean(axis=0)
    _u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = s**2
    total = float(variance.sum()) or 1.0
    k = min(k, vt.shape[0])
    return PCABasis(mean=mean.astype(np.float32), components=vt[:k].astype(np.float32),
                    explained=(variance[:k] / total).astype(np.float64))


def ks_for(basis: PCABasis, ks: tuple[int, ...] = KS) -> list[int]:
    """The k values that apply: capped at the number of components (at most D); repeats
    after capping are dropped."""
    out: list[int] = []
    for k in ks:
        k = min(k, len(basis.components))
        if k not in out:
            out.append(k)
    return out


def project(x: np.ndarray, basis: PCABasis, dims: int = 2) -> np.ndarray:
    """Coordinates on the first `dims` principal components (centred on the train mean)."""
    return ((flat(x) - basis.mean) @ basis.components[:dims].T).astype(np.float32)


def energy_shares(delta: np.ndarray, basis: PCABasis, ks: list[int]) -> np.ndarray:
    """(n, len(ks)): ‖V_kᵀ δ‖² / ‖δ‖² per image; NaN where δ = 0 (nothing to share)."""
    d = flat(delta).astype(np.float64)
    coefficients = d @ basis.components[: max(ks)].T.astype(np.float64)
    cumulative = np.cumsum(coefficients**2, axis=1)
    energy = (d**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = cumulative[:, [k - 1 for k in ks]] / energy[:, None]
    shares[energy == 0] = np.nan
    return np.clip(shares, 0.0, 1.0)


def noise_like(delta: np.ndarray, seed: int = NOISE_SEED) -> np.ndarray:
    """Gaussian noise with the L2 norm of each row of δ (flattened)."""
    d = flat(delta).astype(np.float64)
    noise = np.random.default_rng(seed).standard_normal(d.shape)
    scale = np.linalg.norm(d, axis=1) / np.maximum(np.linalg.norm(noise, axis=1), 1e-12)
    return noise * scale[:, None]


# --------------------------------------------------------------------------- sizes


def perturbation_norms(delta: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: share of pixels changed (L0 share), L2 and L∞ norms of δ."""
    d = flat(delta).astype(np.float64)
    magnitude = np.abs(d)
    return {
        "l0": (magnitude > CHANGED).mean(axis=1),
        "l2": np.sqrt((d**2).sum(axis=1)),
        "linf": magnitude.max(axis=1) if d.shape[1] else np.zeros(len(d)),
    }


def histogram_edges(dims: int, budget: float) -> dict[str, np.ndarray]:
    """Bin edges fixed by the benchmark alone (pixel count and the largest L∞ budget of its
    attacks), so every set's histogram is drawn on the same bins."""
    budget = max(float(budget), 1e-6)
    return {
        "l0": np.linspace(0.0, 1.0, BINS["l0"] + 1),
        "l2": np.linspace(0.0, budget * np.sqrt(dims), BINS["l2"] + 1),
        "linf": np.linspace(0.0, budget, BINS["linf"] + 1),
    }


def histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts per bin; a value beyond the last edge (rounding) counts in the last bin."""
    clipped = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    return np.histogram(clipped, bins=edges)[0].astype(int).tolist()


# --------------------------------------------------------------------------- neighbours


def nearest_by_class(x: np.ndarray, x_train: np.ndarray, y_train: np.ndarray, classes: int,
                     chunk: int = CHUNK) -> np.ndarray:
    """(n, classes): the L2 distance from each image to the nearest train image of each
    class (inf for a class without train images)."""
    q, t = flat(x), flat(x_train)
    t_sq = (t.astype(np.float64) ** 2).sum(axis=1)
    y_train = np.asarray(y_train)
    out = np.full((len(q), classes), np.inf)
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk]
        sq = (block.astype(np.float64) ** 2).sum(axis=1)[:, None] + t_sq[None, :] \
            - 2.0 * (block @ t.T).astype(np.float64)
        sq = np.maximum(sq, 0.0)
        for c in range(classes):
            mine = y_train == c
            if mine.any():
                out[start : start + chunk, c] = np.sqrt(sq[:, mine].min(axis=1))
    return out


# --------------------------------------------------------------------------- summaries


def mean_interval(values: np.ndarray) -> dict[str, float] | None:
    """Mean of the finite values with a normal 95% interval (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    half = Z_95 * float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "low": float(v.mean() - half), "high": float(v.mean() + half), "n": int(len(v))}


def share_interval(flags: np.ndarray) -> dict[str, float] | None:
    """Share of True with its Wilson 95% interval."""
    f = np.asarray(flags, dtype=bool)
    if not len(f):
        return None
    low, high = wilson_interval(int(f.sum()), len(f))
    return {"mean": float(f.mean()), "low": float(low), "high": float(high), "n": int(len(f))}


@dataclass(frozen=True)
class SetArrays:
    """Per-image results of one set (stored, so every summary can be recomputed)."""

    l0: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    shares: np.ndarray  # (n, len(ks)), NaN where δ = 0
    noise_shares: np.ndarray  # the same for Gaussian noise of the same norm
    projection: np.ndarray  # (n, 2)
    distances: np.ndarray  # (n, classes): nearest train image of each class

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def analyse_set(x_eval: np.ndarray, x_adv: np.ndarray, basis: PCABasis, ks: list[int],
                x_train: np.ndarray, y_train: np.ndarray, classes: int) -> SetArrays:
    delta = flat(x_adv).astype(np.float64) - flat(x_eval).astype(np.float64)
    norms = perturbation_norms(delta)
    return SetArrays(
        l0=norms["l0"], l2=norms["l2"], linf=norms["linf"],
        shares=energy_shares(delta, basis, ks), noise_shares=energy_shares(noise_like(delta), basis, ks),
        projection=project(x_adv, basis), distances=nearest_by_class(x_adv, x_train, y_train, classes),
    )


def _pick(distances: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return distances[np.arange(len(distances)), np.asarray(classes, dtype=np.int64)]


def summarise(arrays: SetArrays, clean_distances: np.ndarray, labels: np.ndarray, targets: np.ndarray | None,
              ks: list[int], edges: dict[str, np.ndarray]) -> dict:
    """The stored summary of one set: histograms, energy shares against noise, and the
    neighbour distances next to the same figures for the clean images."""
    norms = {}
    for key in ("l0", "l2", "linf"):
        v = getattr(arrays, key)
        norms[key] = {"mean": float(v.mean()), "median": float(np.median(v)),
                      "edges": edges[key].round(6).tolist(), "counts": histogram(v, edges[key])}
    energy = []
    for i, k in enumerate(ks):
        adv, noise = mean_interval(arrays.shares[:, i]), mean_interval(arrays.noise_shares[:, i])
        energy.append({"k": k, "adversarial": adv, "noise": noise})
    adv_nearest = arrays.distances.argmin(axis=1)
    clean_nearest = clean_distances.argmin(axis=1)
    neighbours = {
        "true": {"adversarial": mean_interval(_pick(arrays.distances, labels)),
                 "clean": mean_interval(_pick(clean_distances, labels))},
        "other_class": {"adversarial": share_interval(adv_nearest != labels),
                        "clean": share_interval(clean_nearest != labels)},
        "target": None,
        "closer_to_target": None,
    }
    if targets is not None:
        adv_t, adv_y = _pick(arrays.distances, targets), _pick(arrays.distances, labels)
        clean_t, clean_y = _pick(clean_distances, targets), _pick(clean_distances, labels)
        neighbours["target"] = {"adversarial": mean_interval(adv_t), "clean": mean_interval(clean_t)}
        neighbours["closer_to_target"] = {"adversarial": share_interval(adv_t < adv_y),
                                          "clean": share_interval(clean_t < clean_y)}
    return {
        "images": int(len(arrays.l2)),
        "perturbed": int((arrays.l2 > 0).sum()),
        "norms": norms,
        "energy": energy,
        "neighbours": neighbours,
    }
