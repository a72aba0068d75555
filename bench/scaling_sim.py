"""What the sparse comparison rule changes, on synthetic cross-attack matrices.

    .venv/bin/python -m bench.scaling_sim [--uploads 500] [--seeds 3] [--rules 0:0,10:10,10:30,...] [--rank-cost 100,200,400]

The full matrix costs N(N-1) evaluations; past a few thousand networks it is replaced by
the rule "every network against every reference, plus the current top-k and a random
sample of m others" (2 + 2(R + k + m) evaluations per upload). This script checks what
that does to the ranking, with the engine's own functions (engine.ladder: revised
pairwise rule, ladder_order, level_results, robustness_scores):

  model   latent robustness r ~ N(0, 1) per network (the R references at evenly spaced
          quantiles); attack strength t = r + N(0, tau); true accuracy of a on adv(b)
          p_ab = sigmoid(alpha (r_a - t_b) + N(0, sigma)) (sigma: non-transitive pair
          noise), white-box p_bb lowered by a further `whitebox_gap` on the logit.
  observe 2,000 images per adversarial set (--images), each network right on each image
          independently with p_ab: the observed M (diagonal = white-box) and the
          revised rule's win counts (a right, b wrong on adv(a) + adv(b)), drawn exactly
          from binomials given the attacked network's own outcomes.
  full    levels and scores from every pair, as benchmark_rank computes them.
  rule    networks arrive in random order; each is evaluated against the references,
          the k best already there (by level, then mean revised margin against the
          references: what is known at arrival) and m random others; the pairs not
          evaluated carry no evidence.

Levels read only the references' pairs, and scores are Bradley-Terry among the
references with every other network placed against them (issue 16), so by
construction the rule changes neither; the table checks that, and shows the
measurement noise floor (the same networks, images drawn again) for scale. `--dump`
writes the first seed's matrices, each rule's mask and every comparison to an .npz
(tests/test_scaling_sim.py runs the script and checks them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import _common as c
from evaluator.engine import ladder as ladder_engine  # NumPy only, no TF


NOISE = (-1, -1)


@dataclass
class Suite:
    latent: np.ndarray  # (n,) true robustness
    refs: list[int]  # indices of the references
    M: np.ndarray  # (n, n) observed accuracy of a on adv(b); diagonal = white-box accuracy
    wins: np.ndarray  # (n, n) revised rule: images of adv(a) + adv(b) with a right and b wrong
    images: int


def true_accuracies(uploads: int, references: int = 10, *, alpha: float = 1.5, pair_noise: float = 0.3,
                    attack_noise: float = 0.3, whitebox_gap: float = 1.0,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(latent robustness, true accuracy p[a][b] of a on adv(b), diagonal white-box); references first."""
    from statistics import NormalDist

    rng = np.random.default_rng(seed)
    q = (np.arange(references) + 0.5) / references
    latent = np.concatenate([[NormalDist().inv_cdf(float(x)) for x in q], rng.standard_normal(uploads)])
    n = len(latent)
    attack = latent + attack_noise * rng.standard_normal(n)
    logits = alpha * (latent[:, None] - attack[None, :]) + pair_noise * rng.standard_normal((n, n))
    logits[np.diag_indices(n)] -= whitebox_gap  # a network's own attack is the strongest it meets
    return latent, 1.0 / (1.0 + np.exp(-logits))


def observe(latent: np.ndarray, p: np.ndarray, references: int, *, images: int = 2000, seed: int = 0) -> Suite:
    """Draw the per-image outcomes of every network on every set, summarised exactly.

    On adv(s), s is right on k_s ~ Bin(images, p_ss) images; network a, independent per
    image, is right on x1 ~ Bin(k_s, p_as) of those and x2 ~ Bin(images - k_s, p_as) of
    the rest. So adv(s) adds x2 to wins[a][s] (a right, s wrong) and k_s - x1 to
    wins[s][a]: the same distribution as drawing all n x n x images outcomes.
    """
    rng = np.random.default_rng(seed)
    n = len(latent)
    k = rng.binomial(images, p.diagonal())
    x1 = rng.binomial(np.broadcast_to(k, (n, n)), p)  # [a][s]: a right where s is right
    x2 = rng.binomial(np.broadcast_to(images - k, (n, n)), p)  # [a][s]: a right where s is wrong
    x1[np.diag_indices(n)], x2[np.diag_indices(n)] = k, 0
    M = (x1 + x2) / images
    wins = (x2 + (k[None, :] - x1).T).astype(np.int64)
    return Suite(latent=latent, refs=list(range(references)), M=M, wins=wins, images=images)


def synthetic_suite(uploads: int, references: int = 10, *, images: int = 2000, alpha: float = 1.5,
                    pair_noise: float = 0.3, attack_noise: float = 0.3, whitebox_gap: float = 1.0,
                    seed: int = 0) -> Suite:
    """References first (indices 0..R-1, evenly spaced latent quantiles), then uploads."""
    latent, p = true_accuracies(uploads, references, alpha=alpha, pair_noise=pair_noise,
                                attack_noise=attack_noise, whitebox_gap=whitebox_gap, seed=seed)
    return observe(latent, p, references, images=images, seed=seed + 10_000)


def levels(wins: np.ndarray, refs: list[int], M: np.ndarray | None = None) -> np.ndarray:
    """The product's level of every network: the engine's ladder and level rule (the
    ladder's ties broken by mean transfer accuracy M, as without robust accuracy)."""
    order = ladder_engine.ladder_order(wins, among=refs, M=M)
    return np.array([r.level for r in ladder_engine.level_results(wins, order)])


def scores(wins: np.ndarray, refs: list[int]) -> np.ndarray:
    """The product's scores: references fitted among themselves, the rest placed."""
    return ladder_engine.robustness_scores(wins, refs)


def reference_margin(wins: np.ndarray, refs: list[int]) -> np.ndarray:
    """Mean revised margin wins[x][r] - wins[r][x] over the references (known at arrival)."""
    idx = np.asarray(refs)
    return (wins[:, idx] - wins[idx, :].T).mean(axis=1)


def sparse_pairs(suite: Suite, k: int, m: int, *, seed: int = 0) -> np.ndarray:
    """Symmetric mask of the pairs the rule evaluates (uploads arrive in random order)."""
    n = suite.M.shape[0]
    refs = suite.refs
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, n), dtype=bool)
    mask[np.ix_(refs, range(n))] = True
    mask[np.ix_(range(n), refs)] = True
    lv = levels(suite.wins, refs, suite.M)  # only reads reference pairs: known at arrival
    margin = reference_margin(suite.wins, refs)
    uploads = [i for i in range(n) if i not in set(refs)]
    arrived: list[int] = []
    for x in rng.permutation(uploads):
        if arrived:
            pool = np.asarray(arrived)
            top = pool[np.lexsort((-margin[pool], -lv[pool]))[:k]] if k else np.array([], dtype=int)
            rest = np.setdiff1d(pool, top)
            sample = rng.choice(rest, size=min(m, len(rest)), replace=False) if m and len(rest) else []
            for y in (*top, *sample):
                mask[x, y] = mask[y, x] = True
        arrived.append(int(x))
    np.fill_diagonal(mask, False)
    return mask


def evaluated(suite: Suite, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wins, M) as the rule sees them: pairs outside `mask` carry no evidence."""
    n = suite.M.shape[0]
    seen = mask | np.eye(n, dtype=bool)
    return np.where(seen, suite.wins, 0), np.where(seen, suite.M, np.nan)


def kendall_flips(a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> tuple[int, int]:
    """(pairs within the same group ordered differently by a and b, pairs within groups)."""
    flips = total = 0
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        da = np.sign(a[idx][:, None] - a[idx][None, :])
        db = np.sign(b[idx][:, None] - b[idx][None, :])
        iu = np.triu_indices(len(idx), 1)
        flips += int((da[iu] * db[iu] < 0).sum())
        total += len(iu[0])
    return flips, total


def leaderboard_order(lv: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions (0 = top) sorted by level, then score, both descending."""
    order = np.lexsort((-scores, -lv))
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order))
    return pos


def compare(suite: Suite, mask: np.ndarray, full_scores: np.ndarray | None = None,
            other: Suite | None = None) -> dict:
    """What the rule (pairs in `mask`) changes against the full matrix.

    other: compare with this second observation of the same networks instead (full
    matrix, images drawn again: the measurement noise floor); mask is then ignored.
    """
    n = suite.M.shape[0]
    lv_full = levels(suite.wins, suite.refs, suite.M)
    full = scores(suite.wins, suite.refs) if full_scores is None else full_scores
    if other is None:
        wins_rule, M_rule = evaluated(suite, mask)
        lv_rule = levels(wins_rule, suite.refs, M_rule)
        rule = scores(wins_rule, suite.refs)
    else:
        lv_rule = levels(other.wins, other.refs, other.M)
        rule = scores(other.wins, other.refs)
        mask = ~np.eye(n, dtype=bool)
    sd = float(full.std()) or 1.0
    diff = np.abs(rule - full) / sd
    pos_full, pos_rule = leaderboard_order(lv_full, full), leaderboard_order(lv_rule, rule)
    moved = np.abs(pos_full - pos_rule)
    flips, pairs = kendall_flips(full, rule, lv_full)
    top_full = set(np.argsort(pos_full)[:10])
    top_rule = set(np.argsort(pos_rule)[:10])
    pairs_evaluated = int(mask[np.triu_indices(n, 1)].sum())
    return {
        "networks": n,
        "evaluations": 2 * n + 2 * pairs_evaluated,
        "evaluations_full": 2 * n + n * (n - 1),
        "level_changes": int((lv_full != lv_rule).sum()),
        "score_shift_mean_sd": float(diff.mean()),
        "score_shift_p95_sd": float(np.percentile(diff, 95)),
        "score_corr": float(np.corrcoef(full, rule)[0, 1]),
        "rank_moved_mean": float(moved.mean()),
        "rank_moved_max": int(moved.max()),
        "rank_moved_5plus": float((moved >= 5).mean()),
        "top10_overlap": len(top_full & top_rule),
        "within_level_flips": flips / pairs if pairs else 0.0,
    }


def rank_cost(n: int, images: int = 2000, references: int = 10, seed: int = 0) -> dict:
    """Seconds of the ranking's numeric part at n networks, full matrix: the engine's
    pairwise_wins over per-image correctness of every ordered pair, diagonal included
    (what matrix_gather hands it), then ladder, levels and scores; and the bytes of
    predictions it reads."""
    rng = np.random.default_rng(seed)
    correct = {(a, b): rng.random(images) < 0.5 for a in range(n) for b in range(n)}
    refs = list(range(min(references, n)))
    t = time.perf_counter()
    wins = ladder_engine.pairwise_wins(correct, n)
    t_wins = time.perf_counter() - t
    t = time.perf_counter()
    levels(wins, refs)
    scores(wins, refs)
    t_rank = time.perf_counter() - t
    return {"n": n, "pairwise_wins_s": t_wins, "levels_scores_s": t_rank, "prediction_bytes": n * n * images}


def dump(path: Path, latent: np.ndarray, p: np.ndarray, suite: Suite, again: Suite,
         rules: list[tuple[int, int]]) -> None:
    """One seed's truth, observations, levels and scores, each rule's mask and every
    comparison (JSON under "summary"), for checking the simulation from outside."""
    n = suite.M.shape[0]
    arrays = {"latent": latent, "p": p, "M": suite.M, "wins": suite.wins, "refs": np.asarray(suite.refs),
              "levels": levels(suite.wins, suite.refs, suite.M), "scores": scores(suite.wins, suite.refs),
              "noise_M": again.M, "noise_wins": again.wins}
    summary = {"noise": compare(suite, None, other=again), "full": compare(suite, ~np.eye(n, dtype=bool))}
    for k, m in rules:
        arrays[f"mask_{k}_{m}"] = mask = sparse_pairs(suite, k, m, seed=0)
        summary[f"{k}:{m}"] = compare(suite, mask)
    np.savez(path, summary=json.dumps(summary), **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--references", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rules", default="0:0,10:0,0:10,5:5,10:10,20:20,10:30,0:40")
    parser.add_argument("--pair-noise", type=float, default=0.3)
    parser.add_argument("--rank-cost", default="", help="also time the ranking's numeric part at these N, e.g. 100,200,400")
    parser.add_argument("--images", type=int, default=2000, help="images per adversarial set")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write the first seed's matrices, masks and comparisons to this .npz")
    args = parser.parse_args()

    c.header("sparse rule vs full matrix (synthetic)", "python -m bench.scaling_sim " + " ".join(sys.argv[1:]))
    rules = [tuple(int(v) for v in r.split(":")) for r in args.rules.split(",")]
    results: dict[tuple[int, int], list[dict]] = {r: [] for r in [*rules, NOISE]}
    fit_s = []
    for seed in range(args.seeds):
        latent, p = true_accuracies(args.uploads, args.references, pair_noise=args.pair_noise, seed=seed)
        suite = observe(latent, p, args.references, images=args.images, seed=seed + 10_000)
        again = observe(latent, p, args.references, images=args.images, seed=seed + 20_000)
        if seed == 0 and args.dump:
            dump(args.dump, latent, p, suite, again, rules)
        t = time.perf_counter()
        full = scores(suite.wins, suite.refs)
        fit_s.append(time.perf_counter() - t)
        results[NOISE].append(compare(suite, None, full, other=again))
        for k, m in rules:
            results[(k, m)].append(compare(suite, sparse_pairs(suite, k, m, seed=seed), full))
    n = args.uploads + args.references
    print(f"{n} networks ({args.references} references), {args.images:,} images per set, pair noise "
          f"{args.pair_noise}, {args.seeds} seeds; scores (reference BT + placement) "
          f"{c.median(fit_s):.2f} s (median)\n")

    def avg(key: str, r: tuple[int, int]) -> float:
        return float(np.mean([x[key] for x in results[r]]))

    rows = []
    for r in [NOISE, *rules]:
        k, m = r
        label = "full matrix, images redrawn (noise floor)" if r == NOISE else f"refs + top-{k} + {m} random"
        per_upload = 2 + 2 * (n - 1) if r == NOISE else 2 + 2 * (args.references + k + m)
        rows.append((label, f"{per_upload}",
                     f"{avg('evaluations', r) / avg('evaluations_full', r):.1%}", int(avg("level_changes", r)),
                     avg("score_corr", r), avg("score_shift_mean_sd", r), avg("score_shift_p95_sd", r),
                     avg("rank_moved_mean", r), avg("rank_moved_max", r), f"{avg('rank_moved_5plus', r):.1%}",
                     avg("top10_overlap", r), f"{avg('within_level_flips', r):.1%}"))
    print(c.table(rows, ["rule", "evals/upload", "of full", "level changes", "score r", "|Δscore| mean sd",
                         "p95 sd", "rank moved mean", "max", "moved ≥5", "top-10 kept", "same-level flips"]))
    print(f"\nfull matrix: {2 + 2 * (n - 1)} evaluations per upload at N={n}")
    if args.rank_cost:
        costs = [rank_cost(int(x)) for x in args.rank_cost.split(",")]
        print("\nranking cost on the full matrix (engine pairwise_wins, then ladder + levels + scores, 2,000 images):")
        print(c.table([(r["n"], r["pairwise_wins_s"], r["levels_scores_s"], f"{r['prediction_bytes'] / 2**20:.0f}")
                       for r in costs], ["N", "pairwise_wins s", "levels + scores s", "predictions read MB"]))
        if len(costs) > 1:
            a, b = costs[-2], costs[-1]
            total = {x["n"]: x["pairwise_wins_s"] + x["levels_scores_s"] for x in (a, b)}
            growth = np.log(total[b["n"]] / total[a["n"]])
            print(f"growth exponent between N={a['n']} and N={b['n']}: {growth / np.log(b['n'] / a['n']):.2f}")


if __name__ == "__main__":
    main()
