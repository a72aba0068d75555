"""The pipeline one network goes through: validate → attack → cross-evaluate → rank.

Every stage is idempotent: it first looks at what is already stored and only
computes what is missing, so a task redelivered after a worker died (acks_late)
never duplicates a row, and adding a network never recomputes existing pairs.
"""

from __future__ import annotations

import logging

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluator.engine import metrics
from evaluator.models import AdversarialDataset, Evaluation, Job, UniversalSet
from evaluator.services import storage
from evaluator.services.jobs import (
    JobCancelled,
    JobFailed,
    JobRejected,
    Stage,
    job_open,
    job_run,
)
from leaderboard.models import Network

log = logging.getLogger(__name__)

S = Network.Status
VALIDATE = Stage(S.VALIDATING, 0, 25)
ATTACK = Stage(S.ATTACKING, 25, 70)
CROSS = Stage(S.CROSS_EVALUATING, 70, 98)

# A stage the network is past once it has reached this status.
ORDER = [S.QUEUED, S.VALIDATING, S.EVALUATING, S.ATTACKING, S.CROSS_EVALUATING, S.RANKED]

# Flags stored on Network.flags (SPEC §2).
FLAG_GRADIENT_MASKING = "gradient-masking"
FLAG_NONDETERMINISTIC = "non-deterministic"
FLAG_PROBABILITIES = "probabilities"
FLAG_LOW_ACCURACY = "low-accuracy"
VANISHED_THRESHOLD = 0.5


def network_set_status(*, network: Network, status: str, reason: str = "", progress: int | None = None) -> None:
    network.status = status
    fields = ["status", "updated_at"]
    if reason:
        network.reason = reason[:5000]
        fields.append("reason")
    if progress is not None:
        network.progress = progress
        fields.append("progress")
    network.save(update_fields=fields)


def _evaluation_save(
    *, network: Network, kind: str, predictions: np.ndarray, labels: np.ndarray,
    num_classes: int, source: Network | None = None, seconds: float = 0.0,
) -> Evaluation | None:
    """Store one evaluation; a concurrent duplicate loses quietly (unique per pair)."""
    acc = metrics.accuracy(predictions, labels)
    try:
        with transaction.atomic():
            return Evaluation.objects.create(
                network=network, kind=kind, source=source,
                correct=acc.correct, total=acc.total, accuracy=acc.value,
                low=acc.low, high=acc.high,
                confusion=metrics.confusion_matrix(labels, predictions, num_classes).tolist(),
                predictions=storage.pack_predictions(predictions), seconds=seconds,
            )
    except IntegrityError:
        return None


def _fail(network: Network, exc: Exception) -> bool:
    if isinstance(exc, JobRejected):
        network_set_status(network=network, status=S.REJECTED, reason=str(exc))
    elif isinstance(exc, JobCancelled):
        network_set_status(network=network, status=S.FAILED, reason="cancelled by an administrator")
    else:
        network_set_status(network=network, status=S.FAILED, reason=str(exc))
    return False


def network_validate(*, network: Network) -> bool:
    """Unpack, scan, load, check the contract; evaluate on clean and universal sets."""
    bench = network.benchmark
    have = set(network.evaluations.filter(source__isnull=True).values_list("kind", flat=True))
    universal = UniversalSet.objects.filter(benchmark=bench).first()
    if network.info and Evaluation.Kind.CLEAN in have and (universal is None or Evaluation.Kind.UNIVERSAL in have):
        return True
    network_set_status(network=network, status=S.VALIDATING, progress=VALIDATE.start)
    ndir = storage.network_dir(network.pk)
    model_dir = ndir / "model"
    storage.remove_tree(model_dir)
    job = job_open(kind=Job.Kind.VALIDATE, benchmark=bench, network=network)
    out = ndir / "predictions-clean.npz"
    try:
        value = job_run(
            job=job,
            target="evaluator.engine.jobs:validate_and_evaluate",
            kwargs={
                "dataset": str(storage.media_path(bench.data_file)),
                "archive": str(storage.media_path(network.archive)),
                "extract_to": str(model_dir),
                "universal": str(storage.media_path(universal.file)) if universal else None,
                "out": str(out),
            },
            network=network,
            stage=VALIDATE,
        )
    except (JobRejected, JobFailed, JobCancelled) as exc:
        storage.remove_tree(model_dir)
        return _fail(network, exc)
    labels = storage.eval_labels(bench.data_file)
    with np.load(out) as data:
        preds = {k: data[k] for k in data.files}
    out.unlink(missing_ok=True)
    network.refresh_from_db()
    network.info = {**value["info"], "model_dir": storage.relative(value["model_dir"])}
    network_set_status(network=network, status=S.EVALUATING)
    for kind in preds:
        _evaluation_save(network=network, kind=kind, predictions=preds[kind], labels=labels, num_classes=bench.num_classes)
    _summary_refresh(network)
    return True


def _summary_refresh(network: Network) -> None:
    """Copy the headline numbers and flags onto the network row (leaderboard speed)."""
    evals = {e.kind: e for e in network.evaluations.filter(source__isnull=True)}
    for kind, prefix in ((Evaluation.Kind.CLEAN, "clean"), (Evaluation.Kind.UNIVERSAL, "universal")):
        e = evals.get(kind)
        if e is not None:
            setattr(network, f"{prefix}_accuracy", e.accuracy)
            setattr(network, f"{prefix}_low", e.low)
            setattr(network, f"{prefix}_high", e.high)
    adv = AdversarialDataset.objects.filter(network=network).first()
    flags: list[str] = []
    info = network.info or {}
    if adv is not None:
        acc = metrics.accuracy_from_correct(
            adv.prediction_array() == storage.eval_labels(network.benchmark.data_file)
        )
        network.whitebox_accuracy, network.whitebox_low, network.whitebox_high = acc.value, acc.low, acc.high
        network.attack_success = adv.success_rate
        if adv.vanished_fraction > VANISHED_THRESHOLD:
            flags.append(FLAG_GRADIENT_MASKING)
    if info and not info.get("deterministic", True):
        flags.append(FLAG_NONDETERMINISTIC)
    if info.get("outputs_probabilities"):
        flags.append(FLAG_PROBABILITIES)
    if network.clean_accuracy is not None and network.clean_accuracy < 2.0 / network.benchmark.num_classes:
        flags.append(FLAG_LOW_ACCURACY)
    network.flags = flags
    network.save()


def network_attack(*, network: Network) -> bool:
    """adv(network): one targeted attack on every eval image, stored once."""
    if AdversarialDataset.objects.filter(network=network).exists():
        return True
    bench = network.benchmark
    network_set_status(network=network, status=S.ATTACKING, progress=ATTACK.start)
    out = storage.network_dir(network.pk) / "adversarial.npz"
    job = job_open(kind=Job.Kind.ATTACK, benchmark=bench, network=network)
    try:
        value = job_run(
            job=job,
            target="evaluator.engine.jobs:attack",
            kwargs={
                "model_dir": str(storage.media_path(network.info["model_dir"])),
                "dataset": str(storage.media_path(bench.data_file)),
                "out": str(out),
                **bench.attack_config(),
            },
            network=network,
            stage=ATTACK,
        )
    except (JobRejected, JobFailed, JobCancelled) as exc:
        return _fail(network, exc)
    predictions = np.asarray(value["predictions"])
    labels = storage.eval_labels(bench.data_file)
    try:
        with transaction.atomic():
            AdversarialDataset.objects.create(
                network=network, file=storage.relative(out),
                epsilon=bench.epsilon, step=bench.step, steps=bench.steps,
                success_rate=value["success_rate"],
                whitebox_correct=int((predictions == labels).sum()), total=len(labels),
                vanished_fraction=value["vanished_fraction"], seconds=value["seconds"],
                predictions=storage.pack_predictions(predictions),
            )
    except IntegrityError:
        pass  # a redelivered task finished first: the stored set stands
    network.refresh_from_db()
    _summary_refresh(network)
    return True


def _peers(network: Network) -> list[Network]:
    """Networks of the same benchmark whose attack exists (candidates for pairs)."""
    return list(
        Network.objects.filter(benchmark=network.benchmark, adversarial__isnull=False)
        .exclude(pk=network.pk)
        .exclude(status__in=[S.REJECTED, S.FAILED])
        .select_related("adversarial")
    )


def network_cross_evaluate(*, network: Network) -> bool:
    """The network's row and column of the matrix: only the pairs not yet stored.

    Loops until no pair is missing, because a network that finished its attack
    while this job ran must still meet this one (two concurrent uploads).
    """
    bench = network.benchmark
    labels = storage.eval_labels(bench.data_file)
    network_set_status(network=network, status=S.CROSS_EVALUATING, progress=CROSS.start)
    own = AdversarialDataset.objects.get(network=network)
    for _round in range(5):
        peers = _peers(network)
        have_row = set(Evaluation.objects.filter(network=network, source__in=peers).values_list("source_id", flat=True))
        have_col = set(Evaluation.objects.filter(source=network, network__in=peers).values_list("network_id", flat=True))
        todo = [
            {
                "id": p.pk,
                "model_dir": str(storage.media_path(p.info["model_dir"])),
                "adversarial": str(storage.media_path(p.adversarial.file)),
                "row": p.pk not in have_row,
                "column": p.pk not in have_col,
            }
            for p in peers
            if p.pk not in have_row or p.pk not in have_col
        ]
        if not todo:
            return True
        out = storage.network_dir(network.pk) / "predictions-cross.npz"
        job = job_open(kind=Job.Kind.CROSS, benchmark=bench, network=network)
        try:
            value = job_run(
                job=job,
                target="evaluator.engine.jobs:cross_evaluate",
                kwargs={
                    "model_dir": str(storage.media_path(network.info["model_dir"])),
                    "dataset": str(storage.media_path(bench.data_file)),
                    "own_adversarial": str(storage.media_path(own.file)),
                    "others": todo,
                    "out": str(out),
                },
                network=network,
                stage=CROSS,
            )
        except (JobRejected, JobFailed, JobCancelled) as exc:
            return _fail(network, exc)
        by_id = {p.pk: p for p in peers}
        with np.load(out) as data:
            for key in data.files:
                direction, pid = key.split("_")
                peer = by_id[int(pid)]
                seconds = float(value["seconds"].get(key, 0.0))
                if direction == "row":
                    _evaluation_save(network=network, kind=Evaluation.Kind.ADVERSARIAL, source=peer,
                                     predictions=data[key], labels=labels, num_classes=bench.num_classes, seconds=seconds)
                else:
                    _evaluation_save(network=peer, kind=Evaluation.Kind.ADVERSARIAL, source=network,
                                     predictions=data[key], labels=labels, num_classes=bench.num_classes, seconds=seconds)
        out.unlink(missing_ok=True)
    return True


def network_run_pipeline(*, network: Network) -> bool:
    """Every stage in this process, in order (the `rank` command and the build)."""
    from evaluator.services.ranking import benchmark_rank

    for stage in (network_validate, network_attack, network_cross_evaluate):
        network.refresh_from_db()
        if not stage(network=network):
            return False
    benchmark_rank(benchmark=network.benchmark)
    return True


def network_mark_ranked_time(network: Network) -> None:
    Network.objects.filter(pk=network.pk).update(ranked_at=timezone.now())
