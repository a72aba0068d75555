"""Can a detector tell adversarial images from clean ones? (issue 15, charter goal 2)

A detector gives every image a score, higher meaning "more likely adversarial". Two are
compared on every adversarial set, computed the same way:

- the discriminator of the gan-data reference's GAN: score = minus its real/fake logit
  (an image it finds less real scores higher);
- a standard baseline, the Mahalanobis detector of Lee et al. (2018): class-conditional
  Gaussians with one shared covariance fitted on the control network's penultimate
  features of the train images; score = the smallest Mahalanobis distance to a class mean.

For one set: the ROC AUC of the clean eval images (negatives) against the set's
adversarial images (positives), with a 95% bootstrap interval, and the detection rate at
5% false positives (the threshold leaves at most 5% of the clean images flagged). An
adversarial image is made from the clean image with the same index, so the bootstrap
resamples image indices and keeps each pair together. AUC 0.5 is chance; below 0.5 the
adversarial images look *more* clean to the detector than the clean ones do.

NumPy only: the scores come from engine.analysis_jobs, which runs the models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FALSE_POSITIVES = 0.05
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
ROC_POINTS = 101  # points kept of each ROC curve for plotting
DETECTORS = ("discriminator", "mahalanobis")


# --------------------------------------------------------------------------- ROC


def roc_auc(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """P(score of a random adversarial image > that of a random clean one), ties count half
    (the Mann-Whitney statistic over n_clean × n_adversarial)."""
    clean = np.sort(np.asarray(clean, dtype=np.float64))
    adversarial = np.asarray(adversarial, dtype=np.float64)
    below = np.searchsorted(clean, adversarial, side="left")
    not_above = np.searchsorted(clean, adversarial, side="right")
    return float((below + 0.5 * (not_above - below)).sum() / (len(clean) * len(adversarial)))


def roc_curve(clean: np.ndarray, adversarial: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) for "flag when score ≥ threshold",
    one point per distinct score from the highest down, starting at (0, 0)."""
    clean = np.asarray(clean, dtype=np.float64)
    adversarial = np.asarray(adversarial, dtype=np.float64)
    thresholds = np.unique(np.concatenate([clean, adversarial]))[::-1]
    sorted_clean, sorted_adv = np.sort(clean), np.sort(adversarial)
    fpr = (len(clean) - np.searchsorted(sorted_clean, thresholds, side="left")) / len(clean)
    tpr = (len(adversarial) - np.searchsorted(sorted_adv, thresholds, side="left")) / len(adversarial)
    return (np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]),
            np.concatenate([[np.inf], thresholds]))


def rate_at_false_positives(clean: np.ndarray, adversarial: np.ndarray,
                            rate: float = FALSE_POSITIVES) -> tuple[float, float]:
    """(share of adversarial images flagged, threshold) when an image is flagged if its score
    is above a threshold that flags at most `rate` of the clean images: the largest
    detection rate the ROC curve reaches at that false-positive rate."""
    ordered = np.sort(np.asarray(clean, dtype=np.float64))[::-1]
    allowed = int(np.floor(rate * len(ordered) + 1e-9))
    threshold = float(ordered[allowed]) if allowed < len(ordered) else -np.inf
    return float(np.mean(np.asarray(adversarial, dtype=np.float64) > threshold)), threshold


def thin_curve(fpr: np.ndarray, tpr: np.ndarray, points: int = ROC_POINTS) -> tuple[list[float], list[float]]:
    """The curve at `points` evenly spaced false-positive rates (the best detection rate at
    each, a step function), for a plot that stays small whatever the set size."""
    grid = np.linspace(0.0, 1.0, points)
    order = np.argsort(fpr, kind="stable")
    fpr, best = fpr[order], np.maximum.accumulate(tpr[order])
    index = np.searchsorted(fpr, grid, side="right") - 1
    return grid.round(4).tolist(), best[np.clip(index, 0, None)].round(4).tolist()


# --------------------------------------------------------------------------- one detector on one set


@dataclass(frozen=True)
class Detection:
    """One detector on one adversarial set."""

    auc: float
    low: float  # 95% bootstrap interval of the AUC
    high: float
    rate: float  # detection rate at FALSE_POSITIVES false positives
    rate_low: float
    rate_high: float
    false_positives: float  # the clean share actually flagged at that threshold (≤ FALSE_POSITIVES)
    clean: int
    adversarial: int
    bootstrap: int
    fpr: list[float]
    tpr: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def _auc_sorted(clean_sorted: np.ndarray, adversarial: np.ndarray) -> float:
    below = np.searchsorted(clean_sorted, adversarial, side="left")
    not_above = np.searchsorted(clean_sorted, adversarial, side="right")
    return float((below + 0.5 * (not_above - below)).sum() / (len(clean_sorted) * len(adversarial)))


def bootstrap(clean: np.ndarray, adversarial: np.ndarray, *, rounds: int = BOOTSTRAP,
              seed: int = BOOTSTRAP_SEED, rate: float = FALSE_POSITIVES) -> tuple[np.ndarray, np.ndarray]:
    """AUC and detection rate of `rounds` resamples of the image indices (pairs kept
    together when the sets are paired, i.e. of equal length; else each set alone)."""
    clean = np.asarray(clean, dtype=np.float64)
    adversarial = np.asarray(adversarial, dtype=np.float64)
    rng = np.random.default_rng(seed)
    paired = len(clean) == len(adversarial)
    aucs, rates = np.empty(rounds), np.empty(rounds)
    for b in range(rounds):
        i = rng.integers(0, len(clean), len(clean))
        j = i if paired else rng.integers(0, len(adversarial), len(adversarial))
        c = np.sort(clean[i])
        aucs[b] = _auc_sorted(c, adversarial[j])
        allowed = int(np.floor(rate * len(c) + 1e-9))
        threshold = c[::-1][allowed] if allowed < len(c) else -np.inf
        rates[b] = np.mean(adversarial[j] > threshold)
    return aucs, rates


def detect(clean: np.ndarray, adversarial: np.ndarray, *, rounds: int = BOOTSTRAP,
           seed: int = BOOTSTRAP_SEED) -> Detection:
    """The detection figures of one detector (its scores on the clean eval images and on
    one adversarial set). Non-finite scores are refused: a detector that overflowed says
    nothing about the images."""
    clean = np.asarray(clean, dtype=np.float64).ravel()
    adversarial = np.asarray(adversarial, dtype=np.float64).ravel()
    if not (len(clean) and len(adversarial)):
        raise ValueError("detection needs at least one clean and one adversarial score")
    if not (np.isfinite(clean).all() and np.isfinite(adversarial).all()):
        raise ValueError("detector scores must be finite")
    fpr, tpr, _ = roc_curve(clean, adversarial)
    rate, threshold = rate_at_false_positives(clean, adversarial)
    aucs, rates = bootstrap(clean, adversarial, rounds=rounds, seed=seed)
    grid, best = thin_curve(fpr, tpr)
    return Detection(
        auc=roc_auc(clean, adversarial),
        low=float(np.percentile(aucs, 2.5)), high=float(np.percentile(aucs, 97.5)),
        rate=rate, rate_low=float(np.percentile(rates, 2.5)), rate_high=float(np.percentile(rates, 97.5)),
        false_positives=float(np.mean(clean > threshold)),
        clean=len(clean), adversarial=len(adversarial), bootstrap=rounds, fpr=grid, tpr=best,
    )


def compare(a: dict, b: dict) -> str:
    """'better', 'worse' or 'as well': detector a against b on one set, by their AUC
    intervals (disjoint intervals only count as a difference)."""
    if a["low"] > b["high"]:
        return "better"
    if a["high"] < b["low"]:
        return "worse"
    return "as well"


# --------------------------------------------------------------------------- the baseline detector


@dataclass(frozen=True)
class GaussianFit:
    """Class means and the shared precision matrix of the Mahalanobis detector."""

    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)
    present: np.ndarray  # (classes,) bool: the class had train images (an absent one is left out)


def mahalanobis_fit(features: np.ndarray, labels: np.ndarray, classes: int, ridge: float = 1e-6) -> GaussianFit:
    """Class-conditional Gaussians with one covariance (the within-class scatter), as in
    Lee et al. 2018. A small ridge (relative to the mean variance) keeps the inverse
    finite where features are constant (dead ReLUs)."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    labels = np.asarray(labels)
    means = np.zeros((classes, f.shape[1]))
    centred = np.empty_like(f)
    for c in range(classes):
        mine = labels == c
        if mine.any():
            means[c] = f[mine].mean(axis=0)
            centred[mine] = f[mine] - means[c]
    covariance = centred.T @ centred / len(f)
    scale = max(float(np.trace(covariance)) / f.shape[1], 1e-12)
    precision = np.linalg.pinv(covariance + ridge * scale * np.eye(f.shape[1]), hermitian=True)
    return GaussianFit(means=means, precision=precision, present=np.bincount(labels, minlength=classes)[:classes] > 0)


def mahalanobis_score(fit: GaussianFit, features: np.ndarray) -> np.ndarray:
    """min over classes of (f − μ_c)ᵀ Σ⁻¹ (f − μ_c): far from every class = suspicious."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    best = np.full(len(f), np.inf)
    for c in np.flatnonzero(fit.present):
        diff = f - fit.means[c]
        best = np.minimum(best, np.einsum("ij,jk,ik->i", diff, fit.precision, diff))
    return best
