"""Checks the report's "Does the level measure robustness?" section (issue 12) line by
line against the stored rows, recomputing every number independently: the Wilson
intervals, scipy's rank correlations on the orderings rebuilt here, the disjoint pairs."""

from __future__ import annotations

import math
import re

import numpy as np
from scipy import stats

from evaluator.engine.validity import charter_ranking
from evaluator.models import Evaluation
from evaluator.services.validity import ROBUST_INTRO
from leaderboard.models import Benchmark, Network

HEADING = "## Does the level measure robustness?"
CELL = r"(?P<{0}>[\d.]+)% \[(?P<{0}_lo>[\d.]+), (?P<{0}_hi>[\d.]+)\]"


def split_validity(text: str) -> tuple[str, list[str]]:
    """(the report without the section, the section's lines)."""
    lines = text.splitlines()
    start = lines.index(HEADING)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return "\n".join(lines[:start] + lines[end:]), lines[start:end]


def _wilson(p: float, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _cell(m: re.Match, key: str, net: Network, n: int) -> None:
    low, high = _wilson(net.robust_accuracy, n)
    for got, want in ((m[key], net.robust_accuracy), (m[f"{key}_lo"], low), (m[f"{key}_hi"], high)):
        assert abs(float(got) - 100 * want) <= 0.05 + 1e-9, (got, want)


def _p(text: str, value: float) -> None:
    assert text == ("< 0.001" if value < 0.001 else f"{value:.3f}"), (text, value)


def check_validity(section: list[str], bench: Benchmark) -> None:
    nets = list(Network.objects.filter(benchmark=bench, status="ranked", level__isnull=False, is_reference=True))
    nets += list(Network.objects.filter(benchmark=bench, status="ranked", level__isnull=False, is_reference=False,
                                        is_public=True))
    by_pk = {n.pk: n for n in nets}
    refs = [by_pk[pk] for pk in bench.ladder]
    n_images = bench.eval_size
    # The charter ladder from the matrix as stored (A on adv(B)).
    index = {n.pk: i for i, n in enumerate(nets)}
    M = np.full((len(nets), len(nets)), np.nan)
    for e in Evaluation.objects.filter(kind="adversarial", network__in=nets, source__in=nets):
        M[index[e.network_id], index[e.source_id]] = e.correct / e.total
    charter_order, charter_levels = charter_ranking(M, [index[r.pk] for r in refs])
    seen = {"rung": 0, "corr": 0, "count": 0, "pairs": 0}
    robust = [n.robust_accuracy for n in nets]
    rung = {r.pk: k for k, r in enumerate(refs, start=1)}
    charter_rung = {nets[i].pk: k for k, i in enumerate(charter_order, start=1)}
    keys = {
        "level (revised rule)": [(n.level, rung.get(n.pk, 0)) for n in nets],
        "level (charter rule, transfer only)": [(charter_levels[i], charter_rung.get(n.pk, 0))
                                                for i, n in enumerate(nets)],
        "robustness score": [(n.score, 0) for n in nets],
    }
    for line in section:
        if not re.search(r"\d", line):
            continue
        if line == ROBUST_INTRO:
            continue  # its one number is the interval's level, a constant of the wording
        if m := re.fullmatch(rf"\| R(?P<k>\d+) \| (?P<ours>[^|]+) \| {CELL.format('a')} \| (?P<theirs>[^|]+) \| "
                             rf"{CELL.format('b')} \|", line):
            k = int(m["k"])
            assert m["ours"] == refs[k - 1].name and m["theirs"] == nets[charter_order[k - 1]].name
            _cell(m, "a", refs[k - 1], n_images)
            _cell(m, "b", nets[charter_order[k - 1]], n_images)
            seen["rung"] += 1
        elif m := re.fullmatch(r"\| (?P<name>[^|]+) \| (?P<rho>-?[\d.]+) \| (?P<rp>[^|]+) \| (?P<tau>-?[\d.]+) \| "
                               r"(?P<tp>[^|]+) \| (?P<n>\d+) \|", line):
            # Orderings rebuilt here: (level, ladder position), ranked lexicographically.
            order = sorted(range(len(nets)), key=lambda i: keys[m["name"]][i])
            ranks = np.empty(len(nets))
            ranks[order] = np.arange(len(nets))
            rho, rho_p = stats.spearmanr(ranks, robust)
            tau, tau_p = stats.kendalltau(ranks, robust)
            assert m["rho"] == f"{rho:.2f}" and m["tau"] == f"{tau:.2f}", (line, rho, tau)
            _p(m["rp"], rho_p), _p(m["tp"], tau_p)
            assert int(m["n"]) == len(nets)
            seen["corr"] += 1
        elif m := re.fullmatch(r"Rank correlation of each ordering with robust accuracy over the (?P<refs>\d+) "
                               r"references and (?P<ups>\d+) public ranked uploads \(1 = the same order; networks of equal level "
                               r"ordered by their ladder; p-values of scipy's tests\):", line):
            assert (int(m["refs"]), int(m["ups"])) == (len(refs), len(nets) - len(refs))
            seen["count"] += 1
        elif m := re.fullmatch(r"Reference pairs whose robust-accuracy intervals are disjoint: (?P<pairs>\d+); of "
                               r"those, pairs the revised ladder orders against robust accuracy: (?P<bad>\d+)(.*)",
                               line):
            disjoint, bad = 0, []
            for i in range(len(refs)):
                for j in range(i + 1, len(refs)):
                    lo_i, hi_i = refs[i].robust_low, refs[i].robust_high
                    lo_j, hi_j = refs[j].robust_low, refs[j].robust_high
                    disjoint += lo_i > hi_j or lo_j > hi_i
                    if lo_i > hi_j:  # the lower rung is significantly more robust
                        bad.append(f"{refs[i].name} (R{i + 1}) is more robust than {refs[j].name} (R{j + 1})")
            assert (int(m["pairs"]), int(m["bad"])) == (disjoint, len(bad))
            assert m[3] == ("." if not bad else ": " + "; ".join(bad) + "."), m[3]
            seen["pairs"] += 1
        else:
            raise AssertionError(f"a line with numbers that no check covers: {line!r}")
    assert seen == {"rung": len(refs), "corr": 3, "count": 1, "pairs": 1}, seen
