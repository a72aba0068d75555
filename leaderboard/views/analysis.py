"""What the benchmark and network pages add for issue 15 (detection, vector space):
the selectors' data plus the Plotly figures, as context entries."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from evaluator.models import AdversarialDataset
from leaderboard import analysis_plots, gallery
from leaderboard.analysis_selectors import (
    DETECTOR_NAMES, SetView, benchmark_analysis, network_state, projection,
)
from leaderboard.models import Benchmark, Network
from leaderboard.plots import script_json

ARROWS = gallery.GALLERY_SIZE
# Figure JSON by what it was drawn from (rows, their files, labels): building a dozen sets'
# figures through plotly.graph_objects costs ~0.1 s, a page view should not pay it each time.
_FIGURES: OrderedDict[tuple, Any] = OrderedDict()
FIGURES_KEPT = 64


def _memo(key: tuple, build: Callable[[], Any]) -> Any:
    if key in _FIGURES:
        _FIGURES.move_to_end(key)
        return _FIGURES[key]
    value = _FIGURES[key] = build()
    while len(_FIGURES) > FIGURES_KEPT:
        _FIGURES.popitem(last=False)
    return value


def _key(kind: str, views: list[SetView]) -> tuple:
    return (kind, *((v.row.pk, v.row.file, v.label) for v in views))


def _arrow_indices(benchmark: Benchmark, view: SetView) -> list[int]:
    """Arrows only for images whose target the page shows anyway: the network's gallery
    sample; for the universal set (no per-image target) the first images."""
    if view.network is None:
        return list(range(ARROWS))
    adv = AdversarialDataset.objects.filter(network=view.network).first()
    sample = gallery.gallery_sample(benchmark=benchmark, adversarial=adv)
    return list(sample.indices) if sample is not None else []


def _projection_json(benchmark: Benchmark, basis, view: SetView) -> str | None:
    arrows = _arrow_indices(benchmark, view)
    names = list(benchmark.class_names or []) or [str(i) for i in range(benchmark.num_classes)]

    def build() -> str | None:
        p = projection(benchmark=benchmark, basis=basis, row=view.row, arrow_indices=arrows)
        return None if p is None else script_json(analysis_plots.projection_figure(p, names, title=view.label))

    return _memo((*_key("projection", [view]), basis.file, tuple(arrows), tuple(names)), build)


def benchmark_page(benchmark: Benchmark) -> dict[str, Any]:
    data = benchmark_analysis(benchmark=benchmark)
    figures: dict[str, Any] = {}
    if data.basis is not None and data.sets:
        detectors = [d for d in DETECTOR_NAMES if any(d in s.detection for s in data.sets)]
        if detectors:
            figures["roc"] = _memo((*_key("roc", data.sets), *detectors),
                                   lambda: script_json(analysis_plots.roc_figure(data.sets, detectors)))
        figures["norms"] = _memo(_key("norms", data.sets),
                                 lambda: script_json(analysis_plots.norms_figure(data.sets)))
        figures["energy"] = _memo(_key("energy", data.sets),
                                  lambda: script_json(analysis_plots.energy_figure(data.sets)))
        # Two projections: the control's own attack and the universal set.
        control = next((s for s in data.sets if s.network is not None and s.network.recipe == "control"), None)
        universal = next((s for s in data.sets if s.network is None), None)
        figures["projections"] = [j for j in (_projection_json(benchmark, data.basis, s)
                                              for s in (control, universal) if s is not None) if j]
    return {"analysis": data, "analysis_figures": figures,
            "analysis_detectors": {k: v for k, v in DETECTOR_NAMES.items()}}


def network_page(network: Network) -> dict[str, Any]:
    state = network_state(network=network)
    view: SetView | None = state["view"]
    figures: dict[str, Any] = {}
    if view is not None:
        from evaluator.models import Analysis

        basis = Analysis.objects.filter(benchmark=network.benchmark, kind=Analysis.Kind.BASIS).first()
        figures["norms"] = _memo(_key("norms", [view]), lambda: script_json(analysis_plots.norms_figure([view])))
        figures["energy"] = _memo(_key("energy", [view]), lambda: script_json(analysis_plots.energy_figure([view])))
        if basis is not None and (p := _projection_json(network.benchmark, basis, view)):
            figures["projection"] = p
    return {"analysis": state, "analysis_figures": figures}
