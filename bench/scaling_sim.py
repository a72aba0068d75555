"""What the sparse comparison rule changes, on synthetic cross-attack matrices.

    .venv/bin/python bench/scaling_sim.py [--uploads 500] [--seeds 3] [--rules 0:0,10:10,10:30,...] [--rank-cost 100,200,400]

The full matrix costs N(N-1) evaluations; past a few thousand networks it is replaced by
the rule "every network against every reference, plus the current top-k and a random
sample of m others" (2 + 2(R + k + m) evaluations per upload). This script checks what
that does to the ranking, with the engine's own ladder, level and Bradley-Terry code:

  model   latent robustness r ~ N(0, 1) per network (the R references at evenly spaced
          quantiles); attack strength t = r + N(0, tau); true accuracy of a on adv(b)
          p_ab = sigmoid(alpha (r_a - t_b) + N(0, sigma)) (sigma: non-transitive pair noise).
  observe for every pair, the 2,000 paired images are drawn from a multinomial over
          (a right, b right) with independent outcomes: the observed matrix M and the
          McNemar discordant counts the Bradley-Terry fit uses.
  full    levels from the references' rows/columns of M; scores = BT on every pair.
  rule    networks arrive in random order; each is evaluated against the references,
          the k best already there (by level, then mean margin against the references:
          what is known at arrival without a fit) and m random others; scores = BT on
          the evaluated pairs only (the others contribute no evidence).

Reported per (k, m), mean over seeds: evaluations, level changes (by construction none:
levels only read the reference rows/columns, which both schemes evaluate in full),
score movement (in standard deviations of the full scores), leaderboard displacement,
top-10 overlap and the share of same-level pairs whose order flips.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluator.engine import ladder as ladder_engine  # noqa: E402  (NumPy only, no TF)


NOISE = (-1, -1)


@dataclass
class Suite:
    latent: np.ndarray  # (n,) true robustness
    refs: list[int]  # indices of the references
    M: np.ndarray  # (n, n) observed accuracy of a on adv(b); diagonal unused (0)
    wins: np.ndarray  # (n, n) discordant counts: images a right on adv(b) while b wrong on adv(a)
    images: int


def true_accuracies(uploads: int, references: int = 10, *, alpha: float = 1.5, pair_noise: float = 0.3,
                    attack_noise: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(latent robustness, true accuracy p[a][b] of a on adv(b)); references first."""
    from statistics import NormalDist

    rng = np.random.default_rng(seed)
    q = (np.arange(references) + 0.5) / references
    latent = np.concatenate([[NormalDist().inv_cdf(float(x)) for x in q], rng.standard_normal(uploads)])
    n = len(latent)
    attack = latent + attack_noise * rng.standard_normal(n)
    logits = alpha * (latent[:, None] - attack[None, :]) + pair_noise * rng.standard_normal((n, n))
    return latent, 1.0 / (1.0 + np.exp(-logits))


def observe(latent: np.ndarray, p: np.ndarray, references: int, *, images: int = 2000, seed: int = 0) -> Suite:
    """Draw the paired per-image outcomes of every pair: observed M and discordant counts."""
    rng = np.random.default_rng(seed)
    n = len(latent)
    iu, ju = np.triu_indices(n, 1)
    pa, pb = p[iu, ju], p[ju, iu]  # a right on adv(b), b right on adv(a)
    cells = np.stack([pa * pb, pa * (1 - pb), (1 - pa) * pb, (1 - pa) * (1 - pb)], axis=1)
    counts = rng.multinomial(images, cells)  # (pairs, 4): both, only a, only b, neither
    M = np.zeros((n, n))
    M[iu, ju] = (counts[:, 0] + counts[:, 1]) / images
    M[ju, iu] = (counts[:, 0] + counts[:, 2]) / images
    wins = np.zeros((n, n), dtype=np.int64)
    wins[iu, ju] = counts[:, 1]
    wins[ju, iu] = counts[:, 2]
    return Suite(latent=latent, refs=list(range(references)), M=M, wins=wins, images=images)


def synthetic_suite(uploads: int, references: int = 10, *, images: int = 2000, alpha: float = 1.5,
                    pair_noise: float = 0.3, attack_noise: float = 0.3, seed: int = 0) -> Suite:
    """References first (indices 0..R-1, evenly spaced latent quantiles), then uploads."""
    latent, p = true_accuracies(uploads, references, alpha=alpha, pair_noise=pair_noise,
                                attack_noise=attack_noise, seed=seed)
    return observe(latent, p, references, images=images, seed=seed + 10_000)


def levels(M: np.ndarray, refs: list[int]) -> np.ndarray:
    """The product's level of every network (references leave themselves out)."""
    order = ladder_engine.ladder_order(M, among=refs)
    ref_set = set(refs)
    return np.array([
        ladder_engine.level_of(M[i, :], M[:, i], order, skip=i if i in ref_set else None).level
        for i in range(M.shape[0])
    ])


def reference_margin(M: np.ndarray, refs: list[int]) -> np.ndarray:
    """Mean of M[x][r] - M[r][x] over the references (known for every network at arrival)."""
    idx = np.asarray(refs)
    return (M[:, idx] - M[idx, :].T).mean(axis=1)


def sparse_pairs(suite: Suite, k: int, m: int, *, seed: int = 0) -> np.ndarray:
    """Symmetric mask of the pairs the rule evaluates (uploads arrive in random order)."""
    n = suite.M.shape[0]
    refs = suite.refs
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, n), dtype=bool)
    mask[np.ix_(refs, range(n))] = True
    mask[np.ix_(range(n), refs)] = True
    lv = levels(suite.M, refs)  # only reads reference rows/columns: known at arrival
    margin = reference_margin(suite.M, refs)
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


def bt_scores(wins: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The engine's Bradley-Terry on the evaluated pairs only."""
    w = wins if mask is None else np.where(mask, wins, 0)
    return ladder_engine.bradley_terry(w)


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
    lv_full = levels(suite.M, suite.refs)
    full = bt_scores(suite.wins) if full_scores is None else full_scores
    if other is None:
        M_sparse = np.where(mask | np.eye(n, dtype=bool), suite.M, np.nan)
        lv_rule = levels(M_sparse, suite.refs)
        rule = bt_scores(suite.wins, mask)
    else:
        lv_rule = levels(other.M, other.refs)
        rule = bt_scores(other.wins)
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


def rank_cost(n: int, images: int = 2000, seed: int = 0) -> dict:
    """Seconds of the ranking's numeric part at n networks, full matrix: the engine's
    pairwise_wins over per-image correctness of every ordered pair (what matrix_gather
    hands it) and bradley_terry on the result; and the bytes of predictions it reads."""
    rng = np.random.default_rng(seed)
    correct = {(a, b): rng.random(images) < 0.5 for a in range(n) for b in range(n) if a != b}
    t = time.perf_counter()
    wins = ladder_engine.pairwise_wins(correct, n)
    t_wins = time.perf_counter() - t
    t = time.perf_counter()
    ladder_engine.bradley_terry(wins)
    t_bt = time.perf_counter() - t
    return {"n": n, "pairwise_wins_s": t_wins, "bradley_terry_s": t_bt,
            "prediction_bytes": n * (n - 1) * images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--references", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rules", default="0:0,10:0,0:10,5:5,10:10,20:20,10:30,0:40")
    parser.add_argument("--pair-noise", type=float, default=0.3)
    parser.add_argument("--rank-cost", default="", help="also time the ranking's numeric part at these N, e.g. 100,200,400")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as c

    c.header("sparse rule vs full matrix (synthetic)", "python bench/scaling_sim.py " + " ".join(sys.argv[1:]))
    rules = [tuple(int(v) for v in r.split(":")) for r in args.rules.split(",")]
    results: dict[tuple[int, int], list[dict]] = {r: [] for r in [*rules, NOISE]}
    fit_s = []
    for seed in range(args.seeds):
        latent, p = true_accuracies(args.uploads, args.references, pair_noise=args.pair_noise, seed=seed)
        suite = observe(latent, p, args.references, seed=seed + 10_000)
        again = observe(latent, p, args.references, seed=seed + 20_000)
        t = time.perf_counter()
        full = bt_scores(suite.wins)
        fit_s.append(time.perf_counter() - t)
        results[NOISE].append(compare(suite, None, full, other=again))
        for k, m in rules:
            results[(k, m)].append(compare(suite, sparse_pairs(suite, k, m, seed=seed), full))
    n = args.uploads + args.references
    print(f"{n} networks ({args.references} references), 2,000 images per set, pair noise "
          f"{args.pair_noise}, {args.seeds} seeds; full BT fit {c.median(fit_s):.2f} s (median)\n")

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
        print("\nranking cost on the full matrix (engine pairwise_wins + bradley_terry, 2,000 images):")
        print(c.table([(r["n"], r["pairwise_wins_s"], r["bradley_terry_s"], f"{r['prediction_bytes'] / 2**20:.0f}")
                       for r in costs], ["N", "pairwise_wins s", "bradley_terry s", "predictions read MB"]))
        if len(costs) > 1:
            a, b = costs[-2], costs[-1]
            growth = np.log((b["pairwise_wins_s"] + b["bradley_terry_s"]) / (a["pairwise_wins_s"] + a["bradley_terry_s"]))
            print(f"growth exponent between N={a['n']} and N={b['n']}: {growth / np.log(b['n'] / a['n']):.2f}")


if __name__ == "__main__":
    main()
