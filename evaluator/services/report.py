"""docs/BENCHMARK.md, generated from stored results (never typed by hand).

The charter-style table of the reference suite, the cross-attack matrix, the noise
grid search, and a comparison with what the charter reported on ImageNet, in which
every sentence is derived from the numbers it sits next to.
"""

from __future__ import annotations

from datetime import datetime, timezone

from evaluator.models import UniversalSet
from evaluator.services.ranking import matrix_gather
from leaderboard.models import Benchmark, Network

# The charter's ImageNet figures (SPEC §1): clean, universal, universal robustness.
CHARTER = {
    "control": (0.7585, 0.5525, 0.5525 / 0.7585),
    "pca": (0.2335, 0.2210, 0.9465),
    "down50": (0.6295, 0.5430, 0.8625),
    "down75": (0.7045, 0.5370, 0.7622),
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _acc(net: Network, prefix: str) -> str:
    value = getattr(net, f"{prefix}_accuracy")
    if value is None:
        return "–"
    low, high = getattr(net, f"{prefix}_low"), getattr(net, f"{prefix}_high")
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _suite_table(refs: list[Network]) -> list[str]:
    lines = [
        "| rung | reference | clean | universal | white-box | universal robustness | tier | attack success | level |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rung, net in enumerate(refs, start=1):
        lines.append(
            f"| R{rung} | {net.name} | {_acc(net, 'clean')} | {_acc(net, 'universal')} | "
            f"{_acc(net, 'whitebox')} | {_ratio(net.universal_robustness)} | {net.universal_tier} | "
            f"{_pct(net.attack_success)} | {net.level} |"
        )
    return lines


def _matrix_table(bench: Benchmark) -> list[str]:
    data = matrix_gather(benchmark=bench)
    order = {pk: k for k, pk in enumerate(bench.ladder)}
    idx = sorted((i for i, n in enumerate(data.networks) if n.is_reference),
                 key=lambda i: order.get(data.networks[i].pk, 99))
    names = [data.networks[i].name for i in idx]
    lines = ["| evaluated \\ attack of | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for i in idx:
        cells = [f"**{100 * data.M[i, j]:.1f}**" if i == j else f"{100 * data.M[i, j]:.1f}" for j in idx]
        lines.append(f"| {data.networks[i].name} | " + " | ".join(cells) + " |")
    return lines


def _noise_grid(noise: Network | None) -> list[str]:
    grid = (noise.report or {}).get("noise_grid") or (noise.report or {}).get("grid") if noise else None
    if not grid:
        return ["(no noise grid recorded)"]
    keys = list(grid[0].keys())
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in grid:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    chosen = (noise.params or {}).get("sigma")
    if chosen is not None:
        lines.append(f"\nChosen σ = {chosen}.")
    return lines


def _comparison(by_recipe: dict[str, Network]) -> list[str]:
    out: list[str] = []
    pca, control = by_recipe.get("pca"), by_recipe.get("control")
    if pca and pca.universal_robustness is not None:
        near = abs(pca.universal_robustness - 1) < 0.1
        out.append(
            f"- **Does PCA keep universal robustness near 1?** Charter (ImageNet): 0.9465. Here: "
            f"{pca.universal_robustness:.3f} — {'yes' if near else 'no'}"
            + ("" if near else f"; on MNIST the PCA network's universal accuracy is {_pct(pca.universal_accuracy)} "
               f"against {_pct(pca.clean_accuracy)} clean.")
            + (f" Unlike the charter, PCA costs little clean accuracy on MNIST ({_pct(pca.clean_accuracy)} vs "
               f"control {_pct(control.clean_accuracy)}): 99% of MNIST's variance fits in few components, while "
               "on ImageNet the projection destroyed most of the signal (23.35% clean)."
               if control and control.clean_accuracy and pca.clean_accuracy else "")
        )
    for recipe, charter_name in (("down50", "downsample 50%"), ("down75", "downsample 75%")):
        net = by_recipe.get(recipe)
        if net and control and net.clean_accuracy is not None and control.clean_accuracy is not None:
            c_clean, _, c_rob = CHARTER[recipe]
            gain = (net.universal_robustness or 0) - (control.universal_robustness or 0)
            trades = net.clean_accuracy < control.clean_accuracy and gain > 0.05
            barely = net.clean_accuracy < control.clean_accuracy and 0 < gain <= 0.05
            out.append(
                f"- **{charter_name}:** charter {100 * c_clean:.2f}% clean, universal robustness {c_rob:.4f}. "
                f"Here {_pct(net.clean_accuracy)} clean (control {_pct(control.clean_accuracy)}), universal "
                f"robustness {_ratio(net.universal_robustness)} (control {_ratio(control.universal_robustness)}): "
                + ("it trades clean accuracy for robustness, as in the charter." if trades else
                   f"it gives up a little clean accuracy for almost no universal robustness (+{gain:.3f}), "
                   "unlike the charter's clear trade." if barely else
                   "it does not trade clean accuracy for robustness the way the charter saw.")
            )
    out.append(
        "- **Where MNIST differs.** MNIST digits are 28×28 grey strokes on a black background; most "
        "pixels are exactly 0 or 1, so clipping to [0, 1] removes half of every perturbation there, and "
        "ε = 0.3 is a far larger budget than the charter's ImageNet perturbations"
        + (f". Clean accuracies sit near {_pct(control.clean_accuracy)} (control) instead of 75.85%, so "
           "universal robustness ratios are driven by the universal accuracy alone."
           if control and control.clean_accuracy else ".")
    )
    return out


def benchmark_markdown(*, benchmark: Benchmark) -> str:
    refs_by_pk = {n.pk: n for n in Network.objects.filter(benchmark=benchmark, is_reference=True)}
    refs = [refs_by_pk[pk] for pk in benchmark.ladder if pk in refs_by_pk]
    by_recipe = {n.recipe: n for n in refs}
    universal = UniversalSet.objects.filter(benchmark=benchmark).first()
    pca = by_recipe.get("pca")
    gan = by_recipe.get("gan-data")
    lines = [
        f"# Benchmark {benchmark.name}",
        "",
        f"Generated by `python manage.py benchmark_report {benchmark.name}` from the stored results on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Do not edit by hand.",
        "",
        f"- Data: {benchmark.train_size} train / {benchmark.eval_size} eval images, "
        f"{benchmark.height}×{benchmark.width}×{benchmark.channels}, {benchmark.num_classes} classes.",
        f"- Gradient attack: targeted, ε = {benchmark.epsilon:g}, α = {benchmark.step:g}, "
        f"{benchmark.steps} steps (L∞).",
        f"- Universal perturbations: {benchmark.universal_count}, ξ = {benchmark.universal_xi:g}"
        + (f", computed against the control in {universal.seconds:.0f} s." if universal else "."),
        "",
        "## The reference suite (ladder order, least robust first)",
        "",
        "Accuracies on the eval split with 95% Wilson intervals. Universal robustness = universal / clean "
        "accuracy; tier = floor(10 × universal accuracy); attack success = share of images on which the "
        "targeted attack reached its target; level as defined in SPEC §2 (references leave themselves out).",
        "",
        *_suite_table(refs),
        "",
    ]
    if pca:
        comps = (pca.report or {}).get("components") or (pca.params or {}).get("n_components")
        lines.append(f"PCA keeps {comps} components (99% of the train variance).")
    if gan:
        real = (gan.report or {}).get("real_accuracy")
        lines.append(f"GAN-data: the classifier trained only on generated digits scores {_pct(real)} on real eval "
                     "images (how real the generator's samples are).")
    lines += [
        "",
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
        *_comparison(by_recipe),
        "",
    ]
    return "\n".join(lines)
