"""Ranking over plain data: the revised pairwise rule (and the charter's, shown only),
ladder order, one level scale for references and uploads, fixed reference scores.

Hand-built per-image outcomes with answers worked out by hand, plus independent
re-computations (SciPy's binomtest and optimiser, a brute-force likelihood grid).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import binomtest

from evaluator.engine.ladder import (
    LevelResult, accuracy_matrix, beats, bradley_terry, charter_pairwise, compare, ladder_order, level,
    level_of, level_results, paired_outcomes, pairwise, pairwise_wins, place_score, reference_scores,
    robustness_scores,
)


def from_counts(K: np.ndarray, images: int) -> dict[tuple[int, int], np.ndarray]:
    """Per-image correctness where network a is right on the first K[a][b] images of
    adv(b) (diagonal: white-box). Nested prefixes make every count easy by hand:
    a right and b wrong on adv(s) = max(0, K[a][s] - K[b][s])."""
    n = K.shape[0]
    return {(a, b): np.arange(images) < K[a, b] for a in range(n) for b in range(n)}


def random_correctness(n: int, m: int, seed: int) -> np.ndarray:
    """(n, n, m): network i right on adv(j) at a rate rising with i (later: more robust)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, n, m)) < np.linspace(0.1, 0.8, n)[:, None, None]


def with_copy(correct: np.ndarray, k: int) -> np.ndarray:
    """Append an exact copy of network k: identical predictions everywhere, and its
    adversarial set is k's (a white-box attack on the same function)."""
    n = correct.shape[0]
    src = list(range(n)) + [k]  # the copy (index n) behaves as k, on its set and as attacker
    return correct[np.ix_(src, src)]


# --- the two pairwise rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_only", "b_only", "significant"), [(3, 1, False), (20, 5, True), (5, 20, True), (12, 12, False), (0, 0, False)]
)
def test_compare_counts_and_exact_mcnemar(a_only: int, b_only: int, significant: bool) -> None:
    a_ok = np.array([True] * a_only + [False] * b_only + [True] * 30 + [False] * 20)
    b_ok = np.array([False] * a_only + [True] * b_only + [True] * 30 + [False] * 20)
    c = compare(a_ok, b_ok, a=4, b=7)
    assert (c.a, c.b, c.images) == (4, 7, a_only + b_only + 50)
    assert (c.a_correct, c.b_correct, c.a_only, c.b_only) == (a_only + 30, b_only + 30, a_only, b_only)
    expected_p = binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    assert c.p_value == pytest.approx(expected_p, rel=1e-9)
    assert c.significant is significant
    assert (c.a_wins, c.b_wins, c.tie) == (a_only > b_only, b_only > a_only, a_only == b_only)
    assert c.difference == pytest.approx((a_only - b_only) / c.images)
    assert c.as_dict()["acc_a"] == c.acc_a


# Four cells (correct counts of 10 images): a on adv(a), a on adv(b), b on adv(a), b on adv(b).
@pytest.mark.parametrize(
    ("aa", "ab", "ba", "bb", "revised", "charter"),
    [
        (5, 6, 4, 3, "a", "a"),  # 11 vs 7; charter 6 vs 4
        (1, 9, 2, 8, "tie", "a"),  # 10 vs 10: a tie, though the charter sees 9 vs 2
        (0, 9, 0, 8, "a", "a"),  # 9 vs 8
        (2, 7, 3, 6, "tie", "a"),  # 9 vs 9 is a tie; charter 7 vs 3
        (6, 2, 2, 6, "tie", "tie"),
        (9, 1, 0, 3, "a", "a"),
        (1, 3, 0, 5, "b", "a"),  # 4 vs 5: the charter's winner loses
    ],
)
def test_revised_rule_reads_all_four_cells(aa, ab, ba, bb, revised, charter) -> None:
    K = np.array([[aa, ab], [ba, bb]])
    correct = from_counts(K, 10)
    r = pairwise(correct, 0, 1)
    assert (r.images, r.a_correct, r.b_correct) == (20, aa + ab, ba + bb)
    assert {"a": (True, False), "b": (False, True), "tie": (False, False)}[revised] == (r.a_wins, r.b_wins)
    c = charter_pairwise(correct, 0, 1)
    assert (c.images, c.a_correct, c.b_correct) == (10, ab, ba)
    assert {"a": (True, False), "b": (False, True), "tie": (False, False)}[charter] == (c.a_wins, c.b_wins)
    mirrored = pairwise(correct, 1, 0)
    assert (mirrored.a_wins, mirrored.b_wins, mirrored.p_value) == (r.b_wins, r.a_wins, r.p_value)


def test_paired_outcomes_are_adv_a_then_adv_b_in_every_layout() -> None:
    cube = random_correctness(3, 40, 1)
    x, y = paired_outcomes(cube, 0, 2)
    np.testing.assert_array_equal(x, np.concatenate([cube[0, 0], cube[0, 2]]))
    np.testing.assert_array_equal(y, np.concatenate([cube[2, 0], cube[2, 2]]))
    nested = [[cube[a, b] for b in range(3)] for a in range(3)]
    mapping = {(a, b): cube[a, b] for a in range(3) for b in range(3)}
    for layout in (nested, mapping):
        assert pairwise(layout, 0, 2) == pairwise(cube, 0, 2)
        assert charter_pairwise(layout, 0, 2) == charter_pairwise(cube, 0, 2)
    for missing in [(0, 0), (2, 2), (0, 2), (2, 0)]:  # the revised rule needs all four cells
        with pytest.raises(ValueError):
            pairwise({k: v for k, v in mapping.items() if k != missing}, 0, 2)
    with pytest.raises(ValueError):
        pairwise(cube, 1, 1)


def undefended_world(n: int = 100) -> tuple[dict[tuple[int, int], np.ndarray], list[int], int]:
    """References 0, 1, 2 (white-box 35 / 40 / 50%, their attacks transfer poorly) and
    U = 3: an undefended CNN with 2% white-box accuracy whose attack fools every
    reference on every image, while it keeps 30% on their attacks."""
    K = np.array([
        [35, 35, 35, 0],
        [45, 40, 45, 0],
        [60, 60, 50, 0],
        [30, 30, 30, 2],
    ]) * n // 100
    return from_counts(K, n), [0, 1, 2], 3


def test_undefended_cnn_wins_under_the_charter_and_loses_under_the_revised_rule() -> None:
    correct, refs, u = undefended_world()
    wins = pairwise_wins(correct)
    ladder = ladder_order(wins, among=refs)
    assert ladder == [0, 1, 2]
    # Charter: U on adv(R) = 30% > R on adv(U) = 0% against every reference: level 3.
    charter = [charter_pairwise(correct, u, r) for r in ladder]
    assert all(c.a_wins and c.significant for c in charter)
    assert level([c.a_wins for c in charter]) == 3
    # Revised: on adv(U) + adv(R) U is right on 2 + 30 = 32 of 200 images, R on 0 + 35..50.
    strongest = pairwise(correct, u, 2)
    assert (strongest.a_correct, strongest.b_correct) == (32, 50)
    assert strongest.b_wins and strongest.significant
    result = level_of(wins, u, ladder)
    assert result == LevelResult(level=0, wins=[False, False, False], deciding=0, deciding_reference=0)


# --- revised win counts and the matrix they replace ------------------------------------


def test_pairwise_wins_match_paired_outcomes_and_mcnemar() -> None:
    cube = random_correctness(4, 60, 3)
    wins = pairwise_wins(cube)
    assert (wins.diagonal() == 0).all()
    for a, b in itertools.permutations(range(4), 2):
        x, y = paired_outcomes(cube, a, b)
        assert wins[a, b] == np.count_nonzero(x & ~y)
        r = pairwise(cube, a, b)
        assert wins[a, b] - wins[b, a] == r.a_correct - r.b_correct
        assert r.p_value == pytest.approx(binomtest(int(min(wins[a, b], wins[b, a])),
                                                    int(wins[a, b] + wins[b, a])).pvalue, rel=1e-9)
        assert beats(wins, a, b) == r.a_wins
    np.testing.assert_allclose(accuracy_matrix(cube), cube.mean(axis=2))  # white-box diagonal included
    assert np.isnan(accuracy_matrix({(0, 0): np.ones(3, bool)}, 2)[0, 1])


def test_pairwise_wins_without_a_cell_carry_no_evidence() -> None:
    cube = random_correctness(3, 50, 4)
    full = {(a, b): cube[a, b] for a in range(3) for b in range(3)}
    np.testing.assert_array_equal(pairwise_wins(full), pairwise_wins(cube))
    no_pair = {k: v for k, v in full.items() if set(k) != {0, 2}}
    no_diag = {k: v for k, v in full.items() if k != (2, 2)}
    for partial, zero in ((no_pair, [(0, 2)]), (no_diag, [(0, 2), (1, 2)])):
        wins = pairwise_wins(partial, 3)
        for a, b in zero:
            assert wins[a, b] == wins[b, a] == 0
        assert wins[0, 1] == pairwise_wins(cube)[0, 1]


# --- ladder order ----------------------------------------------------------------------

# W[a][b] (revised wins). Transitive: 2 beats 0 and 1, 0 beats 1 -> [1, 0, 2].
TRANSITIVE_3 = np.array([[0, 30, 10], [20, 0, 5], [40, 50, 0]])
# Cycle 0 > 1 > 2 > 0: one win each.
CYCLE_3 = np.array([[0, 30, 10], [20, 0, 30], [40, 20, 0]])


@pytest.mark.parametrize(
    ("wins", "robust", "expected"),
    [
        (TRANSITIVE_3, None, [1, 0, 2]),
        (TRANSITIVE_3, [0.9, 0.9, 0.0], [1, 0, 2]),  # robust accuracy only breaks ties
        (CYCLE_3, [0.3, 0.1, 0.2], [1, 2, 0]),
        (CYCLE_3, None, [0, 1, 2]),  # no tie-break given: by index
        (np.zeros((3, 3), int), [0.2, 0.2, 0.1], [2, 0, 1]),
        (np.zeros((1, 1), int), None, [0]),
        (np.zeros((0, 0), int), None, []),
    ],
)
def test_ladder_order_by_wins_then_robust_accuracy(wins, robust, expected) -> None:
    assert ladder_order(wins, robust=robust) == expected


def test_ladder_order_falls_back_to_mean_transfer_accuracy() -> None:
    # Cycle: the mean of M[a][b] over the other references (diagonal ignored) decides.
    M = np.array([[0.99, 0.60, 0.30], [0.40, 0.0, 0.65], [0.70, 0.50, 0.0]])
    assert ladder_order(CYCLE_3, M=M) == [0, 1, 2]  # 0.45 < 0.525 < 0.60
    assert ladder_order(CYCLE_3, M=M, robust=[0.5, 0.4, 0.3]) == [2, 1, 0]  # robust wins over M


def test_ladder_order_among_a_subset_and_relabelling() -> None:
    big = np.full((5, 5), 99)
    refs = [1, 3, 4]
    big[np.ix_(refs, refs)] = TRANSITIVE_3
    assert ladder_order(big, among=refs) == [3, 1, 4]
    for perm in itertools.permutations(range(3)):
        order = ladder_order(TRANSITIVE_3[np.ix_(perm, perm)], robust=None)
        assert [perm[i] for i in order] == [1, 0, 2]
    for bad in ({"among": [0, 0]}, {"robust": [0.1, math.nan, 0.2]}):
        with pytest.raises(ValueError):
            ladder_order(TRANSITIVE_3, **bad)


# --- levels: one scale for references and uploads --------------------------------------


@pytest.mark.parametrize(
    ("wins", "expected"),
    [([], 0), ([False], 0), ([False, True, True], 0), ([True], 1), ([True, False, True, True], 1),
     ([True, True, False], 2), ([True, True, True, True], 4)],
)
def test_level_stops_at_the_first_non_win(wins: list[bool], expected: int) -> None:
    assert level(wins) == expected


# 10 images per set. References 0 < 1 < 2 (worked in the comments), X = 3 given by its
# white-box count, its counts on adv(R1..R3) and the references' counts on adv(X).
REFS_K = np.array([[2, 3, 2], [5, 4, 3], [7, 6, 6]])


@pytest.mark.parametrize(
    ("x_white", "x_row", "x_col", "wins", "lvl", "deciding"),
    [
        # X vs R1: 3+6=9 vs 4+2=6 win; vs R2: 3+5=8 vs 4+4=8 tie (charter: 5 > 4 a win); stops.
        (3, [6, 5, 1], [4, 4, 8], [True, False, False], 1, 1),
        (0, [1, 9, 9], [4, 0, 0], [False, True, True], 0, 0),  # 0+1 vs 4+2: loses to R1
        (8, [9, 9, 9], [0, 0, 0], [True, True, True], 3, 2),  # beats all: deciding is the top
        (5, [5, 2, 9], [0, 5, 0], [True, False, True], 1, 1),  # 7 vs 9 to R2; later win ignored
        (2, [3, 4, 2], [3, 4, 2], [False, False, False], 0, 0),  # R1's own numbers: 5 vs 5 tie
    ],
)
def test_level_of_hand_built_outcomes(x_white, x_row, x_col, wins, lvl, deciding) -> None:
    K = np.zeros((4, 4), dtype=int)
    K[:3, :3], K[3, :3], K[:3, 3], K[3, 3] = REFS_K, x_row, x_col, x_white
    W = pairwise_wins(from_counts(K, 10))
    ladder = ladder_order(W, among=[0, 1, 2])
    assert ladder == [0, 1, 2]  # R1 4 vs 9 to R2, R1 4 vs 13 to R3, R2 7 vs 12 to R3
    assert level_of(W, 3, ladder) == LevelResult(lvl, wins, deciding, deciding_reference=deciding)
    # References on the same scale: own rung stops the climb, so R_k reaches k - 1.
    assert [r.level for r in level_results(W, ladder)[:3]] == [0, 1, 2]
    assert [r.deciding for r in level_results(W, ladder)[:3]] == [0, 1, 2]


def test_first_reference_gets_level_zero_when_it_beats_nobody() -> None:
    W = pairwise_wins(from_counts(np.array([[1, 1, 1], [5, 5, 5], [9, 9, 9]]), 10))
    results = level_results(W, [0, 1, 2])
    assert results[0] == LevelResult(level=0, wins=[False, False, False], deciding=0, deciding_reference=0)
    assert [r.level for r in results] == [0, 1, 2]
    assert level_of(np.zeros((1, 1), int), 0, [0]) == LevelResult(0, [False], 0, 0)  # lone reference
    assert level_of(W, 0, []) == LevelResult(0, [], None, None)
    W = TRANSITIVE_3 + np.diag([5, 5, 5])  # a stray diagonal never makes a network beat itself
    assert not beats(W, 2, 2) and [r.level for r in level_results(W, [1, 0, 2])] == [1, 0, 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_exact_copy_of_a_reference_gets_its_level(seed: int, k: int) -> None:
    cube = random_correctness(4, 200, seed)
    W = pairwise_wins(with_copy(cube, k))
    ladder = ladder_order(W, among=[0, 1, 2, 3])
    results = level_results(W, ladder)
    assert W[4, k] == W[k, 4] == 0  # identical predictions: a tie
    assert results[4].level == results[k].level
    assert results[k].level <= ladder.index(k)  # at most position - 1 (1-based)
    assert results[4].wins == results[k].wins


# --- Bradley-Terry (unchanged fit) -----------------------------------------------------


def simulate_wins(strengths: np.ndarray, games: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = strengths.size
    wins = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        wins[i, j] = rng.binomial(games, 1.0 / (1.0 + math.exp(strengths[j] - strengths[i])))
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


@pytest.mark.parametrize(("n", "seed"), [(3, 0), (5, 1), (10, 2)])
def test_bradley_terry_recovers_known_strengths(n: int, seed: int) -> None:
    truth = np.random.default_rng(100 + seed).permutation(np.linspace(-2.0, 2.0, n))
    scores = bradley_terry(simulate_wins(truth, games=2000, seed=seed))
    assert list(np.argsort(scores)) == list(np.argsort(truth))
    np.testing.assert_allclose(scores, truth - truth.mean(), atol=0.15)


@pytest.mark.parametrize("wins", [simulate_wins(np.array([0.0, 1.0, -0.5, 3.0]), 300, 7),
                                  np.triu(np.full((6, 6), 500.0), 1).T,  # perfect total order
                                  np.array([[0, 7, 0, 0], [3, 0, 0, 0], [0, 0, 0, 40], [0, 0, 0, 0]])])
def test_bradley_terry_matches_independent_optimiser(wins: np.ndarray) -> None:
    np.testing.assert_allclose(bradley_terry(wins), scipy_fit(wins), atol=1e-5)
    np.testing.assert_allclose(bradley_terry(wins, mm_iter=0), bradley_terry(wins), atol=1e-8)


def test_bradley_terry_edge_cases() -> None:
    s = bradley_terry(np.array([[0, 30], [70, 0]]), prior=0.5)
    assert s[1] - s[0] == pytest.approx(math.log(70.5 / 30.5), abs=1e-9)  # two players: W1 / W0
    np.testing.assert_allclose(bradley_terry(np.full((4, 4), 12.0)), 0.0, atol=1e-9)
    assert bradley_terry(np.zeros((1, 1))).tolist() == [0.0] and bradley_terry(np.zeros((0, 0))).shape == (0,)
    for bad, prior in ((np.zeros((2, 3)), 0.5), (np.array([[0, -1], [1, 0]]), 0.5), (np.zeros((2, 2)), 0.0)):
        with pytest.raises(ValueError):
            bradley_terry(bad, prior=prior)


# --- scores: references fixed, uploads placed against them -----------------------------


def brute_force_placement(won: np.ndarray, lost: np.ndarray, anchors: np.ndarray, prior: float = 0.5) -> float:
    """Grid maximisation of the same likelihood, refined once around the best point."""
    best = 0.0
    for lo, hi, step in ((-30.0, 30.0, 1e-3), (-2e-3, 2e-3, 1e-7)):
        grid = best + np.arange(lo, hi, step)
        diff = grid[:, None] - anchors[None, :]
        ll = -((won + prior) * np.logaddexp(0.0, -diff) + (lost + prior) * np.logaddexp(0.0, diff)).sum(axis=1)
        best = float(grid[np.argmax(ll)])
    return best


@pytest.mark.parametrize(
    ("won", "lost", "anchors"),
    [
        ([30, 10, 2], [10, 30, 50], [-1.0, 0.2, 0.8]),
        ([200, 150, 120, 90], [0, 0, 0, 0], [-1.5, -0.5, 0.5, 1.5]),  # perfect record: finite
        ([0, 0], [400, 300], [0.0, 0.4]),
        ([12], [12], [0.7]),  # even record against one anchor: its score
        ([0, 0, 0], [0, 0, 0], [-2.0, 0.0, 5.0]),  # no evidence: pulled to the anchors by the prior
    ],
)
def test_place_score_equals_brute_force_grid(won, lost, anchors) -> None:
    won, lost, anchors = (np.array(v, dtype=float) for v in (won, lost, anchors))
    s = place_score(won, lost, anchors)
    assert math.isfinite(s)
    assert s == pytest.approx(brute_force_placement(won, lost, anchors), abs=1e-6)


def test_place_score_of_a_reference_is_its_bradley_terry_score() -> None:
    # The joint fit's stationarity condition for one player is exactly the 1-D placement.
    W = simulate_wins(np.array([-1.0, 0.0, 0.5, 2.0]), 300, 3)
    fitted = bradley_terry(W)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        assert place_score(W[i, others], W[others, i], fitted[others]) == pytest.approx(fitted[i], abs=1e-8)


def test_place_score_edges() -> None:
    assert place_score([], [], []) == 0.0
    assert place_score([10, 10], [1, 1], [0.0, 0.0]) > place_score([5, 5], [6, 6], [0.0, 0.0])
    for bad in (([1], [1, 2], [0.0, 0.0]), ([-1], [1], [0.0]), ([1], [np.nan], [0.0])):
        with pytest.raises(ValueError):
            place_score(*bad)


def scored_world(uploads: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Revised wins for 4 references (0..3) and `uploads` uploads, every pair evaluated."""
    return pairwise_wins(random_correctness(4 + uploads, 300, seed)), [0, 1, 2, 3]


def test_uploads_never_move_reference_scores_or_each_other() -> None:
    cube = random_correctness(6, 300, 0)  # references 0..3, uploads 4 and 5
    refs = [0, 1, 2, 3]
    refs_only = pairwise_wins(cube[:4, :4])
    base = reference_scores(refs_only, refs)
    np.testing.assert_allclose([base[r] for r in refs], bradley_terry(refs_only))
    # (a) one upload: the reference scores are exactly those fitted among references only.
    one = pairwise_wins(cube[:5, :5])
    first = robustness_scores(one, refs)
    np.testing.assert_array_equal(first[:4], robustness_scores(refs_only, refs))
    # (b) a second upload (compared with the first too) leaves the first one's score.
    two = pairwise_wins(cube)
    assert two[4, 5] + two[5, 4] > 0  # the uploads do have evidence against each other
    second = robustness_scores(two, refs)
    np.testing.assert_array_equal(second[:5], first)
    # A joint fit over everyone would have moved them: the property is not vacuous.
    assert not np.allclose(bradley_terry(two)[:4] - bradley_terry(two)[:4].mean(), first[:4], atol=1e-6)
    # (c) each upload's score is the brute-force maximum against the fixed references.
    for u in (4, 5):
        expected = brute_force_placement(two[u, :4].astype(float), two[:4, u].astype(float), second[:4])
        assert second[u] == pytest.approx(expected, abs=1e-6)


def test_fixed_reference_scores_are_used_verbatim() -> None:
    W, refs = scored_world(2, seed=5)
    fixed = {0: -3.0, 1: -1.0, 2: 1.0, 3: 3.0}
    scores = robustness_scores(W, refs, fixed=fixed)
    assert scores[:4].tolist() == [-3.0, -1.0, 1.0, 3.0]
    assert scores[4] == place_score(W[4, :4], W[:4, 4], [-3.0, -1.0, 1.0, 3.0])
    with pytest.raises(ValueError):
        robustness_scores(W, refs, fixed={0: 0.0, 1: 0.0})


def test_scores_follow_simulated_robustness() -> None:
    W, refs = scored_world(3, seed=6)  # robustness rises with the index
    refs_scores = robustness_scores(W[:4, :4], refs)
    assert (np.diff(refs_scores) > 0).all()
    assert (np.diff(robustness_scores(W, refs)[4:]) > 0).all()
