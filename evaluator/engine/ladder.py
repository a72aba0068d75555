"""Pairwise robustness, the reference ladder, levels and the robustness score (SPEC §2).

Pure NumPy over plain data, so the ranking task recomputes everything from stored
predictions and the tests pin it down with hand-built outcomes. Networks are indices
0..n-1 (whatever the caller uses); the ladder is a list of them, R1 first.

- correct: per-image correctness, correct[(a, b)] = bool (images,), a right on each
  image of adv(b), INCLUDING the diagonal (a, a) = a's white-box correctness. A bool
  array (n, n, images), nested sequences, or a mapping (missing pairs: no evidence).
- wins: int (n, n) from pairwise_wins(correct), wins[a][b] = images of adv(a) + adv(b)
  where a is right and b wrong. Ladder, levels and scores read only this matrix (and
  M = accuracy_matrix(correct) breaks ladder ties when no robust accuracy is known).

Revised rule: a and b are scored on the same 2n images, adv(a) then adv(b), each facing
its own white-box attack and the other's transfer attack; a is more robust than b iff
it is right on more of them (equal counts: a tie), i.e. iff wins[a][b] > wins[b][a].
The charter's rule (a on adv(b) against b on adv(a), charter_pairwise) compares two
different image sets and never sees a network's own white-box weakness (an undefended
CNN whose attack transfers well climbed the ladder): it is shown, and decides nothing.

Level rule: level(X) is the largest N such that X is more robust than every one of
R1 … RN; the climb stops at the first rung X does not beat, whether a loss, a tie or
X's own rung (no network is more robust than itself). References and uploads are read
on this one scale: R_k reaches at most level k − 1, and an exact copy of R_k gets
exactly R_k's level.

Scores: Bradley-Terry among the references only (reference_scores), fixed when the
references are ranked; every other network is placed against them with their scores
held fixed (place_score), so an upload never moves another network's score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from evaluator.engine.metrics import mcnemar_p_value

Correctness = Union[np.ndarray, Sequence[Sequence[np.ndarray]], Mapping[tuple[int, int], np.ndarray]]

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Comparison:
    """a against b on one list of paired images (which images depends on the rule).

    a_only / b_only: images only a / only b is right on (McNemar's discordant counts);
    a_wins iff a_correct > b_correct, equal counts are a tie (neither wins).
    """

    a: int
    b: int
    images: int
    a_correct: int
    b_correct: int
    a_only: int
    b_only: int
    a_wins: bool
    b_wins: bool
    p_value: float
    significant: bool

    @property
    def acc_a(self) -> float:
        return self.a_correct / self.images if self.images else math.nan

    @property
    def acc_b(self) -> float:
        return self.b_correct / self.images if self.images else math.nan

    @property
    def difference(self) -> float:
        return self.acc_a - self.acc_b

    @property
    def tie(self) -> bool:
        return not self.a_wins and not self.b_wins

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.update(acc_a=self.acc_a, acc_b=self.acc_b, difference=self.difference, tie=self.tie)
        return out


@dataclass(frozen=True)
class LevelResult:
    """X's level and the comparisons behind it.

    wins[k]: X is more robust than the reference at ladder position k (0-based, wins[0]
    is R1). deciding: the position whose comparison fixes the level, the first rung not
    beaten (X's own rung included), or the top rung when X beat them all; None for an
    empty ladder. deciding_reference: the network index at that position.
    """

    level: int
    wins: list[bool]
    deciding: int | None
    deciding_reference: int | None


def compare(a_ok: np.ndarray, b_ok: np.ndarray, *, a: int = 0, b: int = 1) -> Comparison:
    """Paired comparison: who is right on more of the same images, exact McNemar p."""
    x, y = np.asarray(a_ok, dtype=bool), np.asarray(b_ok, dtype=bool)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired outcomes must be 1-D and equal length: {x.shape} vs {y.shape}")
    a_correct, b_correct = int(np.count_nonzero(x)), int(np.count_nonzero(y))
    a_only, b_only = int(np.count_nonzero(x & ~y)), int(np.count_nonzero(~x & y))
    p = mcnemar_p_value(a_only, b_only)
    return Comparison(
        a=a, b=b, images=int(x.size), a_correct=a_correct, b_correct=b_correct,
        a_only=a_only, b_only=b_only, a_wins=a_correct > b_correct, b_wins=b_correct > a_correct,
        p_value=p, significant=bool(p < SIGNIFICANCE),
    )


def paired_outcomes(correct: Correctness, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The revised rule's paired images: adv(a) then adv(b), as (a right?, b right?)."""
    if a == b:
        raise ValueError("a network is not compared with itself")
    cells = [_cell(correct, *pair) for pair in ((a, a), (a, b), (b, a), (b, b))]
    if any(c is None for c in cells):
        raise ValueError(f"no per-image correctness for pair ({a}, {b}) (diagonal included)")
    aa, ab, ba, bb = (np.asarray(c, dtype=bool) for c in cells)
    return np.concatenate([aa, ab]), np.concatenate([ba, bb])


def pairwise(correct: Correctness, a: int, b: int) -> Comparison:
    """The revised rule: a and b on the union of adv(a) and adv(b) (2n images)."""
    return compare(*paired_outcomes(correct, a, b), a=a, b=b)


def charter_pairwise(correct: Correctness, a: int, b: int) -> Comparison:
    """The charter's rule (transfer only): a on adv(b) against b on adv(a); shown, never decisive.

    Image i of both sets comes from eval image i, so the outcomes are paired.
    """
    if a == b:
        raise ValueError("a network is not compared with itself")
    a_on_b, b_on_a = _cell(correct, a, b), _cell(correct, b, a)
    if a_on_b is None or b_on_a is None:
        raise ValueError(f"no per-image correctness for pair ({a}, {b})")
    return compare(a_on_b, b_on_a, a=a, b=b)


def pairwise_wins(correct: Correctness, n: int | None = None) -> np.ndarray:
    """wins[a][b] = images of adv(a) + adv(b) where a is right and b wrong (revised rule).

    A pair lacking any of its four cells (a, a), (a, b), (b, a), (b, b) has no evidence
    (0 both ways: a tie). Computed one adversarial set at a time, vectorised over the
    networks evaluated on it: O(n^2 images) work in n NumPy steps.
    """
    n = _size(correct) if n is None else n
    present = np.array([[_cell(correct, a, b) is not None for b in range(n)] for a in range(n)], dtype=bool)
    out = np.zeros((n, n), dtype=np.int64)
    for s in range(n):
        if not present[s, s]:
            continue
        own = np.asarray(_cell(correct, s, s), dtype=bool)
        rows = [a for a in range(n) if a != s and present[a, s]]
        if not rows:
            continue
        others = np.stack([np.asarray(_cell(correct, a, s), dtype=bool) for a in rows])
        if others.shape[1:] != own.shape:
            raise ValueError(f"adv({s}): correctness vectors differ in length")
        out[rows, s] += np.count_nonzero(others & ~own, axis=1)  # a right, s wrong, on adv(s)
        out[s, rows] += np.count_nonzero(own & ~others, axis=1)  # s right, a wrong, on adv(s)
    diag = present.diagonal()
    evaluated = present & present.T & diag[:, None] & diag[None, :]
    out[~evaluated] = 0
    return out


def accuracy_matrix(correct: Correctness, n: int | None = None) -> np.ndarray:
    """M[a][b] = accuracy of a on adv(b), diagonal = white-box accuracy; NaN if missing."""
    n = _size(correct) if n is None else n
    M = np.full((n, n), np.nan)
    for a in range(n):
        for b in range(n):
            cell = _cell(correct, a, b)
            if cell is not None and len(cell):
                M[a, b] = float(np.mean(np.asarray(cell, dtype=bool)))
    return M


def ladder_order(
    wins: np.ndarray,
    *,
    among: Sequence[int] | None = None,
    robust: Sequence[float] | None = None,
    M: np.ndarray | None = None,
) -> list[int]:
    """Reference indices from least to most robust (R1 first).

    Sort key, ascending: revised-rule wins against the other references; then robust
    accuracy robust[a] (indexed like wins) when given, else (no robust accuracy known)
    the mean over the other references b of M[a][b], else nothing; then the index, so
    equal records give a deterministic order. among: the references' indices when wins
    also holds other networks; only comparisons among them count.
    """
    W = _wins(wins)
    refs = list(range(W.shape[0])) if among is None else [int(r) for r in among]
    if len(set(refs)) != len(refs):
        raise ValueError("duplicate reference index")
    if len(refs) <= 1:
        return refs
    sub = W[np.ix_(refs, refs)]
    won = ((sub > sub.T) & ~np.eye(len(refs), dtype=bool)).sum(axis=1)
    if robust is not None:
        tiebreak = np.array([float(robust[r]) for r in refs])
    elif M is not None:
        sub_m = np.asarray(M, dtype=np.float64)[np.ix_(refs, refs)]
        off = ~np.eye(len(refs), dtype=bool)
        tiebreak = np.where(off, sub_m, 0.0).sum(axis=1) / (len(refs) - 1)
    else:
        tiebreak = np.zeros(len(refs))
    if not np.isfinite(tiebreak).all():
        raise ValueError("the ladder's tie-break (robust accuracy or M) is incomplete (NaN/inf)")
    keys = sorted(range(len(refs)), key=lambda i: (int(won[i]), float(tiebreak[i]), refs[i]))
    return [refs[i] for i in keys]


def beats(wins: np.ndarray, x: int, r: int) -> bool:
    """x is more robust than r: right on more of their 2n images (never x against itself)."""
    W = _wins(wins)
    return x != r and bool(W[x, r] > W[r, x])


def level(wins_against: Sequence[bool]) -> int:
    """Largest N with wins_against[0..N-1] all true; the climb stops at the first non-win."""
    n = 0
    for won in wins_against:
        if not won:
            break
        n += 1
    return n


def level_of(wins: np.ndarray, x: int, ladder: Sequence[int]) -> LevelResult:
    """Level of network x (an index of wins) against the ladder, see the module's rule."""
    W = _wins(wins)
    outcomes = [beats(W, x, int(r)) for r in ladder]
    n = level(outcomes)
    deciding = n if n < len(outcomes) else (len(outcomes) - 1 if outcomes else None)
    return LevelResult(
        level=n,
        wins=outcomes,
        deciding=deciding,
        deciding_reference=None if deciding is None else int(ladder[deciding]),
    )


def level_results(wins: np.ndarray, ladder: Sequence[int]) -> list[LevelResult]:
    """LevelResult of every network 0..n-1, references and uploads alike."""
    return [level_of(wins, x, ladder) for x in range(_wins(wins).shape[0])]


def bradley_terry(
    wins: np.ndarray,
    *,
    prior: float = 0.5,
    tol: float = 1e-10,
    mm_iter: int = 2_000,
    max_newton: int = 100,
) -> np.ndarray:
    """Bradley-Terry log-strengths from win counts (diagonal ignored), centred at mean 0.

    P(i beats j) = sigmoid(s_i - s_j), natural-log units. `prior` pseudo-wins each way
    for every pair keep the estimate finite for a perfect record or a disconnected graph.
    Hunter's (2004) MM algorithm (monotone, but linear: near-perfect records need ~1e5
    iterations), finished by backtracking Newton steps on the same concave likelihood.
    """
    w = np.array(wins, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"wins must be square, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("wins must be finite and non-negative")
    if prior <= 0:
        raise ValueError("prior must be positive (it makes the fit exist)")
    n = w.shape[0]
    if n <= 1:
        return np.zeros(n)
    off = ~np.eye(n, dtype=bool)
    w = np.where(off, w + prior, 0.0)
    games = w + w.T  # n_ij, zero on the diagonal
    won = w.sum(axis=1)  # W_i > 0 thanks to the prior
    s = np.zeros(n)
    for _ in range(mm_iter):
        p = np.exp(s - s.max())  # shift: only ratios matter, avoid overflow
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.log(won) - np.log(denom)
        new -= new.mean()  # strengths are defined up to a common factor
        step = float(np.abs(new - s).max())
        s = new
        if step < tol:
            return s
    return _newton_polish(s, w, games, won, tol=tol, max_iter=max_newton)


def _bt_log_likelihood(s: np.ndarray, w: np.ndarray) -> float:
    diff = s[:, None] - s[None, :]
    return float(-(w * np.logaddexp(0.0, -diff)).sum())  # log sigmoid without overflow


def _newton_polish(
    s: np.ndarray, w: np.ndarray, games: np.ndarray, won: np.ndarray, *, tol: float, max_iter: int
) -> np.ndarray:
    n = s.size
    ll = _bt_log_likelihood(s, w)
    for _ in range(max_iter):
        prob = 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))  # P(i beats j)
        grad = won - (games * prob).sum(axis=1)
        weight = games * prob * prob.T
        laplacian = np.diag(weight.sum(axis=1)) - weight  # = -Hessian, singular on 1
        # Adding 11^T/n fixes the free common shift; grad sums to 0, so the step does too.
        step = np.linalg.solve(laplacian + np.ones((n, n)) / n, grad)
        t = 1.0
        while True:
            trial = s + t * step
            trial_ll = _bt_log_likelihood(trial, w)
            if trial_ll >= ll:
                break
            t *= 0.5
            if t < 1e-8:  # no ascent left at float precision: s is the maximum
                return s
        s, ll = trial - trial.mean(), trial_ll
        if float(np.abs(t * step).max()) < tol:
            break
    return s


def reference_scores(wins: np.ndarray, refs: Sequence[int], *, prior: float = 0.5) -> dict[int, float]:
    """Bradley-Terry among the references only: {reference index: score}, mean 0."""
    W = _wins(wins)
    refs = [int(r) for r in refs]
    fitted = bradley_terry(W[np.ix_(refs, refs)], prior=prior)
    return {r: float(s) for r, s in zip(refs, fitted)}


def place_score(
    won: Sequence[float], lost: Sequence[float], anchors: Sequence[float], *, prior: float = 0.5, tol: float = 1e-12
) -> float:
    """Strength s of one network against anchors held fixed: 1-D maximum likelihood.

    Maximises sum_r (won_r + prior) log sigmoid(s - a_r) + (lost_r + prior) log sigmoid(a_r - s),
    bradley_terry's likelihood with every other score frozen (the same prior keeps a
    perfect record finite). The derivative g(s) = sum_r (won_r + prior) - n_r sigmoid(s - a_r)
    falls strictly from positive to negative, so its one root is found by Newton steps
    kept inside a bisection bracket. No anchors: no evidence, score 0.
    """
    a = np.asarray(anchors, dtype=np.float64)
    w = np.asarray(won, dtype=np.float64) + prior
    games = w + np.asarray(lost, dtype=np.float64) + prior
    if not (a.shape == w.shape == games.shape) or a.ndim != 1:
        raise ValueError("won, lost and anchors must be 1-D and of equal length")
    if prior <= 0 or not np.isfinite(games).all() or (w < prior).any() or (games < w + prior).any():
        raise ValueError("counts must be finite and non-negative, prior positive")
    if a.size == 0:
        return 0.0

    def grad(s: float) -> tuple[float, float]:
        p = 1.0 / (1.0 + np.exp(-(s - a)))
        return float(w.sum() - (games * p).sum()), float(-(games * p * (1 - p)).sum())

    lo, hi = float(a.min()) - 1.0, float(a.max()) + 1.0
    while grad(lo)[0] < 0:
        lo -= 2.0 * (hi - lo)
    while grad(hi)[0] > 0:
        hi += 2.0 * (hi - lo)
    s = 0.5 * (lo + hi)
    for _ in range(200):
        g, h = grad(s)
        if g > 0:
            lo = s
        else:
            hi = s
        step = s - g / h if h < 0 else math.nan
        new = step if lo < step < hi else 0.5 * (lo + hi)  # Newton unless it leaves the bracket
        if abs(new - s) < tol or hi - lo < tol:
            return new
        s = new
    return s


def robustness_scores(
    wins: np.ndarray,
    refs: Sequence[int],
    *,
    fixed: Mapping[int, float] | None = None,
    prior: float = 0.5,
) -> np.ndarray:
    """Score of every network: references from `fixed` (else reference_scores), the
    others placed one by one against the references only (place_score). So no network's
    score depends on any other non-reference network."""
    W = _wins(wins)
    refs = [int(r) for r in refs]
    ref_scores = dict(fixed) if fixed is not None else reference_scores(W, refs, prior=prior)
    if set(ref_scores) != set(refs):
        raise ValueError("fixed scores must cover exactly the references")
    anchors = [ref_scores[r] for r in refs]
    out = np.zeros(W.shape[0])
    for i in range(W.shape[0]):
        out[i] = ref_scores[i] if i in ref_scores else place_score(W[i, refs], W[refs, i], anchors, prior=prior)
    return out


def _wins(wins: np.ndarray) -> np.ndarray:
    if (W := np.asarray(wins)).ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"wins must be square, got shape {W.shape}")
    return W


def _size(correct: Correctness) -> int:
    if isinstance(correct, Mapping):
        return 1 + max((max(a, b) for a, b in correct), default=-1)
    return len(correct)


def _cell(correct: Correctness, a: int, b: int) -> np.ndarray | None:
    if isinstance(correct, Mapping):
        return correct.get((a, b))
    return correct[a][b]
