"""Building a benchmark: dataset, reference defenses, universal set, matrix, ladder.

Idempotent: every step looks for its stored result first, so a second run only
checks and a run cut short resumes where it stopped. References are zipped and
sent through exactly the pipeline an upload takes (unpack, scan, load, evaluate,
attack, cross-evaluate), so they get no shortcut an upload would not.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from django.db import transaction

from evaluator.engine import builtins, datasets, isolation
from evaluator.engine import jobs as engine_jobs
from evaluator.engine.archive import pack_folder
from evaluator.engine.suite import REFERENCES as RECIPES
from evaluator.models import Evaluation, Job, UniversalSet
from evaluator.services import lifecycle, secret, storage
from evaluator.services import progress as timing
from evaluator.services.analysis import benchmark_analyse, reference_extras_keep
from evaluator.services.jobs import Inputs, JobFailed, JobRejected, JobUnavailable, job_open, job_run
from evaluator.services.sandboxing import sandbox_limits
from evaluator.services.pipeline import network_evaluate, network_run_pipeline
from evaluator.services.ranking import benchmark_rank
from leaderboard.models import Benchmark, Network

Report = Callable[[str], None]

DEFAULT_NAME = builtins.MNIST5K
CONTROL = "control"


class BuildError(Exception):
    """A reference could not be built; the message says which and why."""


def benchmark_get_or_create_default() -> Benchmark:
    return benchmark_get_or_create_builtin(name=DEFAULT_NAME)


def benchmark_get_or_create_builtin(*, name: str) -> Benchmark:
    """The Benchmark row of a built-in benchmark (engine.builtins), with its attack settings."""
    spec = builtins.BUILTINS[name]
    bench, _ = Benchmark.objects.get_or_create(
        name=name,
        defaults={
            "title": spec.title,
            "source": spec.source,
            "description": spec.description,
            "epsilon": spec.epsilon,
            "step": spec.step,
            "steps": spec.steps,
            "universal_xi": spec.universal_xi,
        },
    )
    return bench


def _target_seed(benchmark: Benchmark) -> int:
    """The secret seed of the benchmark's attack targets. mnist-5k-mlp shares mnist-5k's
    (engine.builtins: same images, same targets, only the backbone differs)."""
    spec = builtins.builtin(benchmark.name)
    return secret.benchmark_seed(spec.target_seed_name if spec else benchmark.name, "targets")


def benchmark_store_dataset(*, benchmark: Benchmark, dataset: datasets.Dataset) -> None:
    """Store the benchmark's images with its attack targets drawn from this deployment's
    secret (SPEC §2 Secrecy): the public split stays, the loader's public targets go."""
    dataset = datasets.with_targets(dataset, _target_seed(benchmark))
    path = storage.benchmark_dir(benchmark.name) / "dataset.npz"
    datasets.save_dataset(dataset, path)
    h, w, c = dataset.shape
    benchmark.data_file = storage.relative(path)
    benchmark.height, benchmark.width, benchmark.channels = h, w, c
    benchmark.num_classes = dataset.num_classes
    benchmark.class_names = list(dataset.class_names)
    benchmark.train_size, benchmark.eval_size = len(dataset.y_train), len(dataset.y_eval)
    # Only these fields: inside a build the object predates it, and a full save wrote
    # state NEW and an empty plan back over the running build ("the build has not started").
    benchmark.save(update_fields=["data_file", "height", "width", "channels", "num_classes", "class_names",
                                  "train_size", "eval_size"])


def _ensure_dataset(benchmark: Benchmark) -> None:
    if benchmark.data_file and storage.media_path(benchmark.data_file).exists():
        return
    spec = builtins.builtin(benchmark.name)
    if spec is None:
        raise BuildError(f"benchmark {benchmark.name} has no dataset; import it first")
    benchmark_store_dataset(benchmark=benchmark, dataset=spec.load())


def _set_stage(benchmark: Benchmark, stage: str, progress: int, report: Report, *, step: str,
               reference: str | None = None, until: int | None = None, plan: dict | None = None) -> None:
    """The build's stage text and percent, and its step for the banner and time left
    (evaluator.services.progress; `plan` starts a new build)."""
    timing.benchmark_step(benchmark=benchmark, step=step, reference=reference, until=until, plan=plan)
    Benchmark.objects.filter(pk=benchmark.pk).update(stage=stage[:200], progress=progress)
    report(f"[{progress:3d}%] {stage}")


def _zip_folder(folder: Path, target: Path) -> int:
    pack_folder(folder, target, prefix="model")
    return target.stat().st_size


def _reference_description(benchmark: Benchmark, recipe: str) -> str:
    spec = builtins.builtin(benchmark.name)
    note = spec.reference_note if spec is not None else ""
    return f"{RECIPES[recipe]} {note}".strip()


def _recipe_params(benchmark: Benchmark, recipe: str) -> dict:
    spec = builtins.builtin(benchmark.name)
    params = spec.params_for(recipe) if spec is not None else {}
    return {"params": params} if params else {}


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
            description=_reference_description(benchmark, recipe), stage="training",
        )
    ndir = storage.network_dir(network.pk)
    export = ndir / "export"
    storage.remove_tree(export)
    job = job_open(kind=Job.Kind.BUILD_REFERENCE, benchmark=benchmark, network=network)
    started = time.perf_counter()
    inputs = Inputs()
    try:
        value = job_run(
            job=job,
            target=engine_jobs.build_reference,
            kwargs={
                "recipe": recipe,
                "dataset": inputs.file("dataset.npz", storage.media_path(benchmark.data_file)),
                # A folder inside out/: a recipe's by-products go beside it (BuildContext.extra_path).
                "out_dir": isolation.output_path("model"),
                "scale": scale,
                # A built-in benchmark's recipe parameters (digits-8x8's scaling, mnist-5k-mlp's
                # backbone); mnist-5k has none, so its build job is exactly what it was.
                **_recipe_params(benchmark, recipe),
            },
            inputs=inputs,
            out_dir=export,
            limits=sandbox_limits(trusted=True),
        )
    except (JobRejected, JobFailed, JobUnavailable) as exc:
        raise BuildError(f"reference {recipe}: {exc}") from exc
    archive = ndir / "upload.zip"
    # The child names its export inside its own out/ folder, which is now `export`.
    model = export / Path(value["model_dir"]).relative_to(isolation.OUTPUTS)
    network.archive_bytes = _zip_folder(model, archive)
    extras = reference_extras_keep(network=network, model_dir=model)  # gan-data's discriminator
    storage.remove_tree(export)
    network.archive = storage.relative(archive)
    network.params = value["params"]
    network.report = {**value["report"], **extras, "build_seconds": time.perf_counter() - started}
    network.stage = "trained; waiting for its evaluation"  # no longer "training" while it waits
    network.save()
    timing.build_step_timed(network=network, stage=timing.BUILD_TRAINING, started=started)
    return network


def universal_build(*, benchmark: Benchmark, control: Network, report: Report = print) -> UniversalSet:
    existing = UniversalSet.objects.filter(benchmark=benchmark).first()
    if existing is not None:
        return existing
    started = time.perf_counter()
    if not control.info.get("signature"):
        # The control has to pass validation (scan + load) before it is attacked.
        from evaluator.services.pipeline import network_validate

        if not network_validate(network=control):
            control.refresh_from_db()
            raise BuildError(f"control network was {control.status}: {control.reason}")
        control.refresh_from_db()
    folder = storage.benchmark_dir(benchmark.name)
    out = folder / "universal.npz"
    job = job_open(kind=Job.Kind.UNIVERSAL, benchmark=benchmark, network=control)
    inputs = Inputs()
    try:
        value = job_run(
            job=job,
            target=engine_jobs.compute_universal,
            kwargs={
                "model_dir": inputs.model("model", control),
                "dataset": inputs.file("dataset.npz", storage.media_path(benchmark.data_file)),
                "out": isolation.output_path("universal.npz"),
                "count": benchmark.universal_count,
                "xi": benchmark.universal_xi,
                # Only the derived seed crosses into the child, never the secret itself.
                "seed": secret.benchmark_seed(benchmark.name, "universal"),
            },
            inputs=inputs,
            out_dir=folder / "universal-job",
            limits=sandbox_limits(trusted=True),
        )
    except (JobRejected, JobFailed, JobUnavailable) as exc:
        raise BuildError(f"universal perturbations: {exc}") from exc
    (folder / "universal-job" / "universal.npz").replace(out)
    storage.remove_tree(folder / "universal-job")
    universal = UniversalSet.objects.create(
        benchmark=benchmark, file=storage.relative(out), source_network=control,
        count=value["count"], xi=benchmark.universal_xi, seconds=value["seconds"],
    )
    timing.build_step_timed(network=control, stage=timing.BUILD_UNIVERSAL, started=started)
    return universal


def _universal_discard(benchmark: Benchmark) -> None:
    """Drop the universal set and every number measured on it, in one transaction.

    Rebuilding the control changes the universal perturbations (they are fitted
    against it), so no stored universal accuracy may outlive the file it came from.
    The summary columns are cleared too: summary_refresh only copies evaluations that
    exist, so a network whose re-evaluation fails would otherwise keep a stale number.
    """
    universal = UniversalSet.objects.filter(benchmark=benchmark).first()
    with transaction.atomic():
        UniversalSet.objects.filter(benchmark=benchmark).delete()
        Evaluation.objects.filter(
            network__benchmark=benchmark, kind=Evaluation.Kind.UNIVERSAL, source__isnull=True
        ).delete()
        Network.objects.filter(benchmark=benchmark).update(
            universal_accuracy=None, universal_low=None, universal_high=None
        )
    if universal is not None:
        storage.media_path(universal.file).unlink(missing_ok=True)


def _universal_reevaluate(networks: list[Network], report: Report) -> list[Network]:
    """Recompute each network's universal evaluation on the new universal set; returns
    the networks that failed.

    network_evaluate sees the missing universal evaluation as "not validated" and runs
    one validation job per network (load, clean + universal predictions: seconds, not
    an attack); the stored clean evaluation, attack and matrix cells are kept, so only
    the universal numbers and what the new control added are computed.
    """
    failed: list[Network] = []
    for i, network in enumerate(networks, start=1):
        report(f"re-evaluating {network.name} on the new universal set ({i}/{len(networks)})")
        network.refresh_from_db()
        if not network_evaluate(network=network):
            network.refresh_from_db()
            report(f"  {network.name}: {network.status}: {network.reason}")
            failed.append(network)
            continue
        _await_ranking(network)
    return failed


def _await_ranking(network: Network) -> None:
    """Mark a network whose pipeline just completed as waiting for the ranking.

    Its matrix cells may all have been stored before, so its last job can end in an
    earlier stage's status; benchmark_rank only ranks networks past cross-evaluation.
    """
    network.refresh_from_db(fields=["status", "run"])
    if network.status in Network.RUNNING:
        lifecycle.network_move(network=network, to=Network.Status.CROSS_EVALUATING)


def _recorded_scale(network: Network | None) -> float:
    """The scale a reference was trained at (recorded in its params), else 1.0."""
    try:
        return float((network.params or {}).get("scale", 1.0)) if network is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def reference_rebuild(
    *, benchmark: Benchmark, recipe: str, scale: float | None = None, report: Report = print
) -> Network:
    """Retrain one reference and re-measure everything that depended on the old one.

    Deleting the old reference drops every number measured with it (its evaluations,
    its adversarial set and the matrix cells on it); its replacement goes through the
    whole pipeline, which fills its row and column again. Rebuilding the control also
    replaces the universal set, so every network that was ranked is evaluated again on
    the new set. The references changed, so the stored reference scores are cleared and
    the ranking recomputed: afterwards every stored number matches the stored files.
    `scale` None: the scale the old reference was trained at.
    """
    _ensure_dataset(benchmark)
    benchmark.refresh_from_db()
    old = Network.objects.filter(benchmark=benchmark, is_reference=True, recipe=recipe).first()
    scale = _recorded_scale(old) if scale is None else scale
    universal = recipe == CONTROL
    # Networks to re-evaluate on a new universal set: the ranked ones. One still in its
    # pipeline validates after this, or finds its universal evaluation missing on a rerun.
    ranked_at = dict(
        Network.objects.filter(benchmark=benchmark, status=Network.Status.RANKED)
        .exclude(pk=getattr(old, "pk", None)).values_list("pk", "ranked_at")
    )
    Benchmark.objects.filter(pk=benchmark.pk).update(reference_scores={}, state=Benchmark.State.BUILDING)
    try:
        if universal:
            _universal_discard(benchmark)
        if old is not None:
            storage.remove_tree(storage.network_dir(old.pk))
            old.delete()
        _set_stage(benchmark, f"rebuilding reference {recipe}", 0, report, step="training", reference=recipe,
                   plan={"recipes": [recipe], "reevaluate": len(ranked_at) if universal else 0})
        network = reference_build(benchmark=benchmark, recipe=recipe, scale=scale, report=report)
        if universal:
            _set_stage(benchmark, "universal perturbations", 30, report, step="universal")
            universal_build(benchmark=benchmark, control=network, report=report)
        _set_stage(benchmark, f"evaluating and attacking {recipe}", 40, report, step="reference", reference=recipe,
                   until=70 if universal else 100)
        if not network_evaluate(network=network):
            network.refresh_from_db()
            raise BuildError(f"reference {recipe} was {network.status}: {network.reason}")
        _await_ranking(network)
        failed: list[Network] = []
        if universal:
            _set_stage(benchmark, "re-evaluating every network on the new universal set", 70, report,
                       step="re-evaluating")
            others = list(Network.objects.filter(pk__in=ranked_at).select_related("benchmark").order_by("pk"))
            failed = _universal_reevaluate(others, report)
        _rank_after_rebuild(benchmark, ranked_at)
        # An upload that fails here is marked failed like any pipeline failure; a
        # reference that fails leaves the benchmark incomplete, which is the build's error.
        broken = [n for n in failed if n.is_reference]
        if broken:
            raise BuildError("re-evaluation failed for reference(s) "
                             + "; ".join(f"{n.name} ({n.status}: {n.reason})" for n in broken))
    except Exception as exc:
        Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.FAILED, stage=str(exc)[:200])
        raise
    _set_stage(benchmark, "ready", 100, report, step="ready")
    Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.READY)
    network.refresh_from_db()
    return network


def _rank_after_rebuild(benchmark: Benchmark, ranked_at: dict[int, datetime | None]) -> None:
    """Recompute the ranking with the reference scores fitted afresh.

    Cleared again here: a rank that ran concurrently (an upload finishing) may have
    stored scores fitted before the new reference's matrix cells were all in. Networks
    that were ranked before keep their first ranked_at: only re-measured, not new.
    """
    Benchmark.objects.filter(pk=benchmark.pk).update(reference_scores={})
    benchmark_rank(benchmark=benchmark)
    for pk, when in ranked_at.items():
        if when is not None:
            Network.objects.filter(pk=pk, status=Network.Status.RANKED).update(ranked_at=when)


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
        _set_stage(benchmark, "dataset", 0, report, step="dataset", plan={"recipes": names})
        _ensure_dataset(benchmark)
        benchmark.refresh_from_db()
        total = len(names)
        refs: list[Network] = []
        for i, recipe in enumerate(names):
            _set_stage(benchmark, f"training reference {recipe} ({i + 1}/{total})", int(40 * i / total), report,
                       step="training", reference=recipe)
            refs.append(reference_build(benchmark=benchmark, recipe=recipe, scale=scale, report=report))
        _set_stage(benchmark, "universal perturbations", 40, report, step="universal")
        universal_build(benchmark=benchmark, control=refs[0], report=report)
        for i, network in enumerate(refs):
            _set_stage(benchmark, f"evaluating and attacking {network.name} ({i + 1}/{total})",
                       45 + int(55 * i / total), report, step="reference", reference=network.recipe,
                       until=45 + int(55 * (i + 1) / total))
            network.refresh_from_db()
            if network.status != Network.Status.RANKED:
                started = time.perf_counter()
                if not network_run_pipeline(network=network):
                    network.refresh_from_db()
                    raise BuildError(f"reference {network.name} was {network.status}: {network.reason}")
                timing.build_step_timed(network=network, stage=timing.BUILD_REFERENCE, started=started)
        benchmark_rank(benchmark=benchmark)
        _set_stage(benchmark, "ready", 100, report, step="ready")
        Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.READY)
    except Exception as exc:
        Benchmark.objects.filter(pk=benchmark.pk).update(state=Benchmark.State.FAILED, stage=str(exc)[:200])
        raise
    # Issue 15: detection and vector space of every set still missing them, once the ladder
    # is ready (its own failure is reported, never the build's).
    benchmark_analyse(benchmark=benchmark, report=report)
    benchmark.refresh_from_db()
    return benchmark
