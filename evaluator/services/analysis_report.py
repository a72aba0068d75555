"""The issue-15 sections of docs/BENCHMARK.md: detection and vector space.

Every number is read from the stored Analysis rows of the references' sets and the
universal set (uploads stay out of the benchmark's own report); every verdict is a
stated rule on those numbers (disjoint 95% intervals, a 50% share). tests/
test_analysis_report.py recomputes each number from the stored per-image arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q
from django.utils.text import capfirst

from evaluator.engine import detection
from evaluator.models import Analysis
from evaluator.services.analysis import REBUILD_HINT, no_discriminator, sources
from leaderboard.models import Benchmark

DETECTOR_LABEL = {"discriminator": "discriminator", "mahalanobis": "baseline"}
MAJORITY = 0.5  # "most images": a share above this


@dataclass(frozen=True)
class Row:
    label: str
    row: Analysis

    @property
    def det(self) -> dict:
        return self.row.detection

    @property
    def vs(self) -> dict:
        return self.row.vectorspace


def _rows(benchmark: Benchmark) -> tuple[Analysis | None, list[Row]]:
    found = list(Analysis.objects.filter(benchmark=benchmark).filter(
        Q(kind__in=[Analysis.Kind.BASIS, Analysis.Kind.UNIVERSAL]) | Q(network__is_reference=True))
        .select_related("network"))
    basis = next((r for r in found if r.kind == Analysis.Kind.BASIS), None)
    rung = {pk: k for k, pk in enumerate(benchmark.ladder or [], start=1)}
    refs = sorted((r for r in found if r.network_id in rung), key=lambda r: rung[r.network_id])
    rows = [Row(f"R{rung[r.network_id]} {r.network.name}", r) for r in refs]
    rows += [Row("universal set", r) for r in found if r.kind == Analysis.Kind.UNIVERSAL]
    return basis, rows


def _auc(d: dict | None) -> str:
    return "–" if not d else f"{d['auc']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _rate(d: dict | None) -> str:
    return "–" if not d else f"{100 * d['rate']:.1f}% [{100 * d['rate_low']:.1f}, {100 * d['rate_high']:.1f}]"


def _pct(m: dict | None) -> str:
    return "–" if not m else f"{100 * m['mean']:.1f}% [{100 * m['low']:.1f}, {100 * m['high']:.1f}]"


def _dist(m: dict | None) -> str:
    return "–" if not m else f"{m['mean']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"


def _span(values: list[float], fmt: str, scale: float = 1.0) -> str:
    lo, hi = min(values) * scale, max(values) * scale
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)} to {format(hi, fmt)}"


# --------------------------------------------------------------------------- detection


def _detection(benchmark: Benchmark, basis: Analysis, rows: list[Row]) -> list[str]:
    detectors = [d for d in detection.DETECTORS if d in (basis.vectorspace.get("detectors") or [])]
    features = basis.vectorspace.get("features") or "outputs"
    first = rows[0].det.get(detectors[0]) if rows and detectors else None
    lines = ["## Can a GAN discriminator detect adversarial images?", ""]
    if first is not None:
        lines += [f"Each detector scores every image; the figures are the ROC AUC of the {first['clean']} clean eval "
                  f"images against each adversarial set (0.5 = chance), with a 95% bootstrap interval over "
                  f"{first['bootstrap']} resamples of the images, and the share of adversarial images caught when "
                  f"at most {100 * detection.FALSE_POSITIVES:g}% of the clean ones are flagged. The baseline is the "
                  f"Mahalanobis detector on the control's {features} features.", ""]
    if "discriminator" not in detectors:
        why = no_discriminator(sources(benchmark).gan)
        if why:
            lines += [f"{capfirst(why)}, so only the baseline is measured: "
                      f"`{REBUILD_HINT.format(name=benchmark.name)}` trains gan-data and keeps its discriminator.", ""]
        else:
            lines += ["The gan-data discriminator was kept after this analysis was computed: "
                      f"`python manage.py analyse_benchmark {benchmark.name}` adds it.", ""]
    if not rows or not detectors:
        return lines
    names = [DETECTOR_LABEL[d] for d in detectors]
    head = " | ".join(f"{n} AUC | {n} caught" for n in names)
    both = len(detectors) == 2
    lines += [f"| set | {head} |{' discriminator vs baseline |' if both else ''}",
              "|---|" + "---|" * (2 * len(detectors) + both)]
    for r in rows:
        cells = " | ".join(f"{_auc(r.det.get(d))} | {_rate(r.det.get(d))}" for d in detectors)
        verdict = f" {detection.compare(r.det['discriminator'], r.det['mahalanobis'])} |" if both else ""
        lines.append(f"| {r.label} | {cells} |{verdict}")
    lines.append("")
    if both:
        counts = {v: 0 for v in ("better", "as well", "worse")}
        for r in rows:
            counts[detection.compare(r.det["discriminator"], r.det["mahalanobis"])] += 1
        disc = [r.det["discriminator"]["auc"] for r in rows]
        base = [r.det["mahalanobis"]["auc"] for r in rows]
        lines.append(f"- **Verdict.** Against the baseline, on {len(rows)} sets the discriminator detects "
                     f"{counts['better']} better, {counts['as well']} as well (overlapping 95% intervals) and "
                     f"{counts['worse']} worse. Its AUC spans {_span(disc, '.3f')}, the baseline's "
                     f"{_span(base, '.3f')}.")
        lines.append("")
    return lines


# --------------------------------------------------------------------------- vector space


def _energy_line(rows: list[Row], i: int, dims: int) -> str:
    k = rows[0].vs["energy"][i]["k"]
    found = [r.vs["energy"][i] for r in rows if r.vs["energy"][i]["adversarial"] and r.vs["energy"][i]["noise"]]
    adv = [e["adversarial"]["mean"] for e in found]
    noise = [e["noise"]["mean"] for e in found]
    above = sum(1 for e in found if e["adversarial"]["low"] > e["noise"]["high"])
    below = sum(1 for e in found if e["adversarial"]["high"] < e["noise"]["low"])
    line = (f"- **Top {k} components** (k/D = {100 * k / dims:.1f}%): the attacks put {_span(adv, '.1f', 100)}% of "
            f"their energy there, Gaussian noise of the same norm {_span(noise, '.1f', 100)}%; more than noise on "
            f"{above} of {len(found)} sets, less on {below} (disjoint 95% intervals)")
    if above == len(found):
        return line + ": the perturbations lean towards the directions the train images vary in, which a PCA " \
                      "projection onto these components keeps."
    if below == len(found):
        return line + ": the perturbations lie off the directions the train images vary in, which a PCA " \
                      "projection onto these components removes."
    return line + "."


def _sizes_line(rows: list[Row], benchmark: Benchmark) -> str:
    grad = [r for r in rows if r.row.kind == Analysis.Kind.GRADIENT]
    univ = [r for r in rows if r.row.kind == Analysis.Kind.UNIVERSAL]
    parts = []
    if grad:
        n = [r.vs["norms"] for r in grad]
        parts.append(f"the gradient attacks (ε = {benchmark.epsilon:g}) change {_span([x['l0']['mean'] for x in n], '.1f', 100)}% "
                     f"of the pixels on average, with mean L2 norms {_span([x['l2']['mean'] for x in n], '.2f')} and "
                     f"mean L∞ norms {_span([x['linf']['mean'] for x in n], '.3f')}")
    if univ:
        u = univ[0].vs["norms"]
        parts.append(f"the universal set (ξ = {benchmark.universal_xi:g}) changes {100 * u['l0']['mean']:.1f}%, "
                     f"mean L2 {u['l2']['mean']:.2f}, mean L∞ {u['linf']['mean']:.3f}")
    text = "; ".join(parts)
    return f"- **Perturbation sizes.** {text[:1].upper()}{text[1:]}."


def _neighbour_line(rows: list[Row]) -> str | None:
    grad = [r.vs["neighbours"] for r in rows if r.row.kind == Analysis.Kind.GRADIENT and r.vs["neighbours"]["target"]]
    if not grad or not all(g["true"]["adversarial"] and g["target"]["adversarial"] for g in grad):
        return None
    closer = [g["closer_to_target"]["adversarial"]["mean"] for g in grad]
    line = (f"- **Nearest train images.** The gradient attacks' images are {_span([g['true']['adversarial']['mean'] for g in grad], '.2f')} "
            f"from the nearest train image of their own class on average (clean images: "
            f"{_span([g['true']['clean']['mean'] for g in grad], '.2f')}) and "
            f"{_span([g['target']['adversarial']['mean'] for g in grad], '.2f')} from the nearest of their target class "
            f"(clean: {_span([g['target']['clean']['mean'] for g in grad], '.2f')}); the target class's is the nearer "
            f"for {_span(closer, '.1f', 100)}% of them (clean images: "
            f"{_span([g['closer_to_target']['clean']['mean'] for g in grad], '.1f', 100)}%)")
    if max(closer) <= MAJORITY:
        return line + f", at most {100 * MAJORITY:g}% on every set: in pixel space most adversarial images stay " \
                      "nearer their own class; the attack crosses the classifier's boundary, not the data's."
    if min(closer) > MAJORITY:
        return line + f", above {100 * MAJORITY:g}% on every set: in pixel space most adversarial images move " \
                      "nearer the target class's train images."
    return line + "."


def _vectorspace(benchmark: Benchmark, basis: Analysis, rows: list[Row]) -> list[str]:
    b = basis.vectorspace
    ks, explained = b["ks"], b["explained"]
    lines = ["## Adversarial images in image vector space", "",
             f"PCA of the {b['train']} train images in {b['dims']} dimensions: the top "
             + ", ".join(str(k) for k in ks) + " components hold "
             + ", ".join(f"{100 * e:.1f}%" for e in explained) + " of the train variance.", ""]
    if not rows:
        return lines
    lines += ["| set | pixels changed | mean L2 | mean L∞ | " + " | ".join(f"top {k}: attack | top {k}: noise" for k in ks)
              + " |", "|---|---|---|---|" + "---|---|" * len(ks)]
    for r in rows:
        n = r.vs["norms"]
        energy = " | ".join(f"{_pct(e['adversarial'])} | {_pct(e['noise'])}" for e in r.vs["energy"])
        lines.append(f"| {r.label} | {100 * n['l0']['mean']:.1f}% | {n['l2']['mean']:.2f} | {n['linf']['mean']:.3f} | "
                     f"{energy} |")
    lines += ["", "| set | own class: adversarial | own class: clean | target class: adversarial | "
              "target class: clean | nearer the target | nearest is another class |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        nb = r.vs["neighbours"]
        target = (f"{_dist(nb['target']['adversarial'])} | {_dist(nb['target']['clean'])} | "
                  f"{_pct(nb['closer_to_target']['adversarial'])}") if nb["target"] else "– | – | –"
        lines.append(f"| {r.label} | {_dist(nb['true']['adversarial'])} | {_dist(nb['true']['clean'])} | {target} | "
                     f"{_pct(nb['other_class']['adversarial'])} |")
    lines += ["", "L2 distances in pixel space, means with 95% intervals.", "", _sizes_line(rows, benchmark)]
    lines += [_energy_line(rows, i, b["dims"]) for i in range(len(ks))]
    neighbours = _neighbour_line(rows)
    return lines + ([neighbours] if neighbours else []) + [""]


def analysis_markdown(*, benchmark: Benchmark) -> list[str]:
    """The two sections, or one line saying how to compute them."""
    basis, rows = _rows(benchmark)
    if basis is None:
        return ["## Detection and vector space", "",
                f"Not computed yet: run `python manage.py analyse_benchmark {benchmark.name}`.", ""]
    return _detection(benchmark, basis, rows) + _vectorspace(benchmark, basis, rows)
