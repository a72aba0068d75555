"""Reads of the issue-15 analysis (detection and vector space) for pages and the API.

The benchmark page and endpoint show the references' sets, the universal set and the
public ranked uploads' sets (every visitor reads the same numbers, as for metric
validity); a network page shows its own set to whoever may see the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import Q

from evaluator.engine import detection
from evaluator.models import Analysis
from evaluator.services import analysis as analysis_service
from evaluator.services import storage
from leaderboard.models import Benchmark, Network

DETECTOR_NAMES = {"discriminator": "GAN discriminator", "mahalanobis": "Mahalanobis (control features)"}
PROJECTION_SAMPLE = 300  # points of each kind drawn in a projection


@dataclass
class SetView:
    """One analysed set as the pages show it."""

    label: str
    kind: str
    row: Analysis
    network: Network | None = None
    rung: int | None = None
    verdict: str | None = None  # discriminator against the baseline: better / as well / worse

    @property
    def detection(self) -> dict:
        return self.row.detection

    @property
    def vectorspace(self) -> dict:
        return self.row.vectorspace


@dataclass
class BenchmarkAnalysis:
    benchmark: Benchmark
    basis: Analysis | None
    sets: list[SetView] = field(default_factory=list)
    discriminator: bool = False  # the build kept one (whatever the rows say)
    problem: str = ""  # why nothing can be analysed yet
    stale: bool = False  # computed before a reference it depends on was rebuilt: not shown
    no_discriminator: str = ""  # why the build has no discriminator (analysis.no_discriminator)

    @property
    def command(self) -> str:
        return f"python manage.py analyse_benchmark {self.benchmark.name}"

    @property
    def rebuild(self) -> str:
        return analysis_service.REBUILD_HINT.format(name=self.benchmark.name)

    @property
    def measured_discriminator(self) -> bool:
        return self.basis is not None and "discriminator" in (self.basis.vectorspace.get("detectors") or [])

    def verdicts(self) -> dict[str, int]:
        counts = {"better": 0, "as well": 0, "worse": 0}
        for s in self.sets:
            if s.verdict:
                counts[s.verdict] += 1
        return counts


def _verdict(row: Analysis) -> str | None:
    d = row.detection or {}
    if "discriminator" in d and "mahalanobis" in d:
        return detection.compare(d["discriminator"], d["mahalanobis"])
    return None


def _label(network: Network | None, rung: int | None) -> str:
    if network is None:
        return "universal set"
    return f"R{rung} {network.name}" if rung else network.name


def benchmark_analysis(*, benchmark: Benchmark) -> BenchmarkAnalysis:
    """Every public set's analysis, references in ladder order, then the universal set,
    then public ranked uploads (by name). Two queries."""
    src = analysis_service.sources(benchmark)
    rows = list(Analysis.objects.filter(benchmark=benchmark).filter(
        Q(network__isnull=True) | Q(network__is_reference=True)
        | Q(network__is_public=True, network__status=Network.Status.RANKED)).select_related("network"))
    basis = next((r for r in rows if r.kind == Analysis.Kind.BASIS), None)
    stale = _stale(basis, src)
    if basis is None or stale:
        basis, rows = None, []  # being replaced, or measured against another control or discriminator
    rung = {pk: k for k, pk in enumerate(benchmark.ladder or [], start=1)}
    views = [SetView(_label(r.network, rung.get(r.network_id)), r.kind, r, r.network, rung.get(r.network_id),
                     _verdict(r)) for r in rows if r.kind != Analysis.Kind.BASIS]
    views.sort(key=lambda v: (0 if v.rung else 1 if v.network is None else 2 if v.network.is_reference else 3,
                              v.rung or 0, v.label.lower()))
    return BenchmarkAnalysis(benchmark, basis, views, src.discriminator is not None, src.problem, stale,
                             analysis_service.no_discriminator(src.gan))


def _stale(basis: Analysis | None, src: analysis_service.Sources) -> bool:
    """The stored basis was computed from other sources than the benchmark has now."""
    return basis is not None and bool(src.fingerprint) and basis.fingerprint != src.fingerprint


def network_analysis(*, network: Network) -> SetView | None:
    row = Analysis.objects.filter(network=network).first()
    basis = Analysis.objects.filter(benchmark=network.benchmark, kind=Analysis.Kind.BASIS).first()
    if row is None or basis is None or _stale(basis, analysis_service.sources(network.benchmark)):
        return None
    rung = {pk: k for k, pk in enumerate(network.benchmark.ladder or [], start=1)}.get(network.pk)
    return SetView(_label(network, rung), row.kind, row, network, rung, _verdict(row))


def network_state(*, network: Network) -> dict[str, Any]:
    """What the network page says about its analysis: the view, or why there is none."""
    view = network_analysis(network=network)
    bench = network.benchmark
    gan = Network.objects.filter(benchmark=bench, is_reference=True, recipe=analysis_service.GAN).first()
    return {
        "view": view,
        "discriminator": analysis_service.discriminator_of(gan) is not None,
        "no_discriminator": analysis_service.no_discriminator(gan),
        "command": f"python manage.py analyse_benchmark {bench.name}",
        "rebuild": analysis_service.REBUILD_HINT.format(name=bench.name),
    }


# --------------------------------------------------------------------------- projection arrays


def _npz(relative: str, key: str) -> np.ndarray | None:
    from leaderboard.gallery import npz_array

    return npz_array(storage.media_path(relative), key)


@dataclass(frozen=True)
class Projection:
    """Points of a projection figure: a clean sample and a *different* adversarial sample.

    Disjoint on purpose (SPEC §2 Secrecy): an adversarial point coloured by its target
    class must not be matchable to the public clean image it came from, which would
    reveal that image's secret target. Arrows join the clean and adversarial versions
    only of `arrows`, images whose target the network page's gallery shows anyway.
    """

    clean_xy: np.ndarray
    clean_class: np.ndarray
    adv_xy: np.ndarray
    adv_class: np.ndarray  # target class (gradient sets) or true class (universal set)
    arrows: list[tuple[float, float, float, float]]
    by_target: bool


def projection(*, benchmark: Benchmark, basis: Analysis, row: Analysis, arrow_indices: list[int],
               sample: int = PROJECTION_SAMPLE) -> Projection | None:
    try:
        clean = _npz(basis.file, "clean_projection")
        adv = _npz(row.file, "projection")
        targets = _npz(row.file, "targets")
        labels = storage.eval_labels(benchmark.data_file)
    except (OSError, KeyError, ValueError):
        return None
    if clean is None or adv is None or len(clean) != len(adv) or len(labels) != len(adv):
        return None
    order = np.random.default_rng(0).permutation(len(clean))
    half = min(sample, len(order) // 2)
    shown_clean, shown_adv = order[:half], order[half : 2 * half]
    by_target = targets is not None and len(targets) == len(labels)
    colours = targets if by_target else labels
    arrows = [(float(clean[i, 0]), float(clean[i, 1]), float(adv[i, 0]), float(adv[i, 1]))
              for i in arrow_indices if 0 <= i < len(adv)]
    return Projection(clean[shown_clean], labels[shown_clean], adv[shown_adv], colours[shown_adv], arrows, by_target)


# --------------------------------------------------------------------------- API


def _set_api(view: SetView) -> dict[str, Any]:
    return {
        "set": view.label,
        "kind": view.kind,
        "network_id": view.network.pk if view.network else None,
        "detection": view.detection,
        "discriminator_vs_baseline": view.verdict,
        "vector_space": view.vectorspace,
    }


def benchmark_api(*, benchmark: Benchmark) -> dict[str, Any]:
    data = benchmark_analysis(benchmark=benchmark)
    return {
        "analysed": data.basis is not None,
        "how_to_compute": None if data.basis is not None else data.command,
        "discriminator_kept": data.discriminator,
        "how_to_get_the_discriminator": None if data.discriminator else data.rebuild,
        "detectors": {k: v for k, v in DETECTOR_NAMES.items()
                      if data.basis is not None and k in (data.basis.vectorspace.get("detectors") or [])},
        "false_positive_rate": detection.FALSE_POSITIVES,
        "basis": data.basis.vectorspace if data.basis is not None else None,
        "discriminator_vs_baseline": data.verdicts() if data.measured_discriminator else None,
        "sets": [_set_api(v) for v in data.sets],
    }


def network_api(*, network: Network) -> dict[str, Any]:
    view = network_analysis(network=network)
    return {"detection": view.detection if view else None,
            "discriminator_vs_baseline": view.verdict if view else None,
            "vector_space": view.vectorspace if view else None}
