"""bench/scaling_sim.py (the sparse-rule simulation of docs/SCALING.md), run the way a
reader runs it (`python -m bench.scaling_sim`, tiny arguments): its dumped matrices,
masks and comparisons are checked here against the engine and against definitions
computed again from the dumped arrays. The tests never import bench/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluator.engine import ladder as ladder_engine

ROOT = Path(__file__).resolve().parent.parent
UPLOADS, REFS, IMAGES = 30, 5, 400
N = UPLOADS + REFS


def _run(tmp: Path, *args: str) -> tuple[str, dict, dict]:
    out = subprocess.run([sys.executable, "-m", "bench.scaling_sim", *args, "--seeds", "1", "--dump", str(tmp / "sim.npz")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    with np.load(tmp / "sim.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return out.stdout, arrays, json.loads(str(arrays.pop("summary")))


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> tuple[str, dict, dict]:
    return _run(tmp_path_factory.mktemp("sim"), "--uploads", str(UPLOADS), "--references", str(REFS),
                "--images", str(IMAGES), "--rules", "0:0,3:2")


def _seen(mask: np.ndarray) -> np.ndarray:
    return mask | np.eye(len(mask), dtype=bool)


def _positions(levels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Leaderboard position of each network: level, then score, both descending."""
    order = sorted(range(len(levels)), key=lambda i: (-levels[i], -scores[i]))
    return np.array([order.index(i) for i in range(len(levels))])


def test_the_synthetic_suite_is_consistent(sim) -> None:
    _, a, _ = sim
    M, wins, latent = a["M"], a["wins"], a["latent"]
    assert M.shape == wins.shape == (N, N) and a["refs"].tolist() == list(range(REFS))
    assert ((M >= 0) & (M <= 1)).all() and (wins.diagonal() == 0).all()
    # Win counts and accuracies come from the same per-image draw: on adv(a) + adv(b),
    # (a right only) - (b right only) = images * (M[a][a] + M[a][b] - M[b][a] - M[b][b]).
    white = M.diagonal()
    assert np.allclose(wins - wins.T, np.rint(IMAGES * (M - M.T + white[:, None] - white[None, :])))
    assert white.mean() < M[~np.eye(N, dtype=bool)].mean()  # white-box is the strongest attack
    # References sit at increasing latent quantiles; robust networks win more.
    assert (np.diff(latent[:REFS]) > 0).all()
    assert np.corrcoef(latent, wins.sum(axis=1))[0, 1] > 0.8


def test_levels_and_scores_are_the_engines(sim) -> None:
    _, a, _ = sim
    refs = a["refs"].tolist()
    order = ladder_engine.ladder_order(a["wins"], among=refs, M=a["M"])
    assert a["levels"].tolist() == [r.level for r in ladder_engine.level_results(a["wins"], order)]
    np.testing.assert_array_equal(a["scores"], ladder_engine.robustness_scores(a["wins"], refs))


def test_masks_cover_the_references_and_respect_k_and_m(sim) -> None:
    _, a, _ = sim
    only_refs, rule = a["mask_0_0"], a["mask_3_2"]
    for mask in (only_refs, rule):
        assert (mask == mask.T).all() and not mask.diagonal().any()
        assert mask[:REFS, REFS:].all() and mask[:REFS, :REFS].sum() == REFS * (REFS - 1)
    assert not only_refs[REFS:, REFS:].any()  # nothing but reference pairs
    upload_pairs = rule[REFS:, REFS:].sum() // 2
    assert 0 < upload_pairs <= UPLOADS * 5
    # Every upload after the sixth to arrive met k + m = 5 earlier ones.
    assert (rule[REFS:, REFS:].sum(axis=1) >= 5).sum() >= UPLOADS - 6


def test_the_rule_changes_no_level_and_no_score(sim) -> None:
    """Levels and scores read only pairs with a reference (issue 16): a rule that
    evaluates every reference pair changes nothing; the counts are the masks'."""
    _, a, summary = sim
    for key, mask in (("0:0", a["mask_0_0"]), ("3:2", a["mask_3_2"]), ("full", ~np.eye(N, dtype=bool))):
        s = summary[key]
        assert s["level_changes"] == 0 and s["score_shift_mean_sd"] == 0.0, key
        assert s["rank_moved_max"] == 0 and s["within_level_flips"] == 0.0, key
        assert s["evaluations"] == 2 * N + 2 * int(np.triu(mask, 1).sum()), key
        assert s["evaluations_full"] == 2 * N + N * (N - 1)
    assert summary["0:0"]["evaluations"] < summary["3:2"]["evaluations"] < summary["full"]["evaluations"]


def test_the_noise_floor_is_recomputed_from_the_second_draw(sim) -> None:
    _, a, summary = sim
    noise = summary["noise"]
    refs = a["refs"].tolist()
    order = ladder_engine.ladder_order(a["noise_wins"], among=refs, M=a["noise_M"])
    again_levels = np.array([r.level for r in ladder_engine.level_results(a["noise_wins"], order)])
    again_scores = ladder_engine.robustness_scores(a["noise_wins"], refs)
    assert noise["level_changes"] == int((again_levels != a["levels"]).sum())
    shift = np.abs(again_scores - a["scores"]) / a["scores"].std()
    assert noise["score_shift_mean_sd"] == pytest.approx(shift.mean()) and noise["score_shift_mean_sd"] > 0
    moved = np.abs(_positions(a["levels"], a["scores"]) - _positions(again_levels, again_scores))
    assert noise["rank_moved_mean"] == pytest.approx(moved.mean())
    assert noise["rank_moved_max"] == moved.max()
    same = a["levels"][:, None] == a["levels"][None, :]
    pairs = np.triu(same, 1)
    flips = pairs & (np.sign(a["scores"][:, None] - a["scores"][None, :])
                     * np.sign(again_scores[:, None] - again_scores[None, :]) < 0)
    assert noise["within_level_flips"] == pytest.approx(flips.sum() / pairs.sum())


def test_the_table_reports_the_dumped_comparisons(sim) -> None:
    stdout, _, summary = sim
    assert f"{N} networks ({REFS} references), {IMAGES} images per set" in stdout
    assert f"full matrix: {2 + 2 * (N - 1)} evaluations per upload at N={N}" in stdout
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in stdout.splitlines() if line.startswith("| refs + ")}
    for label, key in (("refs + top-0 + 0 random", "0:0"), ("refs + top-3 + 2 random", "3:2")):
        s = summary[key]
        assert rows[label][0] == str(2 + 2 * (REFS + int(key[0]) + int(key[2])))  # evaluations per upload
        assert rows[label][1] == f"{s['evaluations'] / s['evaluations_full']:.1%}"
        assert rows[label][2] == str(s["level_changes"])


def test_observed_wins_have_the_per_image_expectation(tmp_path) -> None:
    # E wins[a][b] = images (p_aa (1 - p_ba) + p_ab (1 - p_bb)): a right, b wrong on adv(a) + adv(b).
    images = 200_000
    _, a, _ = _run(tmp_path, "--uploads", "2", "--references", "1", "--images", str(images), "--rules", "0:0")
    p = a["p"]
    d = p.diagonal()
    expected = images * (d[:, None] * (1 - p.T) + p * (1 - d[None, :]))
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(a["wins"], expected, rtol=0.02, atol=1)
    np.testing.assert_allclose(a["M"], p, atol=0.01)
