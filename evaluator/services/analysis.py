"""Detection and vector space of every adversarial set (issue 15), stored as Analysis rows.

One sandbox job (engine.analysis_jobs.analyse) loads only trusted models: the control
reference (penultimate features, Mahalanobis baseline) and the gan-data reference's
discriminator, kept beside its stored model when it was built. The first job of a
benchmark also computes the basis (what every set is compared with); later jobs get the
stored basis back and only score their sets, so an upload costs one forward pass of each
detector over its set.

Every row records a fingerprint of what it was computed from. Rebuilding the control or
gan-data changes the basis fingerprint, and every row of the benchmark is then stale:
they are dropped and recomputed (benchmark_analyse), never shown with old numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from django.db import transaction
from django.db.models import Q

from evaluator.engine import isolation
from evaluator.engine.analysis_jobs import analyse
from evaluator.engine.suite import CONTROL
from evaluator.models import AdversarialDataset, Analysis, Job, UniversalSet
from evaluator.services import storage
from evaluator.services.jobs import Inputs, JobCancelled, JobFailed, JobRejected, JobUnavailable, job_open, job_run
from evaluator.services.sandboxing import sandbox_limits
from leaderboard.models import Benchmark, Network

log = logging.getLogger(__name__)
Report = Callable[[str], None]

GAN = "gan-data"
DISCRIMINATOR = "discriminator"  # folder beside the reference's stored model
EXTRAS = (DISCRIMINATOR,)  # by-products a recipe may leave beside its export (BuildContext.extra_path)
SETS_PER_JOB = 12  # each set is an input of ~6 MB: bounded per job
VERSION = 1  # bump when the engine's figures change meaning: every row is then recomputed
REBUILD_HINT = "python manage.py build_benchmark {name} --rebuild gan-data"
JOB_ERRORS = (JobRejected, JobFailed, JobUnavailable, JobCancelled)


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- the discriminator


def reference_extras_keep(*, network: Network, model_dir: Path) -> dict[str, Any]:
    """Move a freshly built reference's by-products (`<model_dir>-<name>`, see
    BuildContext.extra_path) beside its stored model and hash them; returns what to add
    to its report, e.g. {"discriminator": {"dir": ..., "files": {path: sha256}}}."""
    kept: dict[str, Any] = {}
    for name in EXTRAS:
        source = model_dir.with_name(f"{model_dir.name}-{name}")
        if not source.is_dir():
            continue
        target = storage.network_dir(network.pk) / name
        storage.remove_tree(target)
        shutil.move(str(source), str(target))
        kept[name] = {"dir": storage.relative(target), "files": isolation.folder_manifest(target)}
    return kept


def discriminator_of(gan: Network | None) -> dict[str, Any] | None:
    """The kept discriminator of a gan-data reference ({"dir", "files"}), None when its
    build kept none (built before issue 15) or the folder is gone."""
    kept = (gan.report or {}).get(DISCRIMINATOR) if gan is not None else None
    if not kept or not kept.get("files") or not storage.media_path(kept["dir"]).is_dir():
        return None
    return kept


# --------------------------------------------------------------------------- what a row depends on


@dataclass
class Sources:
    benchmark: Benchmark
    control: Network | None
    gan: Network | None
    discriminator: dict[str, Any] | None
    universal: UniversalSet | None
    fingerprint: str = ""
    problem: str = ""  # why nothing can be analysed yet


def no_discriminator(gan: Network | None) -> str:
    """Why only the baseline detector can run ("" when the build kept a discriminator):
    the suite has no gan-data reference, or its gan-data reference kept none."""
    if gan is None:
        return "this build has no gan-data reference"
    if discriminator_of(gan) is None:
        return "this build's gan-data reference kept no discriminator (it was built before the discriminator was kept)"
    return ""


def sources(benchmark: Benchmark) -> Sources:
    refs = {n.recipe: n for n in Network.objects.filter(benchmark=benchmark, is_reference=True,
                                                        recipe__in=[CONTROL, GAN])}
    control, gan = refs.get(CONTROL), refs.get(GAN)
    found = Sources(benchmark, control, gan, discriminator_of(gan),
                    UniversalSet.objects.filter(benchmark=benchmark).first())
    data = storage.media_path(benchmark.data_file) if benchmark.data_file else None
    if data is None or not data.is_file():
        found.problem = "the benchmark has no dataset yet"
    elif control is None or not control.info.get("signature") or not control.model_files:
        found.problem = "the control reference is not built and validated yet"
    if found.problem:
        return found
    found.fingerprint = _hash({
        "version": VERSION,
        "data": [benchmark.data_file, data.stat().st_size, data.stat().st_mtime_ns],
        "control": [control.pk, _hash(control.model_files)],
        "discriminator": None if found.discriminator is None else [gan.pk, _hash(found.discriminator["files"])],
        "attack": [benchmark.epsilon, benchmark.universal_xi],
    })
    return found


@dataclass
class Item:
    """One set to analyse."""

    key: str
    kind: str
    file: Path
    fingerprint: str
    network: Network | None = None


def _network_item(src: Sources, network: Network, adv: AdversarialDataset) -> Item:
    return Item(f"net-{network.pk}", Analysis.Kind.GRADIENT, storage.media_path(adv.file),
                _hash([src.fingerprint, "gradient", adv.pk, adv.file, adv.created_at]), network)


def _universal_item(src: Sources) -> Item | None:
    u = src.universal
    if u is None:
        return None
    return Item("universal", Analysis.Kind.UNIVERSAL, storage.media_path(u.file),
                _hash([src.fingerprint, "universal", u.pk, u.file, u.created_at]))


def _current(benchmark: Benchmark, item: Item) -> bool:
    rows = Analysis.objects.filter(benchmark=benchmark, fingerprint=item.fingerprint)
    rows = rows.filter(network=item.network) if item.network else rows.filter(network__isnull=True, kind=item.kind)
    return rows.exists()


def _basis_current(src: Sources) -> Analysis | None:
    """The stored basis if it matches the sources; otherwise every row of the benchmark
    is stale (its numbers were measured against another basis) and is dropped."""
    row = Analysis.objects.filter(benchmark=src.benchmark, kind=Analysis.Kind.BASIS, network__isnull=True).first()
    if row is not None and row.fingerprint == src.fingerprint and storage.media_path(row.file).is_file():
        return row
    stale = list(Analysis.objects.filter(benchmark=src.benchmark))
    if stale:
        Analysis.objects.filter(pk__in=[r.pk for r in stale]).delete()
        _unlink_on_commit([r.file for r in stale])
    return None


def _unlink_on_commit(files: list[str]) -> None:
    """Remove replaced arrays once the rows that named them are gone for good (a rolled
    back transaction keeps both: every file name carries its row's fingerprint)."""
    names = [f for f in files if f]
    transaction.on_commit(lambda: [storage.media_path(f).unlink(missing_ok=True) for f in names])


# --------------------------------------------------------------------------- running and storing


def _stored_path(benchmark: Benchmark, item: Item | None, fingerprint: str) -> Path:
    """A network's set beside its model (removed with it), the rest in the benchmark's folder."""
    if item is not None and item.network is not None:
        return storage.network_dir(item.network.pk) / f"analysis-{fingerprint[:16]}.npz"
    folder = storage.benchmark_dir(benchmark.name) / "analysis"
    folder.mkdir(exist_ok=True)
    return folder / f"{'basis' if item is None else item.key}-{fingerprint[:16]}.npz"


def _store(src: Sources, item: Item | None, value: dict, out: Path, seconds: float) -> Analysis:
    """One row (the basis when item is None), its arrays moved beside its owner."""
    target = _stored_path(src.benchmark, item, src.fingerprint if item is None else item.fingerprint)
    shutil.move(str(out / ("basis.npz" if item is None else f"{item.key}.npz")), str(target))
    if item is None:
        lookup = {"benchmark": src.benchmark, "network": None, "kind": Analysis.Kind.BASIS}
        values = {"fingerprint": src.fingerprint, "vectorspace": value, "detection": {}}
    else:
        lookup = ({"network": item.network} if item.network is not None
                  else {"benchmark": src.benchmark, "network": None, "kind": item.kind})
        values = {"benchmark": src.benchmark, "kind": item.kind, "fingerprint": item.fingerprint,
                  "detection": value["detection"], "vectorspace": value["vectorspace"]}
    values.update(file=storage.relative(target), seconds=round(seconds, 3))
    with transaction.atomic():
        old = Analysis.objects.select_for_update().filter(**lookup).values_list("file", flat=True).first()
        row, _ = Analysis.objects.update_or_create(**lookup, defaults=values)
        if old and old != row.file:
            _unlink_on_commit([old])
    return row


def _run(src: Sources, items: list[Item], basis: Analysis | None, *, network: Network | None) -> list[Analysis]:
    """One job: the basis if missing, then each item. Returns the rows stored."""
    bench, control = src.benchmark, src.control
    inputs = Inputs()
    kwargs: dict[str, Any] = {
        "dataset": inputs.file("dataset.npz", storage.media_path(bench.data_file)),
        "out_dir": isolation.OUTPUTS,
        "budget": max(bench.epsilon, bench.universal_xi),
        "control": {"model_dir": inputs.model("control", control),
                    "info": {k: v for k, v in control.info.items() if k != "model_dir"},
                    "params": dict(control.params or {})},
        "sets": [{"key": it.key, "file": inputs.file(f"{it.key}.npz", it.file),
                  "universal": it.kind == Analysis.Kind.UNIVERSAL} for it in items],
        "basis": None if basis is None else inputs.file("basis.npz", storage.media_path(basis.file)),
    }
    if src.discriminator is not None:
        inputs.files[DISCRIMINATOR] = storage.media_path(src.discriminator["dir"])
        inputs.manifests[DISCRIMINATOR] = dict(src.discriminator["files"])
        kwargs["discriminator"] = isolation.input_path(DISCRIMINATOR)
    job = job_open(kind=Job.Kind.ANALYSE, benchmark=bench, network=network)
    out = (storage.network_dir(network.pk) if network is not None else storage.benchmark_dir(bench.name)) \
        / f"analysis-job-{job.pk}"
    try:
        value = job_run(job=job, target=analyse, kwargs=kwargs, inputs=inputs, out_dir=out,
                        limits=sandbox_limits(trusted=True))
        return analysis_store(sources=src, items=items, value=value, out=out)
    finally:
        storage.remove_tree(out)


def analysis_store(*, sources: Sources, items: list[Item], value: dict, out: Path) -> list[Analysis]:
    """Store what engine.analysis_jobs.compute returned (its arrays in `out`): the basis
    first when it was computed, then one row per item."""
    rows = []
    if value["basis"] is not None:
        rows.append(_store(sources, None, value["basis"], out, 0.0))
    for it in items:
        part = value["sets"][it.key]
        rows.append(_store(sources, it, part, out, part["seconds"]))
    return rows


def _basis_or_none(src: Sources) -> Analysis | None:
    with transaction.atomic():
        return _basis_current(src)


def network_analyse(*, network: Network) -> Analysis | None:
    """Detection and vector space of this network's adversarial set (and the benchmark's
    basis when it is missing or stale). Cheap: one forward pass of the control and the
    discriminator over the set. Never raises for a job that failed: the figures are an
    addition to the ranking, not part of it (logged, and None returned)."""
    adv = AdversarialDataset.objects.filter(network=network).first()
    if adv is None:
        return None
    src = sources(network.benchmark)
    if src.problem:
        log.info("analysis of network %s skipped: %s", network.pk, src.problem)
        return None
    item = _network_item(src, network, adv)
    basis = _basis_or_none(src)
    if basis is not None and _current(src.benchmark, item):
        return Analysis.objects.get(network=network)
    try:
        rows = _run(src, [item], basis, network=network)
    except JOB_ERRORS as exc:
        log.warning("analysis of network %s failed: %s", network.pk, exc)
        return None
    except Exception:  # noqa: BLE001  storing went wrong: never the upload's pipeline's failure
        log.exception("analysis of network %s could not be stored", network.pk)
        return None
    return rows[-1]


@dataclass
class Outcome:
    analysed: int = 0
    current: int = 0
    basis: bool = False
    discriminator: bool = False
    errors: list[str] = field(default_factory=list)
    problem: str = ""


def items_for(src: Sources) -> list[Item]:
    """Every set the benchmark page reports: each reference's, the universal set, and each
    ranked upload's."""
    nets = Network.objects.filter(benchmark=src.benchmark, adversarial__isnull=False).filter(
        Q(is_reference=True) | Q(status=Network.Status.RANKED))
    items = [_network_item(src, n, n.adversarial) for n in nets.select_related("adversarial").order_by("pk")]
    universal = _universal_item(src)
    return items + ([universal] if universal is not None else [])


def benchmark_analyse(*, benchmark: Benchmark, report: Report = print) -> Outcome:
    """Everything missing or stale, in jobs of at most SETS_PER_JOB sets; idempotent (a
    second run finds every row current and starts no job). Failures are reported in the
    outcome, never raised: a build does not fail for its analysis."""
    src = sources(benchmark)
    outcome = Outcome(discriminator=src.discriminator is not None, problem=src.problem)
    if src.problem:
        report(f"analysis skipped: {src.problem}")
        return outcome
    if not outcome.discriminator:
        report(f"analysis: {no_discriminator(src.gan)}, so only the baseline detector runs; "
               f"`{REBUILD_HINT.format(name=benchmark.name)}` trains gan-data and keeps its discriminator")
    basis = _basis_or_none(src)
    items = items_for(src)
    todo = [it for it in items if basis is None or not _current(benchmark, it)]
    outcome.current = len(items) - len(todo)
    if basis is not None and not todo:
        report(f"analysis: all {len(items)} sets current")
        return outcome
    batches = [todo[i : i + SETS_PER_JOB] for i in range(0, len(todo), SETS_PER_JOB)] or [[]]
    for number, batch in enumerate(batches, start=1):
        report(f"analysis job {number}/{len(batches)}: {'basis + ' if basis is None else ''}{len(batch)} set(s)")
        try:
            rows = _run(src, batch, basis, network=None)
        except Exception as exc:  # noqa: BLE001  a build must not fail for its analysis: reported instead
            if not isinstance(exc, JOB_ERRORS):
                log.exception("analysis of benchmark %s", benchmark.name)
            outcome.errors.append(f"{type(exc).__name__}: {exc}" if not isinstance(exc, JOB_ERRORS) else str(exc))
            report(f"analysis job {number}/{len(batches)} failed: {exc}")
            break
        if basis is None:
            basis, outcome.basis = rows[0], True
        outcome.analysed += len(batch)
        for row in rows:
            if row.kind != Analysis.Kind.BASIS:
                name = row.network.name if row.network else "universal set"
                auc = ", ".join(f"{d} AUC {v['auc']:.3f}" for d, v in row.detection.items())
                report(f"  {name}: {auc or 'no detector'}")
    return outcome
