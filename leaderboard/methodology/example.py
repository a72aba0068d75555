"""The worked example: one network's numbers recomputed, step by step, from the stored
results of a benchmark (per-image predictions, stored reference scores), with the same
engine functions the ranking uses. The methodology page and docs/METHODOLOGY.md both
print `example_markdown(worked_example(...))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.contrib.auth.models import AnonymousUser

from evaluator.engine import ladder as ladder_engine
from evaluator.engine import metrics
from evaluator.models import Evaluation
from leaderboard import selectors
from leaderboard.methodology.markup import md_escape
from leaderboard.models import Benchmark, Network


@dataclass
class Example:
    benchmark: Benchmark
    network: Network
    clean: metrics.Accuracy
    comparisons: list[dict[str, Any]]
    # Bradley-Terry: for an upload, its score placed against the stored reference scores;
    # for a reference, the references fitted again among themselves.
    recomputed_score: float | None
    reference_scores: list[tuple[Network, float]] = field(default_factory=list)


def example_network(*, benchmark: Benchmark) -> Network | None:
    """The default subject: the public ranked upload with the highest level (then score),
    else the reference on the middle rung of the ladder."""
    ranked = Network.objects.filter(benchmark=benchmark, is_public=True, status=Network.Status.RANKED,
                                     level__isnull=False, adversarial__isnull=False)
    upload = ranked.filter(is_reference=False).order_by("-level", "-score", "pk").first()
    if upload is not None:
        return upload
    ladder = list(benchmark.ladder or [])
    if not ladder:
        return None
    return ranked.filter(pk=ladder[len(ladder) // 2]).first()


def _reference_fit(benchmark: Benchmark) -> dict[int, float] | None:
    """Bradley-Terry among the references, refitted from their stored predictions."""
    ladder = list(benchmark.ladder or [])
    refs = {n.pk: n for n in Network.objects.filter(pk__in=ladder).select_related("benchmark", "adversarial")}
    index = {pk: i for i, pk in enumerate(ladder)}
    wins = np.zeros((len(ladder), len(ladder)))
    for pk in ladder:
        if pk not in refs:
            return None
        for c in selectors.reference_comparisons(network=refs[pk]):
            if c.get("self"):
                continue
            if c.get("pending"):
                return None
            wins[index[pk], index[c["reference"].pk]] = c["ours_only"]
    fitted = ladder_engine.reference_scores(wins, list(range(len(ladder))))
    return {ladder[i]: s for i, s in fitted.items()}


def worked_example(*, benchmark: Benchmark, network: Network | None = None) -> Example | None:
    """Everything the example prints, read from the database (None before a ranking)."""
    network = network or example_network(benchmark=benchmark)
    if network is None or network.level is None or not hasattr(network, "adversarial"):
        return None
    clean = Evaluation.objects.filter(network=network, kind=Evaluation.Kind.CLEAN, source__isnull=True).first()
    if clean is None:
        return None
    comparisons = selectors.reference_comparisons(network=network)
    stored = {int(k): float(v) for k, v in (benchmark.reference_scores or {}).items()}
    names = {n.pk: n for n in Network.objects.filter(pk__in=list(stored))}
    example = Example(benchmark=benchmark, network=network,
                      clean=metrics.accuracy_from_counts(clean.correct, clean.total),
                      comparisons=comparisons, recomputed_score=None,
                      reference_scores=[(names[pk], stored[pk]) for pk in benchmark.ladder or [] if pk in names])
    if network.is_reference:
        fit = _reference_fit(benchmark)
        example.recomputed_score = None if fit is None else fit.get(network.pk)
    else:
        rows = [c for c in comparisons if "ours_only" in c and c["reference"].pk in stored]
        if rows and len(rows) == len(stored):
            example.recomputed_score = ladder_engine.place_score(
                [c["ours_only"] for c in rows], [c["theirs_only"] for c in rows],
                [stored[c["reference"].pk] for c in rows])
    return example


# --------------------------------------------------------------------------- Markdown


def _p(x: float) -> str:
    return f"{x * 100:.1f}%"


def _pvalue(p: float) -> str:
    return f"{p:.2e}" if p < 0.001 else f"{p:.3f}"


def _wilson_steps(acc: metrics.Accuracy) -> str:
    n, p, z = acc.total, acc.correct / acc.total, metrics.Z_95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (f"p̂ = {acc.correct} / {n} = {p:.4f}; with z = {z:.5f}, centre = (p̂ + z² / {2 * n}) / "
            f"(1 + z² / {n}) = {centre:.5f} and half-width = {half:.5f}, so the interval is "
            f"[{acc.low:.4f}, {acc.high:.4f}], shown as {_p(acc.value)} {acc.low * 100:.1f}–{acc.high * 100:.1f}")


def _level_section(ex: Example, name: str) -> list[str]:
    net = ex.network
    out = ["### 3. Pairwise comparisons and the level", "",
           f"{name} against every rung, each pair on the union of both adversarial sets "
           f"([pairwise rule](#pairwise), [McNemar](#mcnemar)); b = images only {name} gets right, c = images "
           "only the reference gets right:", "",
           f"| rung | reference | images | {name} right | reference right | b | c | McNemar p | more robust? |",
           "|---|---|---|---|---|---|---|---|---|"]
    climbing, stop = True, None
    for c in ex.comparisons:
        ref = md_escape(c["reference"].name)
        if c.get("self"):
            out.append(f"| R{c['position']} | {ref} | — | — | — | — | — | — | its own rung: no |")
            verdict = False
        elif c.get("pending"):
            out.append(f"| R{c['position']} | {ref} | — | — | — | — | — | — | not evaluated yet |")
            verdict = False
        else:
            verdict = c["wins"]
            answer = "yes" if verdict else ("tie: no" if c["tie"] else "no")
            out.append(f"| R{c['position']} | {ref} | {c['images']} | {c['ours_correct']} | {c['theirs_correct']} "
                       f"| {c['ours_only']} | {c['theirs_only']} | {_pvalue(c['p_value'])} | {answer} |")
        if climbing and not verdict:
            climbing, stop = False, c
    out.append("")
    if stop is None:
        out.append(f"{name} is more robust than every rung, R1 … R{len(ex.comparisons)}: level "
                   f"**{len(ex.comparisons)}** (stored: {net.level}).")
    else:
        why = ("its own rung (no network is more robust than itself)" if stop.get("self")
               else "the first rung it does not beat")
        out.append(f"The climb stops at R{stop['position']}, {why}: level **{stop['position'] - 1}** "
                   f"(stored: {net.level}).")
    deciding = stop if stop is not None and "ours_only" in stop else (
        ex.comparisons[-1] if stop is None and ex.comparisons and "ours_only" in ex.comparisons[-1] else None)
    if deciding is not None:
        b, c = deciding["ours_only"], deciding["theirs_only"]
        p = metrics.mcnemar_p_value(b, c)
        out += ["", f"The deciding comparison's McNemar test: b = {b}, c = {c}, p = min(1, 2 × P(X ≤ {min(b, c)})) "
                f"with X ~ Binomial({b + c}, ½) = {_pvalue(p)}, "
                f"{'significant' if p < ladder_engine.SIGNIFICANCE else 'not significant'} at "
                f"{ladder_engine.SIGNIFICANCE:g}."]
    return out


def _score_section(ex: Example, name: str) -> list[str]:
    net = ex.network
    out = ["### 5. Robustness score", ""]
    anchors = ", ".join(f"{md_escape(r.name)} {s:+.3f}" for r, s in ex.reference_scores)
    if net.is_reference:
        out.append(f"{name} is a reference: the references' Bradley–Terry scores are fitted among themselves "
                   f"from their win counts (the b of each pair) and stored: {anchors or 'none yet'}.")
        if ex.recomputed_score is not None:
            out.append(f"Fitted again from the stored predictions, {name} gets {ex.recomputed_score:.3f} "
                       f"(stored: {net.score:.3f}).")
    else:
        out.append(f"The fixed reference scores: {anchors}. {name}'s wins (b) and losses (c) against each "
                   "reference, from the table above, place it by one-dimensional maximum likelihood against them")
        if ex.recomputed_score is not None:
            out[-1] += f": score **{ex.recomputed_score:.3f}** (stored: {net.score:.3f})."
        else:
            out[-1] += "."
    return out


def example_markdown(ex: Example | None) -> str:
    """The worked example as Markdown (## heading included)."""
    if ex is None:
        return ("## Worked example\n\nNo network of this benchmark is ranked yet: the example appears once "
                "the reference suite is built.\n")
    bench, net = ex.benchmark, ex.network
    name = f"**{md_escape(net.name)}**"
    when = bench.ranked_at.strftime("%Y-%m-%d %H:%M UTC") if bench.ranked_at else "not yet ranked"
    kind = "a reference defense" if net.is_reference else "an upload"
    out = ["## Worked example", "",
           f"From the stored results of benchmark `{bench.name}` ({bench.eval_size:,} eval images, "
           f"ε = {bench.epsilon:g}, α = {bench.step:g}, {bench.steps} steps; ranked {when}): {name}, {kind}, "
           f"level {net.level}.", "",
           "### 1. Clean accuracy and its Wilson interval", "",
           f"{name} is right on {ex.clean.correct} of {ex.clean.total} clean eval images: {_wilson_steps(ex.clean)}.",
           "", "### 2. Universal robustness and tier", ""]
    if net.universal_accuracy is not None and net.clean_accuracy:
        u, c = net.universal_accuracy, net.clean_accuracy
        fitted = ("it is the control, the network they were fitted on" if net.recipe == "control"
                  else "a transfer figure: they were fitted on the control")
        out.append(f"Universal accuracy {_p(u)} ({fitted}) / clean accuracy {_p(c)} = universal robustness "
                   f"**{metrics.universal_robustness(u, c):.3f}**; tier = floor(10 × {u:.4f}) = "
                   f"**{metrics.universal_tier(u)}**.")
    else:
        out.append("Not measured yet.")
    out += [""] + _level_section(ex, name) + ["", "### 4. Robust accuracy", ""]
    if net.robust_accuracy is not None:
        n = ex.clean.total
        text = (f"Right under every attack at once on {round(net.robust_accuracy * n)} of {n} images: "
                f"**{_p(net.robust_accuracy)}** [{net.robust_low * 100:.1f}–{net.robust_high * 100:.1f}]")
        if net.audit_curve:
            full = net.audit_curve[-1]
            text += (f"; the audit alone (ε = {full['epsilon']:g}, {full['restarts']} restarts × {full['steps']} "
                     f"steps) leaves {full['correct']} of {full['total']}, its own targeted attack "
                     f"{_p(net.whitebox_accuracy)}")
        out.append(text + ".")
    else:
        out.append("Not measured yet.")
    out += [""] + _score_section(ex, name) + ["", "### 6. Flags", ""]
    if net.flags:
        notes = net.flag_notes or {}
        out += [f"- [`{f}`](#flag-{f}): {md_escape(notes.get(f, f))}" for f in net.flags]
    else:
        out.append(f"None: no check found a reason to distrust {name}'s level.")
    return "\n".join(out) + "\n"


def example_for(*, benchmark: Benchmark | None, network_pk: int | None = None, user=None) -> Example | None:
    """The page's example: a chosen network the viewer may see, or the default one."""
    if benchmark is None:
        return None
    network = None
    if network_pk is not None:
        network = selectors.network_get_visible(user=user or AnonymousUser(), pk=network_pk)
        if network.benchmark_id != benchmark.pk:
            network = None
    return worked_example(benchmark=benchmark, network=network)
