"""The pipeline one network goes through: accept → validate → attack → matrix → rank.

The archive is unpacked here (engine.archive: stdlib, defensive) and every file of the
model is hashed; from then on each job gets a verified copy of exactly that model. One
sandbox job does the network's validation, attack and matrix row (its model on the
others' adversarial sets). Its column (each other network on its adversarial set) is
computed by peers.py: the trusted references together, before the ranking; each
earlier upload's model alone in its own child, after the ranking (network_meet_peers:
those cells never decide this network's level). So no process ever holds two uploads'
models, a peer that misbehaves is charged to itself, and upload → ranked does not grow
with the number of uploads.

Every stage is idempotent: it first looks at what is already stored and only
computes what is missing, so a task redelivered after a worker died (acks_late)
never duplicates a row, and adding a network never recomputes existing pairs.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from evaluator.engine import archive, isolation
from evaluator.engine import jobs as engine_jobs
from evaluator.engine.errors import ContractError
from evaluator.engine.jobs import PHASES
from evaluator.models import AdversarialDataset, AuditResult, Evaluation, Job, UniversalSet
from evaluator.services import analysis, lifecycle, peers, results, secret, storage
from evaluator.services.jobs import (
    MODEL_CHANGED,
    Inputs,
    JobCancelled,
    JobFailed,
    JobRejected,
    JobSuperseded,
    JobUnavailable,
    Phases,
    Stage,
    job_open,
    job_run,
)
from evaluator.services.sandboxing import isolation_problem, sandbox_limits
from leaderboard.models import Network

log = logging.getLogger(__name__)

S = Network.Status
# The engine reports 0.5 of validation when it starts predicting: from there it is evaluating.
VALIDATE = Phases(((0.0, 0.5, Stage(S.VALIDATING, 0, 12)), (0.5, 1.0, Stage(S.EVALUATING, 12, 25))))
ATTACK = Stage(S.ATTACKING, 25, 42)
AUDIT = Stage(S.ATTACKING, 42, 70)  # the untargeted audit is an attack too, for the status
CROSS = Stage(S.CROSS_EVALUATING, 70, 98)
EVALUATE = Phases(tuple((*PHASES[name], stage) for name, stage in
                        (("validate", VALIDATE), ("attack", ATTACK), ("audit", AUDIT), ("cross", CROSS))))


def _validated(network: Network) -> bool:
    have = set(network.evaluations.filter(source__isnull=True).values_list("kind", flat=True))
    universal = UniversalSet.objects.filter(benchmark=network.benchmark).exists()
    return bool(network.info.get("signature")) and Evaluation.Kind.CLEAN in have and (
        not universal or Evaluation.Kind.UNIVERSAL in have
    )


def _audited(network: Network) -> bool:
    """The audit and the universal perturbations fitted on the network (one phase)."""
    return AuditResult.objects.filter(network=network).exists() and network.evaluations.filter(
        kind=Evaluation.Kind.UNIVERSAL_OWN, source__isnull=True).exists()


def network_accept(*, network: Network) -> bool:
    """Unpack the stored archive (once) and record the sha256 of every model file.

    A rerun unpacks again and must find the very files accepted the first time.
    """
    if network.info.get("model_dir") and network.model_files:
        return True
    target = storage.network_dir(network.pk) / "model"
    storage.remove_tree(target)
    try:
        model = archive.unpack_upload(storage.media_path(network.archive), target)
        manifest = isolation.folder_manifest(model)
    except ContractError as exc:
        storage.remove_tree(target)
        return lifecycle.network_fail(network=network, exc=JobRejected(str(exc)))
    if network.model_files and manifest != network.model_files:
        log.error("network %s: the re-unpacked model differs from the accepted one", network.pk)
        return lifecycle.network_fail(network=network, exc=JobFailed(MODEL_CHANGED))
    network.model_files = manifest
    network.info = {**network.info, "model_dir": storage.relative(model)}
    network.save(update_fields=["model_files", "info", "updated_at"])
    # The same model files as a live network (re-zipped, renamed): answered with a link
    # to it instead of a second identical row. Lazy: leaderboard imports evaluator.
    from leaderboard.duplicates import duplicate_reason, network_duplicate_of

    if (existing := network_duplicate_of(network=network)) is not None:
        return lifecycle.network_fail(network=network, exc=JobRejected(duplicate_reason(existing)))
    return True


def _store_finished(network: Network, stored: set[str], out: Path) -> None:
    """Store each phase whose `<phase>.json` the job has written (it writes it last),
    unless a newer run owns the network (then the job stops: JobSuperseded)."""
    if not any(name not in stored and (out / f"{name}.json").exists() for name in ("validation", "attack", "audit")):
        return
    lifecycle.network_current(network)
    if "validation" not in stored and (out / "validation.json").exists():
        stored.add("validation")
        value = json.loads((out / "validation.json").read_text())
        results.validation_store(network, value, out / "validation.npz")
    if "attack" not in stored and (out / "attack.json").exists():
        stored.add("attack")
        # A copy, taken once the phase is complete: the child never reaches the stored file.
        stored_set = storage.network_dir(network.pk) / "adversarial.npz"
        shutil.copyfile(out / "adversarial.npz", stored_set)
        results.attack_store(network, json.loads((out / "attack.json").read_text()), stored_set)
    if "audit" not in stored and (out / "audit.json").exists():
        stored.add("audit")
        results.audit_store(network, json.loads((out / "audit.json").read_text()), out / "audit.npz",
                            own_universal=out / "universal-own.npz")


def _network_job(network: Network, *, validate: bool, attack: bool, peers_todo: list[Network],
                 audit: bool = False) -> bool:
    """What is missing of validation, attack and audit, plus the matrix row, in one sandbox job.

    Each phase is stored as soon as the job reports past it, so the page shows the clean
    accuracy during the attack and a worker lost mid-attack does not lose the validation.
    """
    bench = network.benchmark
    inputs = Inputs()
    kwargs: dict = {
        "dataset": inputs.file("dataset.npz", storage.media_path(bench.data_file)),
        "model_dir": inputs.model("model", network),
        "out_dir": isolation.OUTPUTS,
        "validate": validate,
        "info": None if validate else network.info,
        "rows": [
            {"id": p.pk, "name": p.name, "adversarial": inputs.file(f"adv-{p.pk}.npz", storage.media_path(p.adversarial.file))}
            for p in peers_todo
        ],
    }
    if validate and (universal := UniversalSet.objects.filter(benchmark=bench).first()):
        kwargs["universal"] = inputs.file("universal.npz", storage.media_path(universal.file))
    if attack:
        kwargs["attack"] = bench.attack_config()
    if audit:
        kwargs["audit"] = {"epsilon": bench.epsilon, "universal": {
            "count": bench.universal_count, "xi": bench.universal_xi,
            # Derived from the deployment's secret: nobody can replay the fit offline.
            "seed": secret.benchmark_seed(f"{bench.name}/network-{network.pk}", "universal-own")}}
    first = "validate" if validate else "attack" if attack else "audit" if audit else "cross"
    start = PHASES[first][0]
    status, progress = EVALUATE.at(start)
    lifecycle.network_move(network=network, to=status, progress=progress)
    job = job_open(kind=Job.Kind.EVALUATE, benchmark=bench, network=network)
    out_dir = storage.network_dir(network.pk) / "evaluate"
    stored: set[str] = set()
    try:
        value = job_run(
            job=job, target=engine_jobs.evaluate_network, kwargs=kwargs, inputs=inputs, out_dir=out_dir,
            network=network, stage=EVALUATE, limits=sandbox_limits(trusted=network.is_reference),
            on_report=lambda out: _store_finished(network, stored, out),
        )
    except (JobRejected, JobFailed, JobCancelled, JobUnavailable) as exc:
        return lifecycle.network_fail(network=network, exc=exc)
    _store_finished(network, stored, out_dir)
    results.rows_store(network, {p.pk: p for p in peers_todo}, value["cross"], out_dir / "cross.npz")
    storage.remove_tree(out_dir)
    job.refresh_from_db()
    phases = {name: part["phase_seconds"] for name, part in value.items()}
    job.timings = {**job.timings, "phases": phases}
    job.append_log("phases: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items()))
    job.save(update_fields=["log", "timings"])
    return True


def network_validate(*, network: Network) -> bool:
    """Unpack, scan, load, check the contract; evaluate on clean and universal sets."""
    if _validated(network):
        return True
    return network_accept(network=network) and _network_job(network, validate=True, attack=False, peers_todo=[])


def _on_the_level_path(network: Network, columns: list[Network]) -> list[Network]:
    """The column cells the ranking waits for.

    An upload's level and robust accuracy need its row and the references' column
    (SPEC §2: levels are against the references). The other uploads on its set change
    only their own robust accuracy, so they come after its ranking
    (network_meet_peers): one sandbox child per uploaded peer, which would otherwise
    make upload → ranked grow with the board. A reference's column is different: every
    upload's level is compared on that reference's set, so it is all on the path.
    """
    return columns if network.is_reference else [p for p in columns if p.is_reference]


def network_cross_evaluate(*, network: Network) -> bool:
    """The network's row and the column cells its ranking needs: only what is missing.

    Loops until no such pair is missing, because a network that finished its attack
    while this ran must still meet this one (two concurrent uploads). A peer that fails
    on this network's set is charged to the peer (peers.peer_charge) and left out.
    """
    for _round in range(5):
        rows, columns = peers.matrix_missing(network, peers.matrix_peers(network))
        columns = _on_the_level_path(network, columns)
        if not rows and not columns:
            return True
        lifecycle.network_move(network=network, to=S.CROSS_EVALUATING, progress=CROSS.start)
        if rows and not _network_job(network, validate=False, attack=False, peers_todo=rows):
            return False
        try:
            peers.columns_evaluate(network=network, peers_todo=columns)
        except (JobCancelled, JobUnavailable) as exc:
            return lifecycle.network_fail(network=network, exc=exc)
    return True


def network_meet_peers(*, network: Network) -> int:
    """After an upload's ranking: every uploaded peer on its adversarial set, each alone
    in its own child (services.peers). Returns how many peers were evaluated, so the
    caller re-ranks only when a robust accuracy may have moved.

    Nothing here moves the upload's status or bar: it is ranked, and these cells
    never change its level. Loops like network_cross_evaluate for peers attacked
    meanwhile; a peer that fails is charged to the peer.
    """
    met = 0
    for _round in range(5):
        now = Network.objects.filter(pk=network.pk).values("status", "run").first()
        if now is None or now["status"] not in (S.CROSS_EVALUATING, S.RANKED) or not hasattr(network, "adversarial"):
            return met  # rerun, rejected or deleted meanwhile: its next run queues this again
        network.status, network.run = now["status"], now["run"]
        _rows, columns = peers.matrix_missing(network, peers.matrix_peers(network))
        # Only uploads attacked before it: a newer one meets this set in its own row
        # (ranking.complete_subset requires it there), so it is not asked twice.
        todo = [p for p in columns if not p.is_reference and p.adversarial.pk < network.adversarial.pk]
        if not todo:
            return met
        try:
            peers.columns_evaluate(network=network, peers_todo=todo, progress=False)
        except JobSuperseded:
            return met  # rerun or deleted while its peers ran: its next run queues this again
        except JobUnavailable as exc:
            # No sandbox on this worker: the cells wait; the reaper queues this again.
            log.warning("network %s: its uploaded peers wait: %s", network.pk, exc)
            return met
        met += len(todo)
    return met


def network_evaluate(*, network: Network) -> bool:
    """Everything between upload and ranking, resuming from what is stored.

    False when it did not get through (the network's status says why), also when a
    newer run took the network over meanwhile (a rerun, a deletion).
    """
    try:
        return _evaluate(network)
    except JobSuperseded as exc:
        return lifecycle.network_fail(network=network, exc=exc)


def _evaluate(network: Network) -> bool:
    if not network.is_reference and (problem := isolation_problem()):
        return lifecycle.network_fail(network=network, exc=JobUnavailable(problem))
    if not network_accept(network=network):
        return False
    validated = _validated(network)
    attacked = AdversarialDataset.objects.filter(network=network).exists()
    audited = _audited(network)
    if not (validated and attacked and audited):
        rows, _columns = peers.matrix_missing(network, peers.matrix_peers(network))
        if not _network_job(network, validate=not validated, attack=not attacked, peers_todo=rows,
                            audit=not audited):
            return False
    network.refresh_from_db()
    if not network_cross_evaluate(network=network):
        return False
    peers.failures_resolve(network=network)
    return True


def network_run_pipeline(*, network: Network) -> bool:
    """Every stage in this process, in order (the `rank` command and the build)."""
    from evaluator.services.ranking import benchmark_rank

    network.refresh_from_db()
    if not network_evaluate(network=network):
        return False
    benchmark_rank(benchmark=network.benchmark)
    network_analyse_after_ranking(network=network)
    if network_meet_peers(network=network):
        benchmark_rank(benchmark=network.benchmark)
    return True


def network_analyse_after_ranking(*, network: Network) -> None:
    """Detection and vector space of an upload's adversarial set (issue 15): one trusted
    job of a few seconds, run once the network is ranked (a worker queues it after the
    ranking), so it is never on the path from upload to level. A failure there is
    recorded on the analysis, never the network. The build and a rebuild analyse the
    references at their end."""
    if not network.is_reference:
        analysis.network_analyse(network=network)
