"""docs/BENCHMARK.md, generated from stored results (never typed by hand).

The charter-style table of the reference suite, the cross-attack matrix, the noise
grid search, a comparison with what the charter reported on ImageNet, and how the
built-in benchmarks' ladders compare (services.generalisation, issue 15). Every
sentence with a number or a claim is computed here from a stored number (rows, the
references' recorded build reports, the stored dataset and universal set) or from the
charter's figures in SPEC §1; a verdict ("yes", "trades ...") is a stated threshold on
those numbers. tests/test_report.py parses the numbers back out and recomputes them.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from django.conf import settings

from evaluator.engine.datasets import load_dataset
from evaluator.models import UniversalSet
from evaluator.services import storage
from evaluator.services.markdown import accuracy_cell
from evaluator.services.analysis_report import analysis_markdown
from evaluator.services.generalisation import generalisation_markdown
from evaluator.services.ranking import matrix_gather
from evaluator.services.validity import validity_markdown
from leaderboard.models import Benchmark, Network

# The charter's ImageNet figures (SPEC §1): clean, universal, universal robustness.
CHARTER = {
    "control": (0.7585, 0.5525, 0.5525 / 0.7585),
    "pca": (0.2335, 0.2210, 0.9465),
    "down50": (0.6295, 0.5430, 0.8625),
    "down75": (0.7045, 0.5370, 0.7622),
}
# Thresholds the verdicts apply (stated in the sentences that use them).
NEAR_ONE = 0.1  # universal robustness within this of 1 counts as "near 1"
CLEAR_GAIN = 0.05  # a gain in universal robustness above this counts as a trade
TRANSFER_NOTE = (
    "The universal perturbations are fitted against the control only: for every other "
    "network the universal accuracy measures how well the control's perturbations transfer "
    "to it, not a universal attack fitted on that network."
)
OWN_NOTE = (
    "The same method, size and count fitted on each network itself; this column is one of "
    "the sets robust accuracy takes the worst case of."
)


@dataclass(frozen=True)
class Provenance:
    """Where and when a report was generated (the numbers it reads were stored earlier)."""

    date: str
    platform: str
    cpus: int
    commit: str
    dirty: bool


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def provenance() -> Provenance:
    return Provenance(
        date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        platform=f"{platform.system()} {platform.release()} {platform.machine()}, Python {platform.python_version()}",
        cpus=os.cpu_count() or 0,
        commit=_git("rev-parse", "HEAD") or "unknown",
        # Tracked files only: untracked scratch files do not change what generated it.
        dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
    )


@dataclass(frozen=True)
class PixelFacts:
    """Measured on the stored eval split and universal set (what every network sees)."""

    zero: float  # share of eval pixels exactly 0
    one: float  # share exactly 1
    clipped: float | None  # share of the universal perturbations' L1 mass clipping removes


def pixel_facts(benchmark: Benchmark) -> PixelFacts | None:
    if not benchmark.data_file or not storage.media_path(benchmark.data_file).exists():
        return None
    x = load_dataset(storage.media_path(benchmark.data_file)).x_eval
    clipped = None
    universal = UniversalSet.objects.filter(benchmark=benchmark).first()
    if universal is not None and storage.media_path(universal.file).exists():
        with np.load(storage.media_path(universal.file)) as data:
            p = data["perturbations"].astype(np.float64)
        # Image i gets perturbation i mod K (SPEC §2); what survives clipping is what it sees.
        applied = p[np.arange(len(x)) % len(p)]
        total = float(np.abs(applied).sum())
        if total > 0:
            kept = float(np.abs(np.clip(x + applied, 0.0, 1.0) - x).sum())
            clipped = 1.0 - kept / total
    return PixelFacts(zero=float((x == 0).mean()), one=float((x == 1).mean()), clipped=clipped)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _none(value: object) -> str:
    return "–" if value is None else str(value)


def _suite_table(refs: list[Network]) -> list[str]:
    lines = [
        "| rung | reference | clean | universal* | universal, own† | white-box | robust | universal robustness* "
        "| tier* | attack success | level |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rung, net in enumerate(refs, start=1):
        lines.append(
            f"| R{rung} | {net.name} | {accuracy_cell(net, 'clean')} | {accuracy_cell(net, 'universal')} | "
            f"{accuracy_cell(net, 'universal_own')} | {accuracy_cell(net, 'whitebox')} | {accuracy_cell(net, 'robust')} | "
            f"{_ratio(net.universal_robustness)} | {_none(net.universal_tier)} | "
            f"{_pct(net.attack_success)} | {_none(net.level)} |"
        )
    return lines


def _matrix_table(bench: Benchmark) -> list[str]:
    data = matrix_gather(benchmark=bench)
    order = {pk: k for k, pk in enumerate(bench.ladder)}
    idx = sorted((i for i, n in enumerate(data.networks) if n.is_reference),
                 key=lambda i: order.get(data.networks[i].pk, len(order)))
    names = [data.networks[i].name for i in idx]
    lines = ["| evaluated \\ attack of | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for i in idx:
        cells = [f"**{100 * data.M[i, j]:.1f}**" if i == j else f"{100 * data.M[i, j]:.1f}" for j in idx]
        lines.append(f"| {data.networks[i].name} | " + " | ".join(cells) + " |")
    return lines


def chosen_sigma(noise: Network) -> float | None:
    """σ as the noise recipe recorded it: report["sigma"] (the grid search's pick, or the
    fixed value); params["sigma"] is only the override and is None when searched."""
    value = (noise.report or {}).get("sigma")
    if value is None:
        value = (noise.params or {}).get("sigma")
    return None if value is None else float(value)


def _noise_grid(noise: Network | None) -> list[str]:
    grid = (noise.report or {}).get("grid") if noise else None
    if not noise or not grid:
        return ["(no noise grid recorded)"]
    keys = list(grid[0].keys())
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in grid:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    sigma = chosen_sigma(noise)
    if sigma is None:
        return lines
    lines.append("")
    if (noise.params or {}).get("sigma") is not None:
        lines.append(f"σ = {sigma:g}, fixed by the recipe's parameters (the grid is measured beside it).")
    else:
        drop = float((noise.params or {}).get("max_clean_drop", 0.0))
        lines.append(f"Chosen σ = {sigma:g}: the best probe accuracy among the σ whose clean accuracy is within "
                     f"{100 * drop:g} points of σ = 0's (ties: the smaller σ).")
    return lines


def _pca_sentence(pca: Network | None) -> list[str]:
    rep = (pca.report or {}) if pca else {}
    if not pca or rep.get("components") is None:
        return []
    variance = rep.get("variance_kept")
    return [f"PCA keeps {rep['components']} of {_none(rep.get('input_dims'))} components"
            + (f" ({100 * float(variance):.2f}% of the train variance)." if variance is not None else ".")]


def _comparison_pca(pca: Network | None, control: Network | None) -> list[str]:
    if not pca or pca.universal_robustness is None:
        return []
    rob = pca.universal_robustness
    near = abs(rob - 1) < NEAR_ONE
    line = (f"- **Does PCA keep universal robustness near 1** (within {NEAR_ONE:g})? Charter (ImageNet): "
            f"{CHARTER['pca'][2]:.4f}. Here: {rob:.3f}, {'yes' if near else 'no'}.")
    if control and control.clean_accuracy is not None and pca.clean_accuracy is not None:
        cost = 100 * (control.clean_accuracy - pca.clean_accuracy)
        charter_cost = 100 * (CHARTER["control"][0] - CHARTER["pca"][0])
        comps = (pca.report or {}).get("components")
        dims = (pca.report or {}).get("input_dims")
        line += (f" PCA {'costs' if cost >= 0 else 'gains'} {abs(cost):.1f} points of clean accuracy here "
                 f"({_pct(pca.clean_accuracy)} against the "
                 f"control's {_pct(control.clean_accuracy)}); in the charter it cost {charter_cost:.2f} points "
                 f"({100 * CHARTER['pca'][0]:.2f}% against {100 * CHARTER['control'][0]:.2f}%)"
                 + (f", while here the projection keeps {comps} of {dims} input dimensions." if comps and dims else "."))
    return [line]


def _pattern(costs_clean: bool, gain: float) -> str:
    """What a defense does with clean accuracy and universal robustness, by CLEAR_GAIN."""
    if not costs_clean:
        return "costs no clean accuracy"
    if gain > CLEAR_GAIN:
        return f"trades clean accuracy for a gain above {CLEAR_GAIN:g}"
    if gain > 0:
        return f"gives up clean accuracy for a gain of at most {CLEAR_GAIN:g}"
    return "gives up clean accuracy and gains no universal robustness"


def _comparison_downsample(net: Network | None, control: Network | None, recipe: str, label: str) -> list[str]:
    if not net or not control or None in (net.clean_accuracy, control.clean_accuracy,
                                           net.universal_robustness, control.universal_robustness):
        return []
    c_clean, _, c_rob = CHARTER[recipe]
    charter_gain = c_rob - CHARTER["control"][2]
    charter = _pattern(c_clean < CHARTER["control"][0], charter_gain)
    gain = net.universal_robustness - control.universal_robustness
    here = _pattern(net.clean_accuracy < control.clean_accuracy, gain)
    return [
        f"- **{label}:** charter {100 * c_clean:.2f}% clean, universal robustness {c_rob:.4f} "
        f"({charter_gain:+.4f} against its control). Here {_pct(net.clean_accuracy)} clean (control "
        f"{_pct(control.clean_accuracy)}), universal robustness {net.universal_robustness:.3f} (control "
        f"{control.universal_robustness:.3f}, {gain:+.3f}): here it {here}; in the charter it {charter}"
        + (" (the same pattern)." if here == charter else " (a different pattern).")
    ]


def _spread(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def _comparison_mnist(refs: list[Network], control: Network | None, facts: PixelFacts | None,
                      benchmark: Benchmark) -> list[str]:
    out: list[str] = []
    if facts is not None:
        line = (f"- **Where {benchmark.name} differs from the charter's ImageNet.** {100 * facts.zero:.1f}% of "
                f"the eval pixels are exactly 0 and "
                f"{100 * facts.one:.2f}% exactly 1, and clipping to [0, 1] cuts whatever part of a "
                "perturbation points out of that range")
        line += (f": it removes {100 * facts.clipped:.1f}% of the universal perturbations' L1 mass on the eval "
                 "images." if facts.clipped is not None else ".")
        out.append(line + f" The attack budget ε = {benchmark.epsilon:g} is {100 * benchmark.epsilon:g}% "
                   "of the pixel range.")
    clean = [n.clean_accuracy for n in refs if n.clean_accuracy is not None]
    univ = [n.universal_accuracy for n in refs if n.universal_accuracy is not None]
    if control and control.clean_accuracy is not None and len(clean) > 1 and len(univ) > 1:
        (c_lo, c_hi), (u_lo, u_hi) = _spread(clean), _spread(univ)
        mostly = (c_hi - c_lo) < (u_hi - u_lo)
        out.append(
            f"- **Clean against universal accuracy.** The control scores {_pct(control.clean_accuracy)} clean "
            f"(charter: {100 * CHARTER['control'][0]:.2f}%). The references' clean accuracies span "
            f"{_pct(c_lo)} to {_pct(c_hi)} and their universal accuracies {_pct(u_lo)} to {_pct(u_hi)}, so "
            + ("differences in universal robustness come mostly from the universal accuracy."
               if mostly else "clean and universal accuracy both move universal robustness.")
        )
    return out


LEVEL_RULE = (
    "level(X) = the largest N such that X is more robust than every one of R1 … RN, where X is more "
    "robust than R if it is right on more of the images of adv(X) and adv(R) together (exact McNemar "
    "test for significance). The climb stops at the first rung X does not beat, its own rung included: "
    "references and uploads are read on one scale, R_k reaches at most level k − 1, and an exact copy "
    "of R_k gets R_k's level."
)


def benchmark_markdown(*, benchmark: Benchmark, origin: Provenance | None = None) -> str:
    origin = origin or provenance()
    refs_by_pk = {n.pk: n for n in Network.objects.filter(benchmark=benchmark, is_reference=True)}
    refs = [refs_by_pk[pk] for pk in benchmark.ladder if pk in refs_by_pk]
    by_recipe = {n.recipe: n for n in refs}
    universal = UniversalSet.objects.filter(benchmark=benchmark).first()
    facts = pixel_facts(benchmark)
    gan = by_recipe.get("gan-data")
    control = by_recipe.get("control")
    ranked = f"{benchmark.ranked_at:%Y-%m-%d %H:%M} UTC" if benchmark.ranked_at else "never"
    lines = [
        f"# Benchmark {benchmark.name}",
        "",
        f"Generated by `python manage.py benchmark_report {benchmark.name} --output docs/BENCHMARK.md` from the "
        f"stored results on {origin.date}, on {origin.platform} with {origin.cpus} CPUs, at commit "
        f"{origin.commit}{' (with uncommitted changes)' if origin.dirty else ''}. The ranking it reads was "
        f"computed {ranked}. Do not edit by hand.",
        "",
        f"- Data: {benchmark.train_size} train / {benchmark.eval_size} eval images, "
        f"{benchmark.height}×{benchmark.width}×{benchmark.channels}, {benchmark.num_classes} classes.",
        f"- Gradient attack: targeted, ε = {benchmark.epsilon:g}, α = {benchmark.step:g}, "
        f"{benchmark.steps} steps (L∞).",
        f"- Universal perturbations: {benchmark.universal_count}, ξ = {benchmark.universal_xi:g}"
        + (f", computed against the control in {universal.seconds:.0f} s." if universal else "."),
        f"- \\* {TRANSFER_NOTE}",
        f"- † {OWN_NOTE}",
        "",
        "## The reference suite (ladder order, least robust first)",
        "",
        "Accuracies on the eval split with 95% Wilson intervals. Universal robustness = universal / clean "
        "accuracy; tier = floor(10 × universal accuracy); attack success = share of images on which the "
        "targeted attack reached its target.",
        "",
        LEVEL_RULE,
        "",
        *_suite_table(refs),
        "",
        *_pca_sentence(by_recipe.get("pca")),
    ]
    if gan and (gan.report or {}).get("real_accuracy") is not None:
        lines.append(f"GAN-data: the classifier trained only on generated digits scores "
                     f"{_pct(gan.report['real_accuracy'])} on the real eval images at build time.")
    lines += [
        "",
        *validity_markdown(benchmark=benchmark),
        "## Cross-attack matrix (accuracy %, row evaluated on column's adversarial images)",
        "",
        *_matrix_table(benchmark),
        "",
        "## Noise defense: grid search over σ",
        "",
        *_noise_grid(by_recipe.get("noise")),
        "",
        "## Against the charter (ImageNet, Inception v3 control)",
        "",
        "Universal accuracy and robustness of every reference but the control are transfer figures here (see * above).",
        "",
        *_comparison_pca(by_recipe.get("pca"), control),
        *_comparison_downsample(by_recipe.get("down50"), control, "down50", "downsample 50%"),
        *_comparison_downsample(by_recipe.get("down75"), control, "down75", "downsample 75%"),
        *_comparison_mnist(refs, control, facts, benchmark),
        "",
        *analysis_markdown(benchmark=benchmark),  # issue 15: detection and vector space
        *generalisation_markdown(),  # issue 15: the built-in benchmarks' ladders compared
    ]
    return "\n".join(lines)
