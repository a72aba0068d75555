"""The pure functions of bench/scaling_sim.py (the sparse-rule simulation of docs/SCALING.md)."""

from __future__ import annotations

import numpy as np

from bench import scaling_sim as sim
from evaluator.engine import ladder as ladder_engine


def test_synthetic_suite_is_consistent() -> None:
    suite = sim.synthetic_suite(30, 5, images=400, seed=1)
    n = 35
    assert suite.M.shape == (n, n) and suite.wins.shape == (n, n)
    assert suite.refs == [0, 1, 2, 3, 4]
    assert ((suite.M >= 0) & (suite.M <= 1)).all() and (suite.wins.diagonal() == 0).all()
    # Win counts and accuracies come from the same per-image draw: on adv(a) + adv(b),
    # (a right only) - (b right only) = images * (M[a][a] + M[a][b] - M[b][a] - M[b][b]).
    white = suite.M.diagonal()
    assert np.allclose(suite.wins - suite.wins.T,
                       np.rint(400 * (suite.M - suite.M.T + white[:, None] - white[None, :])))
    assert white.mean() < suite.M[~np.eye(n, dtype=bool)].mean()  # white-box is the strongest attack
    # References sit at increasing latent quantiles; robust networks win more.
    assert (np.diff(suite.latent[:5]) > 0).all()
    assert np.corrcoef(suite.latent, suite.wins.sum(axis=1))[0, 1] > 0.8


def test_sparse_pairs_cover_references_and_respect_k_and_m() -> None:
    suite = sim.synthetic_suite(40, 4, images=200, seed=2)
    n = 44
    only_refs = sim.sparse_pairs(suite, 0, 0, seed=0)
    assert (only_refs == only_refs.T).all() and not only_refs.diagonal().any()
    assert only_refs[:4, :].sum() + only_refs[4:, :4].sum() == only_refs.sum()  # nothing but reference pairs
    assert only_refs[:4, 4:].all() and only_refs[np.ix_(range(4), range(4))].sum() == 4 * 3
    rule = sim.sparse_pairs(suite, 3, 2, seed=0)
    upload_pairs = rule[4:, 4:].sum() // 2
    assert 0 < upload_pairs <= 40 * 5
    assert rule[:4, :].sum() == only_refs[:4, :].sum()
    # Every upload after the sixth met k + m earlier ones.
    assert (rule[4:, 4:].sum(axis=1) >= 5).sum() >= 40 - 6
    assert rule[:4].any(axis=0)[4:].all()
    assert sim.sparse_pairs(suite, 3, 2, seed=0).tolist() == rule.tolist()  # deterministic
    assert n == rule.shape[0]


def test_full_mask_changes_nothing_and_levels_only_read_references() -> None:
    suite = sim.synthetic_suite(25, 5, images=300, seed=3)
    n = 30
    everything = ~np.eye(n, dtype=bool)
    same = sim.compare(suite, everything)
    assert same["level_changes"] == 0 and same["score_shift_mean_sd"] < 1e-9
    assert same["rank_moved_max"] == 0 and same["within_level_flips"] == 0.0
    assert same["evaluations"] == same["evaluations_full"] == 2 * n + n * (n - 1)
    sparse = sim.compare(suite, sim.sparse_pairs(suite, 0, 0, seed=0))
    # Levels and scores read only pairs with a reference (issue 16): nothing changes.
    assert sparse["level_changes"] == 0 and sparse["score_shift_mean_sd"] == 0.0
    assert sparse["rank_moved_max"] == 0
    assert sparse["evaluations"] < sparse["evaluations_full"]
    noise = sim.compare(suite, None, other=sim.observe(*sim.true_accuracies(25, 5, seed=3), 5, images=300, seed=99))
    assert noise["score_shift_mean_sd"] > 0  # the noise floor is not trivially zero


def test_levels_and_scores_are_the_engines() -> None:
    # Robustness increases with the index: a beats b iff a > b, so with references
    # 0, 2, 4 (R1..R3) the engine's one scale gives R_k level k - 1, uploads between.
    n = 6
    idx = np.arange(n)
    wins = np.maximum(0, 10 * (idx[:, None] - idx[None, :]))
    refs = [0, 2, 4]
    assert sim.levels(wins, refs).tolist() == [0, 1, 1, 2, 2, 3]
    order = ladder_engine.ladder_order(wins, among=refs)
    assert sim.levels(wins, refs).tolist() == [r.level for r in ladder_engine.level_results(wins, order)]
    np.testing.assert_array_equal(sim.scores(wins, refs), ladder_engine.robustness_scores(wins, refs))
    assert (np.diff(sim.scores(wins, refs)) > 0).all()


def test_ordering_helpers() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([2.0, 1.0, 3.0, 4.0])
    assert sim.kendall_flips(a, b, np.zeros(4, dtype=int)) == (1, 6)
    assert sim.kendall_flips(a, b, np.array([0, 1, 0, 1])) == (0, 2)
    positions = sim.leaderboard_order(np.array([1, 2, 2, 0]), np.array([0.5, 0.1, 0.9, 3.0]))
    assert positions.tolist() == [2, 1, 0, 3]


def test_observed_wins_have_the_per_image_expectation() -> None:
    # E wins[a][b] = images (p_aa (1 - p_ba) + p_ab (1 - p_bb)): a right, b wrong on adv(a) + adv(b).
    latent, p = sim.true_accuracies(2, 1, seed=4)
    images = 200_000
    suite = sim.observe(latent, p, 1, images=images, seed=5)
    d = p.diagonal()
    expected = images * (d[:, None] * (1 - p.T) + p * (1 - d[None, :]))
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(suite.wins, expected, rtol=0.02, atol=1)
    np.testing.assert_allclose(suite.M, p, atol=0.01)
