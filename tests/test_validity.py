"""Metric validity (evaluator/engine/validity.py): rank correlations against SciPy and on
hand-made orderings, the ladder check, the charter ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evaluator.engine import ladder, metrics
from evaluator.engine.validity import (
    CHARTER, LEVEL, SCORE, assess, charter_ranking, ladder_disagreements, ordering_keys, rank_correlation,
    validity, wilson_bounds,
)


def test_rank_correlation_is_scipys_with_ties_and_missing_values() -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 4, 30).astype(float)  # many ties, as levels have
    robust = np.round(rng.random(30), 2)
    robust_with_gaps = [None if i % 7 == 0 else float(v) for i, v in enumerate(robust)]
    got = rank_correlation("level", levels, robust_with_gaps)
    keep = [i for i in range(30) if i % 7]
    rho = stats.spearmanr(levels[keep], robust[keep])
    tau = stats.kendalltau(levels[keep], robust[keep])  # tau-b
    assert got.networks == len(keep) and got.defined
    assert got.spearman == pytest.approx(rho.statistic) and got.spearman_p == pytest.approx(rho.pvalue)
    assert got.kendall == pytest.approx(tau.statistic) and got.kendall_p == pytest.approx(tau.pvalue)


@pytest.mark.parametrize(
    "order, robust, rho, tau",
    [
        ([0, 1, 2, 3, 4], [0.1, 0.2, 0.3, 0.5, 0.9], 1.0, 1.0),  # the same order
        ([4, 3, 2, 1, 0], [0.1, 0.2, 0.3, 0.5, 0.9], -1.0, -1.0),  # reversed
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 0.8944, 0.8165),  # two levels, tied inside
        ([0, 2, 1, 3], [0.1, 0.2, 0.3, 0.4], 0.8, 0.6667),  # one swapped pair of six
    ],
)
def test_hand_made_orderings(order, robust, rho, tau) -> None:
    got = rank_correlation("x", order, robust)
    assert got.spearman == pytest.approx(rho, abs=1e-4) and got.kendall == pytest.approx(tau, abs=1e-4)
    assert 0 <= got.spearman_p <= 1 and 0 <= got.kendall_p <= 1


@pytest.mark.parametrize(
    "order, robust",
    [([1, 2], [0.1, 0.2]),  # too few networks
     ([3, 3, 3, 3], [0.1, 0.2, 0.3, 0.4]),  # every network at one level
     ([1, 2, 3], [None, None, 0.3]),  # robust accuracy not measured yet
     ([1, 2, 3], [0.5, 0.5, 0.5])],
)
def test_undefined_correlations_say_so(order, robust) -> None:
    got = rank_correlation("x", order, robust)
    assert not got.defined and got.spearman is None and got.kendall_p is None


def test_ordering_keys_levels_then_the_ladder() -> None:
    #          up0  R1   up1  R2   up2  R3 (stopped at R1: level 0)
    levels = [0, 0, 1, 1, 2, 0]
    rungs = [None, 1, None, 2, None, 3]
    keys = ordering_keys(levels, rungs)
    assert list(np.argsort(keys, kind="stable")) == [0, 1, 5, 2, 3, 4]
    assert ordering_keys([1, 1], [None, None]).tolist() == [1.0, 1.0]  # uploads of a level tie
    with pytest.raises(ValueError):
        ordering_keys([1, 2], [None])


def test_ladder_disagreements_only_where_intervals_are_disjoint() -> None:
    # R1 0.10±0.02, R2 0.12±0.02 (overlaps R1), R3 0.50±0.02, R4 0.30±0.02 (below R3: wrong)
    low = [0.08, 0.10, 0.48, 0.28]
    high = [0.12, 0.14, 0.52, 0.32]
    bad, disjoint = ladder_disagreements(low, high)
    assert bad == [(3, 4)]
    assert disjoint == 5  # every pair but (R1, R2)
    assert ladder_disagreements([0.1, None], [0.2, None]) == ([], 0)
    assert ladder_disagreements([], []) == ([], 0)


def test_wilson_bounds_are_the_products_intervals() -> None:
    assert wilson_bounds(0.25, 200) == metrics.wilson_interval(50, 200)


def test_validity_combines_both() -> None:
    result = validity([0.1, 0.2, 0.3], {"level": [0, 1, 2], "score": [3, 2, 1]}, [0.05, 0.25], [0.15, 0.35])
    assert [c.ordering for c in result.correlations] == ["level", "score"]
    assert result.correlations[0].spearman == pytest.approx(1.0)
    assert result.correlations[1].spearman == pytest.approx(-1.0)
    assert result.disagreements == [] and result.significant_pairs == 1


def _correct(accuracies: np.ndarray, images: int = 60, seed: int = 0) -> dict:
    """Per-image outcomes with accuracy[a][b] on adv(b) (diagonal: white-box)."""
    rng = np.random.default_rng(seed)
    n = len(accuracies)
    return {(a, b): rng.random(images) < accuracies[a][b] for a in range(n) for b in range(n)}


def test_charter_ranking_follows_charter_pairwise() -> None:
    rng = np.random.default_rng(1)
    n, refs = 6, [0, 1, 2, 3]
    correct = _correct(rng.random((n, n)))
    M = ladder.accuracy_matrix(correct)
    order, levels = charter_ranking(M, refs)
    assert sorted(order) == refs
    for x in range(n):
        climb = 0
        for r in order:
            if x == r or not ladder.charter_pairwise(correct, x, r).a_wins:
                break
            climb += 1
        assert levels[x] == climb


def test_charter_rule_rewards_a_transferable_attack_the_revised_rule_does_not() -> None:
    """The defect issue 12 names, on a hand-made matrix: the upload (2) is weak against
    its own attack (white-box 2%) but its attack transfers well, so the charter rule puts
    it above both references; on the same images it does not beat R2."""
    M = np.array([
        [0.05, 0.30, 0.05],  # R1: weak
        [0.60, 0.50, 0.30],  # R2: robust (50% white-box), 30% on the upload's attack
        [0.50, 0.45, 0.02],  # the undefended upload
    ])
    _, charter_levels = charter_ranking(M, [0, 1])
    assert charter_levels == [0, 1, 2]
    correct = _correct(M, images=1000, seed=3)
    wins = ladder.pairwise_wins(correct)
    order = ladder.ladder_order(wins, among=[0, 1], M=M)
    assert order == [0, 1] and ladder.level_of(wins, 2, order).level == 1


def test_charter_ranking_treats_missing_cells_as_no_evidence() -> None:
    M = np.array([[0.1, 0.5, math.nan], [0.6, 0.2, 0.4], [math.nan, 0.3, 0.0]])
    order, levels = charter_ranking(M, [0, 1])
    assert order == [0, 1] and levels == [0, 1, 0]


def _suite() -> dict:
    """Three references (ladder 0, 1, 2) and two uploads, robust accuracy rising with level."""
    M = np.array([
        [0.10, 0.30, 0.20, 0.40, 0.35],
        [0.60, 0.30, 0.35, 0.55, 0.50],
        [0.80, 0.70, 0.60, 0.75, 0.70],
        [0.50, 0.40, 0.25, 0.05, 0.40],
        [0.65, 0.60, 0.45, 0.60, 0.20],
    ])
    return dict(levels=[0, 1, 2, 1, 2], ladder=[0, 1, 2], scores=[-1.0, 0.0, 1.0, -0.2, 0.6], M=M,
                robust=[0.05, 0.20, 0.55, 0.10, 0.30], images=200)


def test_assess_on_a_hand_made_suite() -> None:
    result = assess(**_suite())
    by_name = {c.ordering: c for c in result.correlations}
    assert list(by_name) == [LEVEL, CHARTER, SCORE] and result.measured == 5
    # Level keys: up(0.10) and R2 at level 1 -> R2 above; up(0.30) and R3 at 2 -> R3 above.
    assert by_name[LEVEL].spearman == pytest.approx(1.0) and by_name[LEVEL].kendall == pytest.approx(1.0)
    assert by_name[SCORE].spearman == pytest.approx(1.0)
    assert by_name[CHARTER].defined
    assert result.disagreements == [] and result.significant_pairs == 3  # 10/200, 40/200, 110/200


def test_assess_finds_a_ladder_that_contradicts_robust_accuracy() -> None:
    suite = _suite()
    suite["robust"] = [0.60, 0.20, 0.55, 0.10, 0.30]  # R1 is the most robust reference
    result = assess(**suite)
    assert result.disagreements == [(1, 2)]  # R1 vs R3: intervals overlap, no claim
    # A stored interval wins over the Wilson fallback: made wide, it settles nothing.
    wide = assess(**suite, robust_low=[0.0] * 5, robust_high=[1.0] * 5)
    assert wide.disagreements == [] and wide.significant_pairs == 0


def test_assess_without_robust_accuracy_claims_nothing() -> None:
    suite = {**_suite(), "robust": [None] * 5}
    result = assess(**suite)
    assert result.measured == 0 and result.significant_pairs == 0 and result.disagreements == []
    assert not any(c.defined for c in result.correlations)
