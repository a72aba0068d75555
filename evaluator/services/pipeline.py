"""The pipeline one network goes through: validate → attack → cross-evaluate → rank.

For an upload the first three run as one sandbox job (network_evaluate); the
separate stage functions serve the benchmark build and resume partial work.

Every stage is idempotent: it first looks at what is already stored and only
computes what is missing, so a task redelivered after a worker died (acks_late)
never duplicates a row, and adding a network never recomputes existing pairs.
"""

from __future__ import annotations

import json
import logging
import os

from evaluator.engine.jobs import PHASES
from evaluator.models import AdversarialDataset, Evaluation, Job, UniversalSet
from evaluator.services import results, storage
from evaluator.services.jobs import (
    JobCancelled,
    JobFailed,
    JobRejected,
    Phases,
    Stage,
    job_open,
    job_run,
)
from leaderboard.models import Network

log = logging.getLogger(__name__)

S = Network.Status
# validate_and_evaluate reports 0.5 when it starts predicting: from there it is evaluating.
VALIDATE = Phases(((0.0, 0.5, Stage(S.VALIDATING, 0, 12)), (0.5, 1.0, Stage(S.EVALUATING, 12, 25))))
ATTACK = Stage(S.ATTACKING, 25, 70)
CROSS = Stage(S.CROSS_EVALUATING, 70, 98)
EVALUATE = Phases(tuple((*PHASES[name], stage) for name, stage in
                        (("validate", VALIDATE), ("attack", ATTACK), ("cross", CROSS))))


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


def _fail(network: Network, exc: Exception) -> bool:
    if not Network.objects.filter(pk=network.pk).exists():
        return False  # deleted while its job ran: nothing to mark
    if isinstance(exc, JobRejected):
        network_set_status(network=network, status=S.REJECTED, reason=str(exc))
    elif isinstance(exc, JobCancelled):
        network_set_status(network=network, status=S.FAILED, reason="cancelled by an administrator")
    else:
        network_set_status(network=network, status=S.FAILED, reason=str(exc))
    return False


def _validated(network: Network) -> bool:
    have = set(network.evaluations.filter(source__isnull=True).values_list("kind", flat=True))
    universal = UniversalSet.objects.filter(benchmark=network.benchmark).exists()
    return bool(network.info) and Evaluation.Kind.CLEAN in have and (
        not universal or Evaluation.Kind.UNIVERSAL in have
    )


def _universal_path(network: Network) -> str | None:
    universal = UniversalSet.objects.filter(benchmark=network.benchmark).first()
    return str(storage.media_path(universal.file)) if universal else None


def network_validate(*, network: Network) -> bool:
    """Unpack, scan, load, check the contract; evaluate on clean and universal sets."""
    if _validated(network):
        return True
    bench = network.benchmark
    network_set_status(network=network, status=S.VALIDATING, progress=0)
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
                "universal": _universal_path(network),
                "out": str(out),
            },
            network=network,
            stage=VALIDATE,
        )
    except (JobRejected, JobFailed, JobCancelled) as exc:
        storage.remove_tree(model_dir)
        return _fail(network, exc)
    network_set_status(network=network, status=S.EVALUATING)
    results.validation_store(network, value, out)
    return True


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
    results.attack_store(network, value, out)
    return True


def _peers(network: Network) -> list[Network]:
    """Networks of the same benchmark whose attack exists (candidates for pairs)."""
    return list(
        Network.objects.filter(benchmark=network.benchmark, adversarial__isnull=False)
        .exclude(pk=network.pk)
        .exclude(status__in=[S.REJECTED, S.FAILED])
        .select_related("adversarial")
    )


def _missing_pairs(network: Network, peers: list[Network]) -> list[dict]:
    """The engine's `others`: peers with the row and/or column not stored yet."""
    have_row = set(Evaluation.objects.filter(network=network, source__in=peers).values_list("source_id", flat=True))
    have_col = set(Evaluation.objects.filter(source=network, network__in=peers).values_list("network_id", flat=True))
    return [
        {
            "id": p.pk,
            "model_dir": str(storage.media_path(p.info["model_dir"])),
            "adversarial": str(storage.media_path(p.adversarial.file)),
            "info": p.info,
            "row": p.pk not in have_row,
            "column": p.pk not in have_col,
        }
        for p in peers
        if p.pk not in have_row or p.pk not in have_col
    ]


def network_cross_evaluate(*, network: Network) -> bool:
    """The network's row and column of the matrix: only the pairs not yet stored.

    Loops until no pair is missing, because a network that finished its attack
    while this job ran must still meet this one (two concurrent uploads).
    """
    bench = network.benchmark
    own = AdversarialDataset.objects.get(network=network)
    for _round in range(5):
        peers = _peers(network)
        todo = _missing_pairs(network, peers)
        if not todo:
            return True
        network_set_status(network=network, status=S.CROSS_EVALUATING, progress=CROSS.start)
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
        results.cross_store(network, peers, value, out)
    return True


def _evaluate_in_one_job(network: Network, *, validated: bool, adversarial: AdversarialDataset | None) -> bool:
    """What is missing of validate and attack, plus the pairs, in one sandbox job.

    Each phase is stored as soon as the job reports past it (the engine writes
    `<phase>.json` last), so the page shows the clean accuracy during the attack
    and a worker lost mid-attack does not lose the validation.
    """
    bench = network.benchmark
    ndir = storage.network_dir(network.pk)
    out_dir = ndir / "evaluate"
    storage.remove_tree(out_dir)
    model_dir = ndir / "model"
    kwargs: dict = {"dataset": str(storage.media_path(bench.data_file)), "out_dir": str(out_dir)}
    if validated:
        kwargs["model_dir"] = str(storage.media_path(network.info["model_dir"]))
    else:
        storage.remove_tree(model_dir)
        kwargs.update(archive=str(storage.media_path(network.archive)), extract_to=str(model_dir),
                      universal=_universal_path(network))
    if adversarial is None:
        kwargs["attack"] = bench.attack_config()
    else:  # stored already: its evaluations were made on this file, keep it
        kwargs["own_adversarial"] = str(storage.media_path(adversarial.file))
    peers = _peers(network)
    kwargs["others"] = _missing_pairs(network, peers)
    adversarial_path = ndir / "adversarial.npz"

    stored: set[str] = set()

    def store_finished(_fraction: float = 1.0, _text: str = "") -> None:
        phase = "validation"
        if phase not in stored and (out_dir / f"{phase}.json").exists():
            stored.add(phase)
            value = json.loads((out_dir / f"{phase}.json").read_text())
            results.validation_store(network, value, out_dir / "validation.npz")
        phase = "attack"
        if phase not in stored and (out_dir / f"{phase}.json").exists():
            stored.add(phase)
            os.replace(out_dir / "adversarial.npz", adversarial_path)
            results.attack_store(network, json.loads((out_dir / f"{phase}.json").read_text()), adversarial_path)

    status, progress = EVALUATE.at(0.0 if not validated else PHASES["attack"][0])
    network_set_status(network=network, status=status, progress=progress)
    job = job_open(kind=Job.Kind.EVALUATE, benchmark=bench, network=network)
    try:
        value = job_run(
            job=job,
            target="evaluator.engine.jobs:evaluate_network",
            kwargs=kwargs,
            network=network,
            stage=EVALUATE,
            on_report=store_finished,
        )
    except (JobRejected, JobFailed, JobCancelled) as exc:
        if not validated and "validation" not in stored:
            storage.remove_tree(model_dir)
        storage.remove_tree(out_dir)
        return _fail(network, exc)
    store_finished()
    results.cross_store(network, peers, value["cross"], out_dir / "cross.npz")
    storage.remove_tree(out_dir)
    job.refresh_from_db()
    job.append_log("phases: " + ", ".join(f"{name} {part['phase_seconds']:.2f} s" for name, part in value.items()))
    job.save(update_fields=["log"])
    return True


def network_evaluate(*, network: Network) -> bool:
    """Everything between upload and ranking, resuming from what is stored.

    One sandbox job does validate + attack + cross (TensorFlow imported and the model
    loaded once); then any pair still missing (a peer that finished its attack
    meanwhile) is filled in by a cross job.
    """
    validated = _validated(network)
    adversarial = AdversarialDataset.objects.filter(network=network).first()
    if not (validated and adversarial is not None):
        if not _evaluate_in_one_job(network, validated=validated, adversarial=adversarial):
            return False
    network.refresh_from_db()
    return network_cross_evaluate(network=network)


def network_run_pipeline(*, network: Network) -> bool:
    """Every stage in this process, in order (the `rank` command and the build)."""
    from evaluator.services.ranking import benchmark_rank

    network.refresh_from_db()
    if not network_evaluate(network=network):
        return False
    benchmark_rank(benchmark=network.benchmark)
    return True


