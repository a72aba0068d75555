"""The charter's pairwise rule, the reference ladder, levels and the robustness score.

Everything here is a pure function over plain data (SPEC §2), so the ranking task can
recompute the whole leaderboard from stored numbers and the tests can pin it down with
hand-built matrices:

- M: the cross-attack matrix, float (n, n), M[a][b] = accuracy of network a on adv(b);
  indices are whatever the caller uses (rows of its matrix), the ladder is a list of them.
- correct: optional per-image correctness, correct[a][b] = bool array (images,) saying
  whether a is right on each image of adv(b); all the same length (the eval split).
  Accepted as a bool array (n, n, images), nested sequences, or a mapping
  {(a, b): array} (missing pairs simply carry no evidence).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from evaluator.engine.metrics import mcnemar_exact

Correctness = Union[np.ndarray, Sequence[Sequence[np.ndarray]], Mapping[tuple[int, int], np.ndarray]]

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Pairwise:
    """One comparison under the charter's rule: a is more robust than b iff acc_a > acc_b.

    acc_a = M[a][b] (a attacked with b's adversarial set), acc_b = M[b][a]. Equal
    accuracies are a tie: neither wins. p_value is the exact McNemar test on the
    paired images (NaN when no per-image correctness was given).
    """

    a: int
    b: int
    acc_a: float
    acc_b: float
    difference: float
    a_wins: bool
    b_wins: bool
    p_value: float
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if math.isnan(self.p_value):
            out["p_value"] = None
        return out


@dataclass(frozen=True)
class LevelResult:
    """X's level and the comparisons behind it.

    wins[k]: X is more robust than the reference at ladder position k (0-based, so
    wins[0] is R1). deciding: the ladder position whose comparison fixes the level,
    the first loss, or the last win when X beat every rung; None for an empty ladder.
    deciding_reference: the matrix index of that reference (ladder[deciding]).
    """

    level: int
    wins: list[bool]
    deciding: int | None
    deciding_reference: int | None


def pairwise(M: np.ndarray, a: int, b: int, correct: Correctness | None = None) -> Pairwise:
    """Compare networks a and b of the cross-attack matrix M."""
    M = _matrix(M)
    if a == b:
        raise ValueError("a network is not compared with itself")
    acc_a, acc_b = float(M[a, b]), float(M[b, a])
    p_value = math.nan
    if correct is not None:
        a_on_b, b_on_a = _cell(correct, a, b), _cell(correct, b, a)
        if a_on_b is None or b_on_a is None:
            raise ValueError(f"no per-image correctness for pair ({a}, {b})")
        # Image i pairs (a right on adv(b)_i, b right on adv(a)_i): both adversarial
        # sets come from the same eval image i, so the outcomes are paired.
        p_value = mcnemar_exact(a_on_b, b_on_a).p_value
    return Pairwise(
        a=a,
        b=b,
        acc_a=acc_a,
        acc_b=acc_b,
        difference=acc_a - acc_b,
        a_wins=acc_a > acc_b,
        b_wins=acc_b > acc_a,
        p_value=p_value,
        significant=bool(p_value < SIGNIFICANCE),  # NaN compares False
    )


def ladder_order(M: np.ndarray, *, among: Sequence[int] | None = None) -> list[int]:
    """Reference indices ordered from least to most robust (R1 first).

    Sort key, ascending: number of pairwise wins against the other references,
    then mean accuracy on the other references' adversarial sets (mean over b != a
    of M[a][b]), then the index itself so equal records give a deterministic order
    (lower index first, i.e. placed lower on the ladder).

    among: the references' indices in M when M also holds other networks;
    default all of M. Only comparisons among these count.
    """
    M = _matrix(M)
    refs = list(range(M.shape[0])) if among is None else [int(r) for r in among]
    if len(set(refs)) != len(refs):
        raise ValueError("duplicate reference index")
    if len(refs) <= 1:
        return refs
    sub = M[np.ix_(refs, refs)]
    off = ~np.eye(len(refs), dtype=bool)
    if not np.isfinite(sub[off]).all():
        raise ValueError("the references' cross-attack matrix is incomplete (NaN/inf)")
    wins = ((sub > sub.T) & off).sum(axis=1)
    mean_other = np.where(off, sub, 0.0).sum(axis=1) / (len(refs) - 1)
    keys = sorted(range(len(refs)), key=lambda i: (int(wins[i]), float(mean_other[i]), refs[i]))
    return [refs[i] for i in keys]


def level(wins_against: Sequence[bool]) -> int:
    """Largest N with wins_against[0..N-1] all true (X beats R1..RN); 0 if it loses to R1.

    Stops at the first loss: wins above a loss do not count (the ladder is climbed
    rung by rung, so a network that loses to R2 is level 1 even if it beats R5).
    """
    n = 0
    for won in wins_against:
        if not won:
            break
        n += 1
    return n


def level_of(
    x_on_ref_adv: np.ndarray,
    refs_on_x_adv: np.ndarray,
    ladder: Sequence[int],
    *,
    skip: int | None = None,
) -> LevelResult:
    """Level of a network X against the ladder.

    x_on_ref_adv[r]: accuracy of X on adv(r); refs_on_x_adv[r]: accuracy of
    reference r on adv(X); both indexed by matrix index r (not ladder position), so
    a caller can pass X's row and column of M directly. X beats r iff
    x_on_ref_adv[r] > refs_on_x_adv[r] (ties are losses: "more robust" is strict;
    a NaN, i.e. a comparison not yet evaluated, is a loss too).

    skip: a matrix index treated as beaten without comparison (used for a reference
    ranked against its own ladder, see reference_levels); never the deciding rung.
    """
    x_row = np.asarray(x_on_ref_adv, dtype=np.float64)
    x_col = np.asarray(refs_on_x_adv, dtype=np.float64)
    wins = [True if r == skip else bool(x_row[r] > x_col[r]) for r in ladder]
    n = level(wins)
    positions = [k for k, r in enumerate(ladder) if r != skip]
    if n < len(wins):
        deciding: int | None = n
    else:
        deciding = positions[-1] if positions else None
    return LevelResult(
        level=n,
        wins=wins,
        deciding=deciding,
        deciding_reference=None if deciding is None else int(ladder[deciding]),
    )


def reference_level_results(M: np.ndarray, ladder: Sequence[int]) -> list[LevelResult]:
    """LevelResult of every reference, in ladder order (see reference_levels)."""
    M = _matrix(M)
    return [level_of(M[r, :], M[:, r], ladder, skip=r) for r in ladder]


def reference_levels(M: np.ndarray, ladder: Sequence[int]) -> list[int]:
    """Level of each reference in ladder order, leaving itself out.

    Reference r at ladder position p is compared with every other rung; its own
    rung counts as beaten, and N counts positions of the original ladder. So
    level(r) = the largest N such that r is more robust than every one of R1..RN
    other than itself. With a consistent (transitive) ladder R_k gets exactly
    level k, the same scale an upload's level is read on: an upload of level k sits
    between R_k and R_{k+1}.
    """
    return [result.level for result in reference_level_results(M, ladder)]


def bradley_terry(
    wins: np.ndarray,
    *,
    prior: float = 0.5,
    tol: float = 1e-10,
    mm_iter: int = 2_000,
    max_newton: int = 100,
) -> np.ndarray:
    """Bradley-Terry log-strengths from a win-count matrix, centred at mean 0.

    wins[i][j]: number of comparisons (paired images) i won against j; the diagonal
    is ignored. Model: P(i beats j) = sigmoid(s_i - s_j) with s = log-strength in
    natural-log units (multiply by 400 / ln 10 for Elo points).

    `prior` pseudo-wins are added each way for every pair: the maximum-likelihood
    estimate does not exist for a perfect record (strength -> infinity) or a
    disconnected comparison graph, and the prior makes it unique and finite while
    barely moving well-supported scores (hundreds of images per pair).

    Fitted by Hunter's (2004) MM algorithm, p_i <- W_i / sum_j n_ij / (p_i + p_j),
    which raises the likelihood monotonically from any start. MM converges only
    linearly, and near-perfect records (one network right on every image where the
    other fails) need ~1e5 iterations, so if it has not converged after `mm_iter`
    iterations it is finished by Newton steps with backtracking on the same concave
    log-likelihood: same unique maximum, reached in a few steps.
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
    # log sigmoid(x) = -log(1 + e^-x), computed without overflow.
    return float(-(w * np.logaddexp(0.0, -diff)).sum())


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


def pairwise_wins(correct: Correctness, n: int | None = None) -> np.ndarray:
    """Win counts for bradley_terry from per-image correctness.

    wins[i][j] = number of images k where i is right on adv(j)_k and j is wrong on
    adv(i)_k: exactly McNemar's discordant count b for the pair (i, j).
    """
    n = _size(correct) if n is None else n
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            i_on_j, j_on_i = _cell(correct, i, j), _cell(correct, j, i)
            if i_on_j is None or j_on_i is None:
                continue  # pair not evaluated: no evidence either way
            i_on_j = np.asarray(i_on_j, dtype=bool)
            j_on_i = np.asarray(j_on_i, dtype=bool)
            if i_on_j.shape != j_on_i.shape:
                raise ValueError(f"pair ({i}, {j}): correctness vectors differ in length")
            out[i, j] = np.count_nonzero(i_on_j & ~j_on_i)
            out[j, i] = np.count_nonzero(j_on_i & ~i_on_j)
    return out


def robustness_scores(correct: Correctness, n: int | None = None, *, prior: float = 0.5) -> np.ndarray:
    """Robustness score of every network: Bradley-Terry on the paired per-image outcomes.

    n: number of networks (needed only for a mapping whose largest index is absent).
    Returns natural-log strengths centred at 0; higher is more robust.
    """
    return bradley_terry(pairwise_wins(correct, n), prior=prior)


def _matrix(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"cross-attack matrix must be square, got shape {M.shape}")
    return M


def _size(correct: Correctness) -> int:
    if isinstance(correct, Mapping):
        return 1 + max((max(a, b) for a, b in correct), default=-1)
    return len(correct)


def _cell(correct: Correctness, a: int, b: int) -> np.ndarray | None:
    if isinstance(correct, Mapping):
        return correct.get((a, b))
    return correct[a][b]
