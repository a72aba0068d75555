"""Metrics: Wilson intervals, accuracy, confusion matrix, exact McNemar, universal tier.

SciPy is the independent check here (the engine itself does not use it).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from evaluator.engine.metrics import (
    Accuracy,
    McNemar,
    accuracy,
    accuracy_from_correct,
    accuracy_from_counts,
    binomial_cdf_half,
    confusion_matrix,
    interval_below,
    mcnemar_exact,
    mcnemar_p_value,
    robust_accuracy,
    robust_correct,
    universal_robustness,
    universal_tier,
    wilson_interval,
)

# --- Wilson interval -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [
        # 0/n: low 0, high z^2 / (n + z^2) = 3.8415 / 13.8415.
        (0, 10, 0.0, 0.2775327998628893),
        # n/n mirrors it: low n / (n + z^2).
        (10, 10, 0.7224672001371109, 1.0),
        (81, 263, 0.2552885198782742, 0.3662095769828000),
        (5, 10, 0.2365930905125640, 0.7634069094874361),
        (1, 1, 0.2065493143772375, 1.0),
    ],
)
def test_wilson_hand_worked(correct: int, total: int, low: float, high: float) -> None:
    got = wilson_interval(correct, total)
    assert got == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize(
    ("correct", "total"),
    [(0, 1), (1, 2), (3, 7), (0, 2000), (1, 2000), (1105, 2000), (1999, 2000), (2000, 2000),
     (7, 13), (500, 501), (12345, 50000)],
)
def test_wilson_matches_scipy(correct: int, total: int) -> None:
    ci = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(correct, total) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_other_confidence_level_via_z() -> None:
    ci = binomtest(30, 80).proportion_ci(confidence_level=0.99, method="wilson")
    assert wilson_interval(30, 80, z=2.5758293035489004) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_empty_is_whole_unit_interval() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("correct", "total"), [(-1, 5), (6, 5), (0, -1)])
def test_wilson_rejects_impossible_counts(correct: int, total: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(correct, total)


# --- accuracy --------------------------------------------------------------------------


def test_accuracy_from_ids_and_from_scores_agree() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0, 3, 3])
    ids = np.array([0, 1, 1, 2, 1, 3, 3, 0])
    scores = np.eye(4)[ids] * 5.0 - 1.0  # logits whose argmax is `ids`
    a, b = accuracy(ids, labels), accuracy(scores, labels)
    assert a == b
    assert (a.correct, a.total, a.value) == (5, 8, 0.625)
    assert (a.low, a.high) == wilson_interval(5, 8)
    assert a.low < a.value < a.high


def test_accuracy_from_correct_counts_trues() -> None:
    acc = accuracy_from_correct(np.array([True, False, True, True]))
    assert acc == Accuracy(3, 4, 0.75, *wilson_interval(3, 4))
    assert accuracy_from_correct(np.array([1, 0, 1, 1])) == acc


def test_accuracy_of_nothing_is_nan_with_full_interval_and_json_safe() -> None:
    acc = accuracy_from_correct(np.zeros(0, dtype=bool))
    assert acc.total == 0 and math.isnan(acc.value)
    assert (acc.low, acc.high) == (0.0, 1.0)
    payload = acc.as_dict()
    assert payload["value"] is None
    json.dumps(payload, allow_nan=False)


def test_accuracy_as_dict_round_trips() -> None:
    acc = accuracy(np.array([1, 1, 0]), np.array([1, 0, 0]))
    assert Accuracy(**acc.as_dict()) == acc


@pytest.mark.parametrize(
    ("predictions", "labels"),
    [(np.zeros(3), np.zeros(4)), (np.zeros((2, 2, 2)), np.zeros(2)), (np.zeros(3), np.zeros((3, 1)))],
)
def test_accuracy_rejects_mismatched_shapes(predictions: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        accuracy(predictions, labels)


def test_accuracy_from_correct_rejects_non_boolean() -> None:
    with pytest.raises(ValueError):
        accuracy_from_correct(np.array([0, 2, 1]))


# --- confusion matrix ------------------------------------------------------------------


def test_confusion_matrix_hand_built() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 2, 2, 0, 2])
    expected = np.array(
        [
            [1, 1, 0],  # true 0: one right, one called 1
            [0, 2, 1],  # true 1
            [1, 0, 3],  # true 2
        ]
    )
    got = confusion_matrix(labels, preds, 3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert np.trace(got) == accuracy(preds, labels).correct


@pytest.mark.parametrize(("n", "k", "seed"), [(0, 3, 0), (1, 1, 1), (500, 10, 2), (2000, 10, 3), (97, 7, 4)])
def test_confusion_matrix_matches_add_at(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels, preds = rng.integers(0, k, n), rng.integers(0, k, n)
    expected = np.zeros((k, k), dtype=np.int64)
    np.add.at(expected, (labels, preds), 1)
    got = confusion_matrix(labels, preds, k)
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == n
    np.testing.assert_array_equal(got.sum(axis=1), np.bincount(labels, minlength=k))


def test_confusion_matrix_accepts_scores() -> None:
    labels = np.array([0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_array_equal(confusion_matrix(labels, scores, 2), [[1, 0], [1, 1]])


@pytest.mark.parametrize(("labels", "preds"), [([0, 3], [0, 1]), ([0, 1], [0, -1])])
def test_confusion_matrix_rejects_out_of_range(labels: list[int], preds: list[int]) -> None:
    with pytest.raises(ValueError):
        confusion_matrix(np.array(labels), np.array(preds), 3)


# --- exact McNemar ---------------------------------------------------------------------

MCNEMAR_CASES = [
    (0, 1), (1, 0), (0, 5), (5, 0), (1, 1), (2, 3), (3, 10), (10, 3), (6, 14), (25, 25),
    (30, 50), (100, 140), (480, 520), (200, 800), (1000, 1100), (4900, 5100), (4990, 5010),
    (5000, 5000), (3000, 7000), (4800, 5200),
]


@pytest.mark.parametrize(("b", "c"), MCNEMAR_CASES)
def test_mcnemar_p_matches_scipy_binomtest(b: int, c: int) -> None:
    expected = binomtest(min(b, c), b + c, 0.5).pvalue
    got = mcnemar_p_value(b, c)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert 0.0 <= got <= 1.0


def test_mcnemar_no_discordant_pairs_is_p_one() -> None:
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same) == McNemar(b=0, c=0, p_value=1.0)
    assert mcnemar_exact(np.zeros(0, bool), np.zeros(0, bool)).p_value == 1.0


@pytest.mark.parametrize(("b", "c"), [(0, 5), (3, 10), (40, 60), (700, 300)])
def test_mcnemar_counts_discordant_pairs_from_vectors(b: int, c: int) -> None:
    concordant_right, concordant_wrong = 17, 9
    a_correct = np.array([True] * b + [False] * c + [True] * concordant_right + [False] * concordant_wrong)
    b_correct = np.array([False] * b + [True] * c + [True] * concordant_right + [False] * concordant_wrong)
    perm = np.random.default_rng(b).permutation(a_correct.size)  # order must not matter
    result = mcnemar_exact(a_correct[perm], b_correct[perm])
    assert (result.b, result.c, result.discordant) == (b, c, b + c)
    assert result.p_value == pytest.approx(binomtest(min(b, c), b + c).pvalue, rel=1e-9)
    swapped = mcnemar_exact(b_correct[perm], a_correct[perm])
    assert (swapped.b, swapped.c, swapped.p_value) == (c, b, result.p_value)


def test_mcnemar_tiny_p_underflows_gracefully() -> None:
    # 10,000 discordant pairs all one way: p = 2 * 2^-10000, below the smallest double.
    assert mcnemar_p_value(0, 10_000) == 0.0
    # Around 1e-252: each term C(8000, i) 2^-8000 is formed in log space, where a
    # naive 0.5 ** 8000 would already be 0.
    p = mcnemar_p_value(2500, 5500)
    assert 0.0 < p < 1e-250
    assert p == pytest.approx(binomtest(2500, 8000).pvalue, rel=1e-9)


def test_mcnemar_rejects_unpaired_vectors() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


@pytest.mark.parametrize(
    ("k", "n"), [(-1, 5), (0, 0), (0, 1), (3, 5), (5, 5), (9, 10), (60, 100), (6000, 10_000)]
)
def test_binomial_cdf_half_matches_scipy(k: int, n: int) -> None:
    from scipy.stats import binom

    assert binomial_cdf_half(k, n) == pytest.approx(binom.cdf(k, n, 0.5), rel=1e-9, abs=1e-15)


# --- universal robustness and tier -----------------------------------------------------


def test_universal_robustness_charter_pca_figure() -> None:
    assert universal_robustness(0.2210, 0.2335) == pytest.approx(0.9465, abs=5e-5)


@pytest.mark.parametrize("clean", [0.0, math.nan])
def test_universal_robustness_undefined_without_clean_accuracy(clean: float) -> None:
    assert math.isnan(universal_robustness(0.1, clean))


@pytest.mark.parametrize(
    ("acc", "tier"),
    [
        (0.0, 0), (0.05, 0), (0.0999, 0), (0.1, 1), (0.3, 3), (0.1 * 3, 3), (3 / 10, 3),
        (0.7, 7), (0.7 * 1.0, 7), (603 / 2000, 3), (0.5525, 5), (0.999, 9), (1999 / 2000, 9),
        (1.0, 10), (1.2, 10), (-0.1, 0),
    ],
)
def test_universal_tier(acc: float, tier: int) -> None:
    assert universal_tier(acc) == tier


@pytest.mark.parametrize("k", range(0, 11))
def test_universal_tier_exact_tenths_from_counts(k: int) -> None:
    # k/10 of an eval split of any size must land in tier k, not k - 1.
    for n in (10, 30, 70, 2000, 2001 * 10):
        assert universal_tier((k * n // 10) / n) == k


def test_universal_tier_rejects_nan() -> None:
    with pytest.raises(ValueError):
        universal_tier(math.nan)


# --- robust accuracy (SPEC §2: the worst case over every attack) ------------------------


def test_robust_correct_is_right_under_every_set_at_once() -> None:
    own = np.array([1, 1, 1, 0, 1], bool)
    audit = np.array([1, 0, 1, 0, 1], bool)
    transfer = np.array([1, 1, 0, 1, 1])  # 0/1 is accepted too
    np.testing.assert_array_equal(robust_correct([own, audit, transfer]), [True, False, False, False, True])
    acc = robust_accuracy([own, audit, transfer])
    assert (acc.correct, acc.total) == (2, 5)
    assert (acc.low, acc.high) == pytest.approx(wilson_interval(2, 5))
    # Never above any of its sets; one set is its own worst case.
    assert acc.value <= min(accuracy_from_correct(s).value for s in (own, audit, transfer.astype(bool)))
    np.testing.assert_array_equal(robust_correct([own]), own)


@pytest.mark.parametrize(
    "sets",
    [[], [np.ones(3, bool), np.ones(4, bool)], [np.ones((2, 2), bool)], [np.array([0, 2, 1])]],
    ids=["none", "lengths-differ", "not-1d", "not-boolean"],
)
def test_robust_correct_refuses_what_it_cannot_combine(sets) -> None:
    with pytest.raises(ValueError):
        robust_correct(sets)


def test_accuracy_from_counts_matches_the_vector_form() -> None:
    flags = np.r_[np.ones(37, bool), np.zeros(63, bool)]
    assert accuracy_from_counts(37, 100) == accuracy_from_correct(flags)
    assert math.isnan(accuracy_from_counts(0, 0).value)


def test_interval_below_needs_the_whole_interval_below() -> None:
    assert interval_below(accuracy_from_counts(40, 2000), accuracy_from_counts(1040, 2000))
    # 84% vs 87% of 2,000 images: the intervals overlap, not significantly below.
    assert not interval_below(accuracy_from_counts(1680, 2000), accuracy_from_counts(1740, 2000))
    assert not interval_below(accuracy_from_counts(1740, 2000), accuracy_from_counts(40, 2000))
    assert not interval_below(accuracy_from_counts(0, 0), accuracy_from_counts(1040, 2000))
