"""Does the level measure robustness? The charter's own mitigation (issue 12).

The charter warned that its metric "only measures robustness against a certain type of
adversarial image" and asked to "prove that our metric actually measures that quality".
Here each ordering the product can produce is compared with robust accuracy (per image,
right under every attack the product has: the closest thing to the quantity we want):

- "level": the revised rule's levels, networks of equal level ordered by the ladder
  (ordering_keys);
- "charter level": levels under the charter's transfer-only rule (charter_ranking),
  with its own ladder, ordered the same way;
- "score": the robustness score (Bradley-Terry), as it is.

For each: Spearman's rho and Kendall's tau-b with their p-values (scipy.stats), across
every network that has both numbers. And one check on the references alone
(ladder_disagreements): wherever two references' robust accuracies differ beyond their
95% intervals, the ladder must put the more robust one higher.

Pure NumPy/SciPy over plain arrays: the web process calls it, so no TensorFlow, no ORM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from evaluator.engine import ladder as ladder_engine
from evaluator.engine.metrics import wilson_interval

MIN_NETWORKS = 3  # fewer points leave a rank correlation meaningless (and p-values undefined)


@dataclass(frozen=True)
class Correlation:
    """One ordering against robust accuracy. None where undefined: fewer than
    MIN_NETWORKS networks, or one side constant (every network at the same level)."""

    ordering: str
    networks: int
    spearman: float | None = None
    spearman_p: float | None = None
    kendall: float | None = None
    kendall_p: float | None = None

    @property
    def defined(self) -> bool:
        return self.spearman is not None


@dataclass(frozen=True)
class Validity:
    correlations: list[Correlation]
    # Reference pairs (lower rung, higher rung), 1-based ladder positions, where the
    # lower rung's robust accuracy is significantly HIGHER: the ladder contradicts it.
    disagreements: list[tuple[int, int]] = field(default_factory=list)
    significant_pairs: int = 0  # reference pairs whose robust-accuracy intervals are disjoint
    measured: int = 0  # networks with a robust accuracy
    # The references' ladder under the charter's rule (network indices, R1 first), to set
    # beside the revised one.
    charter_ladder: list[int] = field(default_factory=list)


def ordering_keys(levels: Sequence[float], rungs: Sequence[int | None]) -> np.ndarray:
    """One sortable number per network: its level, then (equal levels) the ladder.

    rungs[i]: the network's ladder position (1 = R1) if it is a reference, else None.
    An upload at level N did not beat R_{N+1}, and a reference at level N stopped at a
    rung at or below its own, so at equal level the references sit above the uploads,
    in ladder order; uploads of one level stay tied (rank statistics average ties).
    The ladder's own tie-break (robust accuracy) is not used: it is what we compare with.
    """
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or len(rungs) != len(levels):
        raise ValueError("one level and one rung (or None) per network")
    positions = np.array([0 if r is None else int(r) for r in rungs], dtype=np.float64)
    if np.any(positions < 0):
        raise ValueError("ladder positions start at 1")
    return levels + positions / (positions.max(initial=0) + 1)


def rank_correlation(ordering: str, order: Sequence[float], robust: Sequence[float | None]) -> Correlation:
    """Spearman and Kendall (tau-b) between `order` (higher = more robust) and robust
    accuracy, over the networks where both are known (None/NaN drop out)."""
    x = np.array([math.nan if v is None else float(v) for v in order])
    y = np.array([math.nan if v is None else float(v) for v in robust])
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"one value per network on both sides: {x.shape} vs {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    if n < MIN_NETWORKS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(ordering, n)
    rho = stats.spearmanr(x, y)
    tau = stats.kendalltau(x, y)
    return Correlation(
        ordering, n, spearman=float(rho.statistic), spearman_p=float(rho.pvalue),
        kendall=float(tau.statistic), kendall_p=float(tau.pvalue),
    )


def wilson_bounds(accuracy: float, images: int) -> tuple[float, float]:
    """The 95% Wilson interval of an accuracy measured on `images` images."""
    return wilson_interval(int(round(float(accuracy) * images)), images)


def ladder_disagreements(
    low: Sequence[float | None], high: Sequence[float | None]
) -> tuple[list[tuple[int, int]], int]:
    """Robust-accuracy intervals of the references in ladder order (R1 first) ->
    (pairs (i, j), 1-based, i < j, where R_i is significantly more robust than R_j
    although the ladder puts R_j higher; number of pairs whose intervals are disjoint).
    A reference without an interval (None) takes part in no pair."""
    if len(low) != len(high):
        raise ValueError("one interval per reference")
    bad: list[tuple[int, int]] = []
    disjoint = 0
    for i in range(len(low)):
        for j in range(i + 1, len(low)):
            if None in (low[i], high[i], low[j], high[j]):
                continue
            if low[i] > high[j]:  # lower rung, significantly higher robust accuracy
                bad.append((i + 1, j + 1))
                disjoint += 1
            elif low[j] > high[i]:
                disjoint += 1
    return bad, disjoint


def charter_ranking(M: np.ndarray, refs: Sequence[int]) -> tuple[list[int], list[int]]:
    """(ladder, levels) under the charter's rule, from the accuracy matrix alone.

    M[a][b] = accuracy of a on adv(b) (the diagonal is not read). a beats b iff
    M[a][b] > M[b][a], which for sets of equal size is charter_pairwise's verdict; the
    references are ordered by such wins among themselves, ties by mean transfer
    accuracy (never robust accuracy: the comparison must not see it), then every network
    gets its level by the same climb as the revised rule. NaN cells are no evidence.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be square, got {M.shape}")
    known = np.isfinite(M) & np.isfinite(M.T)
    np.fill_diagonal(known, False)
    wins = np.zeros(M.shape, dtype=np.int64)
    wins[known] = M[known] > M.T[known]
    order = ladder_engine.ladder_order(wins, among=list(refs), M=np.nan_to_num(M))
    return order, [r.level for r in ladder_engine.level_results(wins, order)]


def validity(robust: Sequence[float | None], orderings: Mapping[str, Sequence[float]],
             ladder_low: Sequence[float | None] = (), ladder_high: Sequence[float | None] = ()) -> Validity:
    """Every ordering against robust accuracy, plus the ladder check (see the module)."""
    bad, disjoint = ladder_disagreements(ladder_low, ladder_high)
    return Validity(
        correlations=[rank_correlation(name, order, robust) for name, order in orderings.items()],
        disagreements=bad,
        significant_pairs=disjoint,
        measured=sum(v is not None and math.isfinite(float(v)) for v in robust),
    )


LEVEL, CHARTER, SCORE = "level (revised rule)", "level (charter rule, transfer only)", "robustness score"


def assess(
    *,
    levels: Sequence[int],
    ladder: Sequence[int],
    scores: Sequence[float | None],
    M: np.ndarray,
    robust: Sequence[float | None],
    images: int,
    robust_low: Sequence[float | None] | None = None,
    robust_high: Sequence[float | None] | None = None,
) -> Validity:
    """The whole validity check of one benchmark, networks 0..n-1.

    levels and scores: as ranked (revised rule); ladder: the references' indices, R1
    first; M: accuracy matrix (NaN where not needed or unknown; the charter rule reads
    each network's row and column against the references); robust: robust accuracy or
    None; robust_low/high: its stored interval where there is one, else the Wilson
    interval over `images` eval images.
    """
    n = len(levels)
    rung = {int(i): k for k, i in enumerate(ladder, start=1)}
    orderings: dict[str, Sequence[float]] = {LEVEL: ordering_keys(levels, [rung.get(i) for i in range(n)])}
    if len(ladder):
        charter_order, charter_levels = charter_ranking(M, ladder)
        charter_rung = {i: k for k, i in enumerate(charter_order, start=1)}
        orderings[CHARTER] = ordering_keys(charter_levels, [charter_rung.get(i) for i in range(n)])
    orderings[SCORE] = [math.nan if s is None else float(s) for s in scores]

    def bounds(i: int) -> tuple[float | None, float | None]:
        if robust[i] is None:
            return None, None
        low = robust_low[i] if robust_low is not None else None
        high = robust_high[i] if robust_high is not None else None
        if low is None or high is None:
            if images <= 0:
                return None, None
            low, high = wilson_bounds(float(robust[i]), images)
        return float(low), float(high)

    intervals = [bounds(int(i)) for i in ladder]
    result = validity(robust, orderings, [b[0] for b in intervals], [b[1] for b in intervals])
    return dataclasses.replace(result, charter_ladder=[int(i) for i in charter_order] if len(ladder) else [])
