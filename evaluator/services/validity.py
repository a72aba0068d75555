"""Does the level measure robustness? (issue 12): the numbers behind the benchmark page's
section and docs/BENCHMARK.md, computed once here from stored rows (engine.validity)."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import Q

from evaluator.engine import validity as validity_engine
from evaluator.models import Evaluation
from evaluator.services.markdown import accuracy_cell
from leaderboard.models import Benchmark, Network

S = Network.Status
ROBUST_INTRO = (
    "Robust accuracy: per eval image, right under every attack at once (its own targeted attack, the "
    "untargeted audit, the universal perturbations of the control and its own, every other network's "
    "adversarial images), with its 95% Wilson interval. The revised rule's ladder and the charter's "
    "(transfer only: A beats B if A on adv(B) is more accurate than B on adv(A)), rung by rung:"
)


def benchmark_validity(*, benchmark: Benchmark) -> dict[str, Any]:
    """"Does the level measure robustness?" (engine.validity.assess) across the references
    and the public ranked uploads (private ones stay out, so every visitor reads the same
    numbers). Two queries whatever the number of networks: the charter rule needs only
    accuracies, and only each network's row and column against the references.

    A network without a robust accuracy counts as "not measured yet", never as a guess.
    """
    nets = list(Network.objects.filter(benchmark=benchmark, status=S.RANKED, level__isnull=False)
                .filter(Q(is_reference=True) | Q(is_public=True)).order_by("pk"))
    index = {n.pk: i for i, n in enumerate(nets)}
    ladder_ids = [pk for pk in (benchmark.ladder or []) if pk in index]
    M = np.full((len(nets), len(nets)), np.nan)
    for a, b, value in Evaluation.objects.filter(kind=Evaluation.Kind.ADVERSARIAL).filter(
        Q(network_id__in=index, source_id__in=ladder_ids) | Q(network_id__in=ladder_ids, source_id__in=index)
    ).values_list("network_id", "source_id", "accuracy"):
        M[index[a], index[b]] = value
    ladder = [index[pk] for pk in ladder_ids]
    result = validity_engine.assess(
        levels=[n.level for n in nets], ladder=ladder, scores=[n.score for n in nets], M=M,
        robust=[n.robust_accuracy for n in nets], images=benchmark.eval_size or 0,
        robust_low=[n.robust_low for n in nets],
        robust_high=[n.robust_high for n in nets],
    )
    return {
        "references": len(ladder), "uploads": len(nets) - len(ladder), "measured": result.measured,
        "correlations": result.correlations, "significant_pairs": result.significant_pairs,
        "disagreements": [(nets[ladder[i - 1]], i, nets[ladder[j - 1]], j) for i, j in result.disagreements],
        "ladder": [nets[i] for i in ladder], "charter_ladder": [nets[i] for i in result.charter_ladder],
    }


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def validity_markdown(*, benchmark: Benchmark) -> list[str]:
    """The report's section: both ladders beside robust accuracy, the rank correlations
    of every ordering with it, and the ladder check. Every number is read from
    benchmark_validity (what the benchmark page shows)."""
    v = benchmark_validity(benchmark=benchmark)
    lines = ["## Does the level measure robustness?", ""]
    if not v["measured"]:
        return lines + ["Robust accuracy is not measured yet, so the orderings cannot be compared with it.", ""]
    lines += [
        ROBUST_INTRO,
        "",
        "| rung | revised rule | robust accuracy | charter rule | robust accuracy |",
        "|---|---|---|---|---|",
    ]
    for k, (ours, theirs) in enumerate(zip(v["ladder"], v["charter_ladder"]), start=1):
        lines.append(f"| R{k} | {ours.name} | {accuracy_cell(ours, 'robust')} | {theirs.name} | {accuracy_cell(theirs, 'robust')} |")
    lines += [
        "",
        f"Rank correlation of each ordering with robust accuracy over the {v['references']} references and "
        f"{v['uploads']} public ranked uploads (1 = the same order; networks of equal level ordered by their "
        "ladder; p-values of scipy's tests):",
        "",
        "| ordering | Spearman ρ | p | Kendall τ | p | networks |",
        "|---|---|---|---|---|---|",
    ]
    for c in v["correlations"]:
        if c.defined:
            lines.append(f"| {c.ordering} | {c.spearman:.2f} | {_p(c.spearman_p)} | {c.kendall:.2f} | "
                         f"{_p(c.kendall_p)} | {c.networks} |")
        else:
            lines.append(f"| {c.ordering} | undefined | – | undefined | – | {c.networks} |")
    bad = v["disagreements"]
    lines += [
        "",
        f"Reference pairs whose robust-accuracy intervals are disjoint: {v['significant_pairs']}; of those, "
        f"pairs the revised ladder orders against robust accuracy: {len(bad)}"
        + ("." if not bad else ": " + "; ".join(f"{lo.name} (R{i}) is more robust than {hi.name} (R{j})"
                                              for lo, i, hi, j in bad) + "."),
        "",
    ]
    return lines
