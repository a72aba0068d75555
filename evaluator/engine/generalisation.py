"""Do the ladder's findings generalise across datasets and architectures? (issue 15)

The same ten reference defenses are built on several benchmarks (engine.builtins:
mnist-5k, digits-8x8, mnist-5k-mlp). Each ladder orders them from least to most robust;
this module compares the orders:

- Kendall's τ between two orders over the references both have, with its two-sided
  p-value against "the orders are unrelated" (exact permutation distribution without
  ties, the normal approximation with tie corrections otherwise: what
  scipy.stats.kendalltau does, computed here and checked against it in the tests);
- which defenses move: a change of rung of at least MOVE_MIN places, and a change of
  side of the control (the charter's question "does downsampling / MTL / noise help?"
  is whether a defense sits above the control).

Pure Python/NumPy over plain data: the web process calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

MOVE_MIN = 2  # rungs: a swap of two neighbours is not called a move
MIN_COMMON = 3  # fewer shared references leave τ meaningless
CONTROL = "control"
EXACT_MAX_N = 33  # scipy's rule: the exact distribution up to 33 items (without ties)


@dataclass(frozen=True)
class Tau:
    tau: float  # τ-b (τ-a when there are no ties)
    p_value: float  # two-sided
    n: int
    concordant: int
    discordant: int
    method: str  # "exact" or "asymptotic"


def _tie_sums(values: Sequence[float]) -> tuple[int, int, int]:
    """(pairs tied, Σt(t−1)(t−2), Σt(t−1)(2t+5)) over groups of t equal values."""
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    t = [c for c in counts.values() if c > 1]
    return (sum(c * (c - 1) // 2 for c in t), sum(c * (c - 1) * (c - 2) for c in t),
            sum(c * (c - 1) * (2 * c + 5) for c in t))


@lru_cache(maxsize=64)
def _inversion_counts(n: int) -> tuple[int, ...]:
    """Number of permutations of n items with k inversions, k = 0 … n(n−1)/2 (Mahonian
    numbers): the exact null distribution of the discordant pairs between two orders."""
    row = [1]
    for m in range(2, n + 1):
        # Inserting the m-th item adds 0 … m−1 inversions.
        new = [0] * (len(row) + m - 1)
        for k, count in enumerate(row):
            for extra in range(m):
                new[k + extra] += count
        row = new
    return tuple(row)


def _exact_p(n: int, discordant: int) -> float:
    total = n * (n - 1) // 2
    c = min(discordant, total - discordant)
    if 2 * c == total:
        return 1.0
    counts = _inversion_counts(n)
    tail = sum(counts[: c + 1]) / math.factorial(n)
    return min(1.0, 2.0 * tail)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Tau:
    """Kendall's τ-b of paired values and its two-sided p-value.

    Exact when neither side has ties and n ≤ 33 (or the orders are one swap from equal
    or reversed); otherwise the normal approximation of S = concordant − discordant
    with the tie-corrected variance (Kendall 1970), as scipy.stats.kendalltau.
    """
    if len(x) != len(y):
        raise ValueError(f"one value per item on both sides: {len(x)} vs {len(y)}")
    n = len(x)
    if n < 2:
        raise ValueError("τ needs at least 2 items")
    concordant = discordant = 0
    for i, j in combinations(range(n), 2):
        s = (x[i] - x[j]) * (y[i] - y[j])
        if s > 0:
            concordant += 1
        elif s < 0:
            discordant += 1
    pairs = n * (n - 1) // 2
    x_tied, x0, x1 = _tie_sums(x)
    y_tied, y0, y1 = _tie_sums(y)
    denominator = math.sqrt((pairs - x_tied) * (pairs - y_tied))
    if denominator == 0:
        raise ValueError("τ is undefined when one side is constant")
    tau = (concordant - discordant) / denominator
    if x_tied == 0 and y_tied == 0 and (n <= EXACT_MAX_N or min(discordant, pairs - discordant) <= 1):
        return Tau(tau, _exact_p(n, discordant), n, concordant, discordant, "exact")
    m = n * (n - 1)
    variance = (m * (2 * n + 5) - x1 - y1) / 18 + 2 * x_tied * y_tied / m
    if n > 2:
        variance += x0 * y0 / (9 * m * (n - 2))
    z = (concordant - discordant) / math.sqrt(variance)
    return Tau(tau, math.erfc(abs(z) / math.sqrt(2)), n, concordant, discordant, "asymptotic")


# --------------------------------------------------------------------------- ladders


@dataclass(frozen=True)
class Rung:
    """One reference on one benchmark's ladder."""

    recipe: str
    rung: int  # 1 = least robust (R1)
    robust: float | None = None  # robust accuracy and its 95% interval, when measured
    robust_low: float | None = None
    robust_high: float | None = None


@dataclass(frozen=True)
class Move:
    recipe: str
    rank_a: int  # position among the references both benchmarks have, 1 = least robust
    rank_b: int
    above_control_a: bool | None  # None: no control on that benchmark, or it is the control
    above_control_b: bool | None

    @property
    def shift(self) -> int:
        return self.rank_b - self.rank_a

    @property
    def side_changed(self) -> bool:
        return None not in (self.above_control_a, self.above_control_b) and self.above_control_a != self.above_control_b


@dataclass(frozen=True)
class PairComparison:
    a: str
    b: str
    recipes: list[str]  # the shared references, in a's order
    tau: Tau | None  # None with fewer than MIN_COMMON shared references
    moves: list[Move]  # every shared reference, in a's order

    @property
    def moved(self) -> list[Move]:
        """References whose rung changes by at least MOVE_MIN places."""
        return [m for m in self.moves if abs(m.shift) >= MOVE_MIN]

    @property
    def changed_side(self) -> list[Move]:
        """References above the control on one benchmark and below it on the other."""
        return [m for m in self.moves if m.side_changed]


@dataclass(frozen=True)
class DefenseRow:
    """One defense across every benchmark: its rung and whether it beats the control."""

    recipe: str
    rungs: dict[str, Rung | None]  # benchmark -> its place there (None: not built there)
    above_control: dict[str, bool | None]

    @property
    def verdict(self) -> str:
        """"helps everywhere", "helps nowhere", "depends" (or "the control" / "–")."""
        if self.recipe == CONTROL:
            return "the control"
        sides = [v for v in self.above_control.values() if v is not None]
        if len(sides) < 2:
            return "–"
        if all(sides):
            return "above the control everywhere"
        if not any(sides):
            return "below the control everywhere"
        return "depends on the benchmark"


@dataclass(frozen=True)
class Generalisation:
    benchmarks: list[str]  # the ones compared, in the order given
    rows: list[DefenseRow]  # ordered by the first benchmark's ladder
    pairs: list[PairComparison]


def _above_control(ladder: Sequence[Rung], recipe: str) -> bool | None:
    rung = {r.recipe: r.rung for r in ladder}
    if recipe == CONTROL or CONTROL not in rung or recipe not in rung:
        return None
    return rung[recipe] > rung[CONTROL]


def compare_pair(a: str, ladder_a: Sequence[Rung], b: str, ladder_b: Sequence[Rung]) -> PairComparison:
    order_a = [r.recipe for r in sorted(ladder_a, key=lambda r: r.rung)]
    in_b = {r.recipe for r in ladder_b}
    shared = [name for name in order_a if name in in_b]
    order_b = [r.recipe for r in sorted(ladder_b, key=lambda r: r.rung) if r.recipe in set(shared)]
    rank_a = {name: k for k, name in enumerate(shared, start=1)}
    rank_b = {name: k for k, name in enumerate(order_b, start=1)}
    tau = None
    if len(shared) >= MIN_COMMON:
        tau = kendall_tau([rank_a[s] for s in shared], [rank_b[s] for s in shared])
    moves = [Move(s, rank_a[s], rank_b[s], _above_control(ladder_a, s), _above_control(ladder_b, s)) for s in shared]
    return PairComparison(a, b, shared, tau, moves)


def compare_ladders(ladders: Mapping[str, Sequence[Rung]]) -> Generalisation:
    """Every pair of benchmarks (in the order given), and one row per defense."""
    names = list(ladders)
    if len(names) < 2:
        raise ValueError("comparing ladders needs at least two benchmarks")
    pairs = [compare_pair(a, ladders[a], b, ladders[b]) for a, b in combinations(names, 2)]
    order: list[str] = []
    for name in names:  # the first ladder's order, then what only later ones have
        order += [r.recipe for r in sorted(ladders[name], key=lambda r: r.rung) if r.recipe not in order]
    rows = []
    for recipe in order:
        rungs = {name: next((r for r in ladders[name] if r.recipe == recipe), None) for name in names}
        above = {name: _above_control(ladders[name], recipe) for name in names}
        rows.append(DefenseRow(recipe, rungs, above))
    return Generalisation(names, rows, pairs)
