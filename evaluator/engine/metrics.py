"""Accuracy with Wilson intervals, confusion matrices, exact McNemar, universal tiers.

Pure NumPy + the standard library (SPEC §2): this module is imported by the web process
and the ranking task, so it must not pull in TensorFlow, Django or SciPy. The exact
binomial tail is summed here in log space rather than borrowed from SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Two-sided 95%: the normal quantile Phi^-1(0.975), to full double precision.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Accuracy:
    """`correct` of `total` right, with a 95% Wilson interval [low, high].

    With total == 0 nothing was measured: value is NaN and the interval is the
    whole [0, 1] (every accuracy is still compatible with the data), so callers
    never divide by zero and a page can still draw an (empty) bar.
    """

    correct: int
    total: int
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None (strict JSON has no NaN)."""
        return {
            "correct": self.correct,
            "total": self.total,
            "value": None if math.isnan(self.value) else self.value,
            "low": self.low,
            "high": self.high,
        }


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on paired outcomes.

    b: pairs where A is right and B wrong; c: A wrong and B right. The concordant
    pairs carry no information about which is better, so only b and c matter.
    """

    b: int
    c: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.b + self.c

    def as_dict(self) -> dict[str, Any]:
        return {"b": self.b, "c": self.c, "p_value": self.p_value}


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (no continuity correction).

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and is
    sensible at 0/n and n/n, which robust-accuracy numbers often hit.
    """
    correct, total = int(correct), int(total)
    if total < 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total, got {correct}/{total}")
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    z2 = z * z
    denom = 1.0 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / total + z2 / (4.0 * total * total))
    # The bounds are exactly 0 / 1 at the extremes; pin them so float error
    # cannot leave e.g. 1e-17 as the lower bound of 0/n.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return low, high


def accuracy_from_correct(correct: np.ndarray) -> Accuracy:
    """Accuracy of a per-image correctness vector (bool, shape (n,))."""
    flags = np.asarray(correct)
    if flags.ndim != 1:
        raise ValueError(f"correctness must be 1-D, got shape {flags.shape}")
    if flags.dtype != np.bool_:
        if flags.size and not np.isin(flags, (0, 1)).all():
            raise ValueError("correctness must be boolean (or 0/1)")
        flags = flags.astype(bool)
    total = int(flags.size)
    hits = int(np.count_nonzero(flags))
    low, high = wilson_interval(hits, total)
    value = hits / total if total else math.nan
    return Accuracy(correct=hits, total=total, value=value, low=low, high=high)


def accuracy_from_counts(correct: int, total: int) -> Accuracy:
    """Accuracy of `correct` right out of `total`, from stored counts."""
    low, high = wilson_interval(correct, total)
    value = int(correct) / int(total) if total else math.nan
    return Accuracy(correct=int(correct), total=int(total), value=value, low=low, high=high)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> Accuracy:
    """Accuracy of predictions against labels.

    predictions: class ids, shape (n,); or scores (logits / probabilities), shape
    (n, classes), reduced by argmax so callers can pass model output directly.
    """
    preds = _as_class_ids(predictions)
    labels = np.asarray(labels)
    if labels.ndim != 1 or preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ")
    return accuracy_from_correct(preds == labels)


def robust_correct(correct_sets: Sequence[np.ndarray]) -> np.ndarray:
    """Per image, right under every set at once: the worst case over attacks (SPEC §2
    "Robust accuracy"). The logical AND of per-image correctness vectors, all of one
    length; an empty list is refused (no attack measured means no robust figure)."""
    if not correct_sets:
        raise ValueError("robust correctness needs at least one correctness vector")
    arrays = [np.asarray(c) for c in correct_sets]
    for a in arrays:
        if a.ndim != 1 or a.shape != arrays[0].shape:
            raise ValueError(f"correctness vectors must be 1-D and equal length: {[x.shape for x in arrays]}")
        if a.dtype != np.bool_ and a.size and not np.isin(a, (0, 1)).all():
            raise ValueError("correctness must be boolean (or 0/1)")
    # In place, one vector at a time: a ranking does this for every network over every
    # other network's set, so no N x images stack is built.
    out = arrays[0].astype(bool, copy=True)
    for a in arrays[1:]:
        np.logical_and(out, a, out=out)
    return out


def robust_accuracy(correct_sets: Sequence[np.ndarray]) -> Accuracy:
    """Accuracy of `robust_correct`, with its Wilson interval."""
    return accuracy_from_correct(robust_correct(correct_sets))


def interval_below(a: Accuracy, b: Accuracy) -> bool:
    """True when a's whole 95% interval lies below b's: a is lower beyond what sampling
    explains (the rule of the gradient-masking and memorisation flags)."""
    if a.total == 0 or b.total == 0:
        return False
    return a.high < b.low


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes) int64: rows are true labels, columns predictions."""
    labels = np.asarray(labels)
    preds = _as_class_ids(predictions)
    if labels.ndim != 1 or preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ")
    if num_classes < 1:
        raise ValueError("num_classes must be positive")
    for name, ids in (("labels", labels), ("predictions", preds)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} outside 0..{num_classes - 1}")
    # One bincount over the flattened (true, predicted) cell index: O(n), no Python loop.
    flat = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Bin(n, 1/2), exact up to float rounding, any n.

    Summed in log space (log C(n, i) via lgamma, log-sum-exp around the largest
    term) so 2^-n never underflows before the terms are combined: n = 10,000
    gives terms near 1e-3000 that a direct product cannot represent.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # The lower tail is the smaller sum when k < n/2; otherwise use the complement
    # through symmetry, P(X <= k) = 1 - P(X <= n-k-1), only when that tail is small.
    if 2 * k >= n:
        return 1.0 - binomial_cdf_half(n - k - 1, n)
    i = np.arange(k + 1, dtype=np.float64)
    log_n_fact = math.lgamma(n + 1)
    lg = np.frompyfunc(math.lgamma, 1, 1)
    log_terms = log_n_fact - lg(i + 1).astype(np.float64) - lg(n - i + 1).astype(np.float64)
    log_terms -= n * math.log(2.0)
    top = float(log_terms.max())
    log_sum = top + math.log(float(np.exp(log_terms - top).sum()))
    return min(1.0, math.exp(log_sum))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test of paired correctness vectors.

    Under H0 each discordant pair is equally likely to favour A or B, so
    min(b, c) ~ Bin(b + c, 1/2); p = min(1, 2 * P(X <= min(b, c))), and p = 1
    when there is no discordant pair (nothing distinguishes A from B).
    """
    a = np.asarray(a_correct, dtype=bool)
    b_ = np.asarray(b_correct, dtype=bool)
    if a.ndim != 1 or a.shape != b_.shape:
        raise ValueError(f"paired vectors must be 1-D and equal length: {a.shape} vs {b_.shape}")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    return McNemar(b=b, c=c, p_value=mcnemar_p_value(b, c))


def mcnemar_p_value(b: int, c: int) -> float:
    """The exact McNemar p-value from the discordant counts alone."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b, c), n))


def universal_robustness(universal_acc: float, clean_acc: float) -> float:
    """Universal accuracy / clean accuracy (charter: 0.2210 / 0.2335 = 0.9465).

    NaN when clean accuracy is 0 or NaN: the ratio is undefined, not infinite.
    """
    if math.isnan(clean_acc) or clean_acc == 0:
        return math.nan
    return universal_acc / clean_acc


def universal_tier(universal_acc: float) -> int:
    """floor(10 * universal accuracy), clamped to 0..10.

    Accuracies are ratios of counts, so 10 * acc can land a hair under an integer
    (e.g. 0.3 reached as 0.1 * 3 or from a rounded stored value); the 1e-9 slack
    keeps 0.3 in tier 3 while no real accuracy (resolution 1/n, n << 1e8) moves up.
    """
    if math.isnan(universal_acc):
        raise ValueError("universal accuracy is NaN: no tier")
    return int(min(10, max(0, math.floor(10.0 * universal_acc + 1e-9))))


def _as_class_ids(predictions: np.ndarray) -> np.ndarray:
    preds = np.asarray(predictions)
    if preds.ndim == 2:
        return preds.argmax(axis=1)
    if preds.ndim != 1:
        raise ValueError(f"predictions must be ids (n,) or scores (n, classes), got {preds.shape}")
    return preds
