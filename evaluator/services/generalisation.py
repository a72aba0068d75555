"""The generalisation section (issue 15): the built-in benchmarks' ladders compared.

Reads the stored ladders of mnist-5k, digits-8x8 and mnist-5k-mlp (engine.builtins),
compares them (engine.generalisation) and writes the section of docs/BENCHMARK.md;
the benchmark page shows the same numbers (leaderboard.generalisation_plots). A
benchmark counts as built when it is ready and its ladder has at least two references;
with fewer than two built, the section says how to build the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluator.engine import builtins
from evaluator.engine import generalisation as engine
from leaderboard.models import Benchmark, Network

HEADING = "## Generalisation across datasets and architectures"
EXPLANATION = (
    "Each ladder orders the same reference defenses from least (R1) to most robust; the cells give the rung "
    "and the robust accuracy (right under every attack) with its 95% interval. Kendall's τ compares two "
    "orders over the references both have (1: the same order, −1: reversed); p is the two-sided p-value "
    "against unrelated orders. Places count among the shared references only."
)


@dataclass(frozen=True)
class Missing:
    name: str
    command: str
    question: str
    state: str  # "absent", or the Benchmark's state (new, building, failed)


@dataclass(frozen=True)
class GeneralisationSection:
    built: list[str]  # built-in benchmarks with a ladder, in engine.builtins order
    missing: list[Missing]
    result: engine.Generalisation | None  # None with fewer than two built

    @property
    def shown(self) -> bool:
        return self.result is not None


def ladder_rungs(*, benchmark: Benchmark) -> list[engine.Rung]:
    """The benchmark's references in ladder order, with their robust accuracy."""
    refs = {
        n.pk: n for n in Network.objects.filter(benchmark=benchmark, is_reference=True, pk__in=benchmark.ladder or [])
    }
    ordered = [refs[pk] for pk in benchmark.ladder or [] if pk in refs]
    return [engine.Rung(n.recipe or n.name, k, n.robust_accuracy, n.robust_low, n.robust_high)
            for k, n in enumerate(ordered, start=1)]


def generalisation_section() -> GeneralisationSection:
    benches = {b.name: b for b in Benchmark.objects.filter(name__in=list(builtins.BUILTINS))}
    ladders: dict[str, list[engine.Rung]] = {}
    missing: list[Missing] = []
    for name, spec in builtins.BUILTINS.items():
        bench = benches.get(name)
        rungs = ladder_rungs(benchmark=bench) if bench is not None and bench.state == Benchmark.State.READY else []
        if len(rungs) >= 2:
            ladders[name] = rungs
        else:
            missing.append(Missing(name, spec.command, spec.question or "the default benchmark",
                                   bench.state if bench is not None else "absent"))
    result = engine.compare_ladders(ladders) if len(ladders) >= 2 else None
    return GeneralisationSection(list(ladders), missing, result)


# --------------------------------------------------------------------------- report


def _rung_cell(rung: engine.Rung | None) -> str:
    if rung is None:
        return "–"
    if rung.robust is None or rung.robust_low is None or rung.robust_high is None:
        return f"R{rung.rung}"
    return f"R{rung.rung}, {100 * rung.robust:.1f}% [{100 * rung.robust_low:.1f}, {100 * rung.robust_high:.1f}]"


def _pair_lines(pair: engine.PairComparison) -> list[str]:
    head = f"- **{pair.a} against {pair.b}** ({len(pair.recipes)} shared references): "
    if pair.tau is None:
        return [head + f"too few shared references for τ (at least {engine.MIN_COMMON})."]
    t = pair.tau
    line = head + f"Kendall's τ = {t.tau:.2f}, p = {t.p_value:.2g} ({t.method})"
    moved = pair.moved
    line += (f"; moved by {engine.MOVE_MIN} or more places: "
             + ", ".join(f"{m.recipe} ({m.rank_a} → {m.rank_b})" for m in moved)
             if moved else f"; no reference moved by {engine.MOVE_MIN} or more places")
    sides = pair.changed_side
    line += ("; on the other side of the control: "
             + ", ".join(f"{m.recipe} ({'above' if m.above_control_a else 'below'} → "
                         f"{'above' if m.above_control_b else 'below'})" for m in sides)
             if sides else "; every reference stays on its side of the control")
    return [line + "."]


def generalisation_markdown(section: GeneralisationSection | None = None) -> list[str]:
    """The report's section, every number from the stored ladders and robust accuracies."""
    section = section or generalisation_section()
    lines = [HEADING, ""]
    names = ", ".join(builtins.BUILTINS)
    if section.result is None:
        lines.append(f"The same ten reference defenses are built on {names}: a second dataset and a second "
                     "architecture. Fewer than two of them are built, so there is nothing to compare yet. Build:")
        lines.append("")
        lines += [f"- `{m.command}`: {m.question}" for m in section.missing]
        return lines + [""]
    result = section.result
    lines += [
        EXPLANATION,
        "",
        "| reference | " + " | ".join(result.benchmarks) + " | against the control |",
        "|---|" + "---|" * len(result.benchmarks) + "---|",
    ]
    for row in result.rows:
        cells = " | ".join(_rung_cell(row.rungs[b]) for b in result.benchmarks)
        lines.append(f"| {row.recipe} | {cells} | {row.verdict} |")
    lines.append("")
    for pair in result.pairs:
        lines += _pair_lines(pair)
    if section.missing:
        lines += ["", "Not built yet: " + "; ".join(f"`{m.command}` ({m.question})" for m in section.missing) + "."]
    return lines + [""]
