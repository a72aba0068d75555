"""Ranking over plain data: pairwise rule, ladder order, levels, Bradley-Terry score.

Hand-built cross-attack matrices with answers worked out by hand, plus independent
re-computations (SciPy's McNemar/binomtest and a SciPy optimiser for Bradley-Terry).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import binomtest

from evaluator.engine.ladder import (
    LevelResult,
    bradley_terry,
    ladder_order,
    level,
    level_of,
    pairwise,
    pairwise_wins,
    reference_level_results,
    reference_levels,
    robustness_scores,
)

# M[a][b] = accuracy of a on adv(b).
# Transitive 3x3: 2 beats 0 and 1, 0 beats 1 -> ladder [1, 0, 2].
TRANSITIVE_3 = np.array(
    [
        [0.10, 0.50, 0.30],
        [0.20, 0.05, 0.25],
        [0.60, 0.70, 0.40],
    ]
)

# Cycle 0 > 1 > 2 > 0: one win each; means over the others' sets
# 0: (0.60 + 0.30) / 2 = 0.45, 1: (0.40 + 0.65) / 2 = 0.525, 2: (0.70 + 0.50) / 2 = 0.60.
CYCLE_3 = np.array(
    [
        [0.00, 0.60, 0.30],
        [0.40, 0.00, 0.65],
        [0.70, 0.50, 0.00],
    ]
)

# 4x4: 3 beats everyone; 0 > 1 > 2 > 0 is a cycle below it (one win each), so the
# means break the tie: 0: (0.55+0.10+0.05)/3 = 0.2333, 1: (0.50+0.45+0.05)/3 = 0.3333,
# 2: (0.20+0.30+0.05)/3 = 0.1833 -> ladder [2, 0, 1, 3].
TIED_4 = np.array(
    [
        [0.90, 0.55, 0.10, 0.05],
        [0.50, 0.90, 0.45, 0.05],
        [0.20, 0.30, 0.90, 0.05],
        [0.80, 0.80, 0.80, 0.90],
    ]
)


def permuted(M: np.ndarray, perm: list[int]) -> np.ndarray:
    """Relabel networks: network i of the result is network perm[i] of M."""
    return M[np.ix_(perm, perm)]


# --- pairwise rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "a_wins", "b_wins"),
    [(0, 1, True, False), (1, 0, False, True), (0, 2, False, True), (2, 1, True, False)],
)
def test_pairwise_reads_both_cells(a: int, b: int, a_wins: bool, b_wins: bool) -> None:
    result = pairwise(TRANSITIVE_3, a, b)
    assert (result.a, result.b) == (a, b)
    assert result.acc_a == TRANSITIVE_3[a, b] and result.acc_b == TRANSITIVE_3[b, a]
    assert result.difference == pytest.approx(TRANSITIVE_3[a, b] - TRANSITIVE_3[b, a])
    assert (result.a_wins, result.b_wins) == (a_wins, b_wins)
    assert math.isnan(result.p_value) and not result.significant
    assert result.as_dict()["p_value"] is None


def test_pairwise_equal_accuracies_is_a_tie() -> None:
    M = np.array([[0.9, 0.4], [0.4, 0.9]])
    result = pairwise(M, 0, 1)
    assert not result.a_wins and not result.b_wins and result.difference == 0.0


def _paired(b: int, c: int, both_right: int = 30, both_wrong: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(A right on adv(B), B right on adv(A)) with b / c discordant images."""
    a_ok = np.array([True] * b + [False] * c + [True] * both_right + [False] * both_wrong)
    b_ok = np.array([False] * b + [True] * c + [True] * both_right + [False] * both_wrong)
    return a_ok, b_ok


@pytest.mark.parametrize(
    ("b", "c", "significant"), [(3, 1, False), (20, 5, True), (5, 20, True), (12, 12, False)]
)
@pytest.mark.parametrize("layout", ["array", "nested", "mapping"])
def test_pairwise_mcnemar_on_paired_images(b: int, c: int, significant: bool, layout: str) -> None:
    a_ok, b_ok = _paired(b, c)
    m = a_ok.size
    cube = np.ones((2, 2, m), dtype=bool)
    cube[0, 1], cube[1, 0] = a_ok, b_ok
    M = cube.mean(axis=2)
    correct = {
        "array": cube,
        "nested": [[cube[0, 0], a_ok], [b_ok, cube[1, 1]]],
        "mapping": {(0, 1): a_ok, (1, 0): b_ok},
    }[layout]
    result = pairwise(M, 0, 1, correct)
    assert result.p_value == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    assert result.significant is significant
    assert result.difference == pytest.approx((b - c) / m)
    assert result.a_wins == (b > c)
    # The same comparison seen from the other side: same test, mirrored outcome.
    other = pairwise(M, 1, 0, correct)
    assert other.p_value == result.p_value and other.b_wins == result.a_wins


def test_pairwise_missing_correctness_for_pair_raises() -> None:
    with pytest.raises(ValueError):
        pairwise(TRANSITIVE_3, 0, 1, {(0, 1): np.ones(3, bool)})


@pytest.mark.parametrize(("M", "a", "b"), [(TRANSITIVE_3, 1, 1), (np.zeros((2, 3)), 0, 1)])
def test_pairwise_rejects_self_and_non_square(M: np.ndarray, a: int, b: int) -> None:
    with pytest.raises(ValueError):
        pairwise(M, a, b)


# --- ladder order ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("M", "expected"),
    [
        (TRANSITIVE_3, [1, 0, 2]),
        (CYCLE_3, [0, 1, 2]),  # one win each: ordered by mean 0.45 < 0.525 < 0.60
        (TIED_4, [2, 0, 1, 3]),
        (np.full((3, 3), 0.5), [0, 1, 2]),  # complete tie: by index
        (np.array([[0.3]]), [0]),
        (np.zeros((0, 0)), []),
    ],
    ids=["transitive", "cycle", "tied-wins", "all-equal", "single", "empty"],
)
def test_ladder_order_hand_built(M: np.ndarray, expected: list[int]) -> None:
    assert ladder_order(M) == expected


@pytest.mark.parametrize("M", [TRANSITIVE_3, CYCLE_3, TIED_4], ids=["transitive", "cycle", "tied-wins"])
def test_ladder_order_follows_relabelling(M: np.ndarray) -> None:
    base = ladder_order(M)
    for perm in itertools.permutations(range(M.shape[0])):
        order = ladder_order(permuted(M, list(perm)))
        assert [perm[i] for i in order] == base


def test_ladder_order_ignores_the_diagonal() -> None:
    M = TIED_4.copy()
    np.fill_diagonal(M, [0.0, 1.0, 0.3, 0.0])  # white-box accuracy is not a comparison
    assert ladder_order(M) == [2, 0, 1, 3]


def test_ladder_order_equal_wins_equal_mean_falls_back_to_index() -> None:
    # 0 and 1 each beat 2 and tie each other with the same mean.
    M = np.array([[0.0, 0.5, 0.6], [0.5, 0.0, 0.6], [0.2, 0.2, 0.0]])
    assert ladder_order(M) == [2, 0, 1]


def test_ladder_order_among_a_subset_of_a_larger_matrix() -> None:
    # Networks 1, 3, 4 are references inside a matrix that also holds uploads 0 and 2;
    # the uploads' rows and columns must not affect the ladder.
    big = np.full((5, 5), 0.99)
    refs = [1, 3, 4]
    big[np.ix_(refs, refs)] = TRANSITIVE_3
    assert ladder_order(big, among=refs) == [3, 1, 4]


def test_ladder_order_rejects_incomplete_matrix() -> None:
    M = TRANSITIVE_3.copy()
    M[0, 1] = np.nan
    with pytest.raises(ValueError):
        ladder_order(M)


# --- level -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wins", "expected"),
    [
        ([], 0),
        ([False], 0),
        ([False, True, True], 0),  # losing to R1 is level 0 whatever comes after
        ([True], 1),
        ([True, False, True, True], 1),  # stops at the first loss
        ([True, True, False], 2),
        ([True, True, True, True], 4),  # beats all K
    ],
)
def test_level(wins: list[bool], expected: int) -> None:
    assert level(wins) == expected


# Ladder of TRANSITIVE_3 is [1, 0, 2]. An upload X given by its row (X on adv(r)) and
# column (r on adv(X)), indexed by reference index.
@pytest.mark.parametrize(
    ("x_row", "x_col", "wins", "lvl", "deciding"),
    [
        ([0.5, 0.1, 0.5], [0.4, 0.2, 0.4], [False, True, True], 0, 0),  # loses to R1 = ref 1
        ([0.5, 0.3, 0.3], [0.4, 0.2, 0.4], [True, True, False], 2, 2),
        ([0.3, 0.3, 0.5], [0.4, 0.2, 0.4], [True, False, True], 1, 1),  # later win ignored
        ([0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [True, True, True], 3, 2),  # beat all: last win
        ([0.4, 0.4, 0.4], [0.4, 0.4, 0.4], [False, False, False], 0, 0),  # ties are losses
        ([0.5, np.nan, 0.5], [0.4, 0.2, 0.4], [False, True, True], 0, 0),  # not evaluated
    ],
)
def test_level_of_upload(x_row, x_col, wins, lvl, deciding) -> None:
    result = level_of(np.array(x_row), np.array(x_col), [1, 0, 2])
    assert result == LevelResult(lvl, wins, deciding, deciding_reference=[1, 0, 2][deciding])


def test_level_of_empty_ladder() -> None:
    assert level_of(np.zeros(0), np.zeros(0), []) == LevelResult(0, [], None, None)


def test_level_of_accepts_row_and_column_of_the_full_matrix() -> None:
    # X is network 3 appended to TRANSITIVE_3: it beats refs 1 and 0, loses to 2.
    M = np.zeros((4, 4))
    M[:3, :3] = TRANSITIVE_3
    M[3, :3] = [0.6, 0.6, 0.2]
    M[:3, 3] = [0.5, 0.1, 0.9]
    ladder = ladder_order(M, among=[0, 1, 2])
    result = level_of(M[3, :], M[:, 3], ladder)
    assert (result.level, result.deciding, result.deciding_reference) == (2, 2, 2)


@pytest.mark.parametrize(
    ("M", "expected"),
    [
        # A transitive ladder puts R_k at level k (its own rung counts as beaten).
        (TRANSITIVE_3, [1, 2, 3]),
        (TIED_4, [2, 0, 1, 4]),  # worked below
        (CYCLE_3, [2, 0, 1]),  # 0: self, beats 1, loses to 2; 1: loses to 0; 2: beats 0, loses to 1
    ],
    ids=["transitive", "tied-wins", "cycle"],
)
def test_reference_levels_leave_self_out(M: np.ndarray, expected: list[int]) -> None:
    ladder = ladder_order(M)
    assert reference_levels(M, ladder) == expected


def test_reference_levels_worked_tied_4() -> None:
    # Ladder [2, 0, 1, 3]; below 3 the cycle is 2 > 0 (0.20 > 0.10), 0 > 1 (0.55 > 0.50),
    # 1 > 2 (0.45 > 0.30). R1 = ref 2: own rung, beats 0, loses to 1 -> level 2 (rungs
    # counted on the original ladder). Ref 0 loses to R1 -> 0, even though it beats 1.
    results = reference_level_results(TIED_4, [2, 0, 1, 3])
    assert [r.wins for r in results] == [
        [True, True, False, False],  # ref 2: self, beats 0, loses to 1, loses to 3
        [False, True, True, False],  # ref 0: loses to 2
        [True, False, True, False],  # ref 1: beats 2, loses to 0
        [True, True, True, True],  # ref 3: beats everyone
    ]
    assert [r.level for r in results] == [2, 0, 1, 4]
    assert [r.deciding for r in results] == [2, 0, 1, 2]  # ref 3's own rung is never deciding


def test_reference_level_never_decided_by_own_rung() -> None:
    # Two references, the stronger one beats the other: its own rung (top) is skipped,
    # so the deciding comparison is the win against R1.
    M = np.array([[0.5, 0.2], [0.8, 0.5]])
    top = reference_level_results(M, [0, 1])[1]
    assert top == LevelResult(level=2, wins=[True, True], deciding=0, deciding_reference=0)
    assert reference_level_results(np.ones((1, 1)), [0])[0] == LevelResult(1, [True], None, None)


def test_reference_levels_ignore_white_box_diagonal() -> None:
    M = TRANSITIVE_3.copy()
    np.fill_diagonal(M, 1.0)
    assert reference_levels(M, [1, 0, 2]) == reference_levels(TRANSITIVE_3, [1, 0, 2])


# --- Bradley-Terry robustness score ----------------------------------------------------


def simulate_wins(strengths: np.ndarray, games: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = strengths.size
    wins = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        p_i = 1.0 / (1.0 + math.exp(strengths[j] - strengths[i]))
        wins[i, j] = rng.binomial(games, p_i)
        wins[j, i] = games - wins[i, j]
    return wins


def scipy_fit(wins: np.ndarray, prior: float = 0.5) -> np.ndarray:
    """Independent fit: maximise the same penalised likelihood with BFGS."""
    n = wins.shape[0]
    w = np.where(~np.eye(n, dtype=bool), wins + prior, 0.0)

    def negative_ll(s: np.ndarray) -> tuple[float, np.ndarray]:
        diff = s[:, None] - s[None, :]
        prob = 1.0 / (1.0 + np.exp(-diff))
        grad = -(w.sum(axis=1) - ((w + w.T) * prob).sum(axis=1))
        return float((w * np.logaddexp(0.0, -diff)).sum()), grad

    s = minimize(negative_ll, np.zeros(n), jac=True, method="BFGS", options={"gtol": 1e-10}).x
    return s - s.mean()


@pytest.mark.parametrize(("n", "seed"), [(3, 0), (5, 1), (10, 2), (10, 3)])
def test_bradley_terry_recovers_known_strengths(n: int, seed: int) -> None:
    truth = np.random.default_rng(100 + seed).permutation(np.linspace(-2.0, 2.0, n))
    scores = bradley_terry(simulate_wins(truth, games=2000, seed=seed))
    assert list(np.argsort(scores)) == list(np.argsort(truth))
    np.testing.assert_allclose(scores, truth - truth.mean(), atol=0.15)
    assert abs(scores.mean()) < 1e-12


@pytest.mark.parametrize("wins", [simulate_wins(np.array([0.0, 1.0, -0.5, 3.0]), 300, 7),
                                  np.triu(np.full((6, 6), 500.0), 1).T,  # perfect total order
                                  np.array([[0, 7, 0, 0], [3, 0, 0, 0], [0, 0, 0, 40], [0, 0, 0, 0]])])
def test_bradley_terry_matches_independent_optimiser(wins: np.ndarray) -> None:
    np.testing.assert_allclose(bradley_terry(wins), scipy_fit(wins), atol=1e-5)


def test_bradley_terry_two_players_closed_form() -> None:
    # With two players the MLE is p1 / p0 = W1 / W0 (prior included).
    s = bradley_terry(np.array([[0, 30], [70, 0]]), prior=0.5)
    assert s[1] - s[0] == pytest.approx(math.log(70.5 / 30.5), abs=1e-9)


@pytest.mark.parametrize("wins", [np.zeros((4, 4)), np.full((5, 5), 12.0),
                                  np.array([[0, 3, 9], [3, 0, 4], [9, 4, 0]])])
def test_bradley_terry_symmetric_input_gives_equal_scores(wins: np.ndarray) -> None:
    np.testing.assert_allclose(bradley_terry(wins), 0.0, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bradley_terry_invariant_to_relabelling(seed: int) -> None:
    wins = simulate_wins(np.array([0.3, -1.0, 2.0, 0.0, 1.1]), 200, seed)
    perm = np.random.default_rng(seed).permutation(5)
    np.testing.assert_allclose(bradley_terry(wins[np.ix_(perm, perm)]), bradley_terry(wins)[perm], atol=1e-8)


def test_bradley_terry_perfect_records_are_finite_and_ordered() -> None:
    wins = np.triu(np.full((10, 10), 2000.0), 1).T  # i beats every j < i on every image
    scores = bradley_terry(wins)
    assert np.isfinite(scores).all()
    assert (np.diff(scores) > 0).all()


def test_bradley_terry_newton_finish_and_pure_mm_agree() -> None:
    wins = simulate_wins(np.array([0.0, 0.5, 1.0, -0.7]), 400, 11)
    newton_only, mm_only = bradley_terry(wins, mm_iter=0), bradley_terry(wins, mm_iter=200_000)
    np.testing.assert_allclose(newton_only, mm_only, atol=1e-8)


def test_bradley_terry_ignores_diagonal_and_handles_trivial_sizes() -> None:
    wins = simulate_wins(np.array([0.0, 1.0, 2.0]), 100, 5)
    with_diag = wins + np.diag([50.0, 0.0, 9.0])
    np.testing.assert_allclose(bradley_terry(with_diag), bradley_terry(wins))
    assert bradley_terry(np.zeros((1, 1))).tolist() == [0.0]
    assert bradley_terry(np.zeros((0, 0))).shape == (0,)


@pytest.mark.parametrize(
    ("wins", "prior"),
    [(np.zeros((2, 3)), 0.5), (np.array([[0, -1], [1, 0]]), 0.5), (np.array([[0, np.nan], [1, 0]]), 0.5),
     (np.zeros((2, 2)), 0.0)],
)
def test_bradley_terry_rejects_bad_input(wins: np.ndarray, prior: float) -> None:
    with pytest.raises(ValueError):
        bradley_terry(wins, prior=prior)


def random_correctness(n: int, m: int, seed: int) -> np.ndarray:
    # Network i is right on adv(j) with a rate rising with i: later networks are more robust.
    rng = np.random.default_rng(seed)
    rate = np.linspace(0.1, 0.8, n)[:, None, None]
    return rng.random((n, n, m)) < rate


def test_pairwise_wins_matches_per_image_loop() -> None:
    correct = random_correctness(4, 50, 3)
    expected = np.zeros((4, 4), dtype=np.int64)
    for i in range(4):
        for j in range(4):
            if i != j:
                expected[i, j] = sum(correct[i, j, k] and not correct[j, i, k] for k in range(50))
    np.testing.assert_array_equal(pairwise_wins(correct), expected)


def test_pairwise_wins_are_mcnemar_discordant_counts() -> None:
    correct = random_correctness(3, 80, 4)
    M = correct.mean(axis=2)
    wins = pairwise_wins(correct)
    for a, b in itertools.permutations(range(3), 2):
        result = pairwise(M, a, b, correct)
        expected = binomtest(int(min(wins[a, b], wins[b, a])), int(wins[a, b] + wins[b, a])).pvalue
        assert result.p_value == pytest.approx(expected, rel=1e-9)
        # The charter's rule and the win counts agree: M[a][b] - M[b][a] = (b - c) / m.
        assert result.difference == pytest.approx((wins[a, b] - wins[b, a]) / 80)


def test_robustness_scores_order_follows_simulated_robustness() -> None:
    scores = robustness_scores(random_correctness(5, 2000, 5))
    assert (np.diff(scores) > 0).all()


def test_robustness_scores_from_mapping_with_missing_pairs() -> None:
    correct = random_correctness(3, 200, 6)
    full = {(a, b): correct[a, b] for a, b in itertools.permutations(range(3), 2)}
    np.testing.assert_allclose(robustness_scores(full), robustness_scores(correct))
    # Pair (0, 2) not evaluated yet: still defined, and network 2 still ranks above 1 above 0.
    partial = {key: value for key, value in full.items() if set(key) != {0, 2}}
    scores = robustness_scores(partial)
    assert np.isfinite(scores).all() and (np.diff(scores) > 0).all()
    # A mapping whose highest index has no entries needs n.
    assert robustness_scores({(0, 1): correct[0, 1], (1, 0): correct[1, 0]}, n=3).shape == (3,)
