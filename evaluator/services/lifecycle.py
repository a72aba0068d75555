"""A network's lifecycle: the one place that moves it between statuses.

Every status write goes through here, checked against ALLOWED. Two tokens keep a stale
writer from overwriting a newer state:

- `Network.run` counts the network's runs. A rerun, a re-validation after a failed
  later evaluation, or a rebuild starts a new run; everything a pipeline writes is
  conditional on the run it started with, so the job of an earlier run (still busy
  when the admin pressed "rerun") can no longer set a phase, store a result or mark
  the network failed: it gets JobSuperseded and stops.
- A Job's (worker, attempts) pair: the process running an attempt holds the job only
  while nobody started a newer attempt (services.jobs checks it at every heartbeat),
  so two workers racing on one redelivered task never both write.

Queueing sends tasks by name (the constants below; evaluator.tasks registers its tasks
under them) with the project's Celery app, so services never import the tasks module
and tasks → services is the only arrow.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from celery import current_app
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from evaluator.models import AdversarialDataset, AuditResult, Evaluation, Job
from evaluator.services import progress as timing
from evaluator.services import storage
from evaluator.services.errors import JobCancelled, JobRejected, JobSuperseded, JobUnavailable
from leaderboard.models import Benchmark, Network

log = logging.getLogger(__name__)

S = Network.Status
RUNNING = frozenset(Network.RUNNING)
# Status → the statuses it may move to. Between running statuses any move is allowed
# (a retried job starts again at its first phase); only the ranking marks a network
# ranked, and only once its pipeline reached the matrix. A ranked network goes back
# into the pipeline to fill what is missing (a new peer's cells, a validation redone
# after the universal set was rebuilt) and can end badly only from there; a rejected
# or failed one moves only by a new run (queued).
ALLOWED: dict[str, frozenset[str]] = {
    **{status: RUNNING | {S.REJECTED, S.FAILED} for status in RUNNING},
    S.CROSS_EVALUATING: RUNNING | {S.RANKED, S.REJECTED, S.FAILED},
    S.RANKED: RUNNING | {S.RANKED},
    S.REJECTED: frozenset({S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED}),
}

TASK_NETWORK_EVALUATE = "evaluator.network_evaluate"
TASK_BENCHMARK_RANK = "evaluator.benchmark_rank"
TASK_REFERENCE_REBUILD = "evaluator.reference_rebuild"
TASK_NETWORK_ANALYSE = "evaluator.network_analyse"
TASK_NETWORK_MEET_PEERS = "evaluator.network_meet_peers"

CANCELLED = "cancelled by an administrator"
UNAVAILABLE = "waiting: {problem}. Untrusted models are evaluated only inside the sandbox."
# Marks the admin log entry written when a young upload is deleted: it still counts
# toward the owner's hourly upload limit (deleting must not reset the limit).
DELETED_UPLOAD_MARK = "deleted upload (counts toward the upload rate limit)"


class TransitionError(RuntimeError):
    """A move the table does not allow: a bug in the caller, never a user error."""


# What timing a stage needs from the row a move starts from (evaluator.services.progress).
_TIMED = ("status", "status_since", "is_reference", "benchmark_id")


def _since(row: dict, to: str, now: datetime, *, restart: bool = False) -> datetime | None:
    return timing.status_since_next(was=row["status"], since=row["status_since"], to=to, restart=restart, now=now)


def _stage_left(pk: int, row: dict, to: str, now: datetime) -> None:
    """Record the stage the network leaves, when it moved on from it."""
    timing.status_left(network_id=pk, benchmark_id=row["benchmark_id"], is_reference=row["is_reference"],
                       was=row["status"], since=row["status_since"], to=to, now=now)


# In-process watchers of every status and progress write (the `rank` command prints
# them as they happen): (network id, status, percent, stage text).
Watcher = Callable[[int, str, int, str], None]
_watchers: list[Watcher] = []


@contextmanager
def progress_watch(watcher: Watcher) -> Iterator[None]:
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)


def _notify(network_id: int) -> None:
    if not _watchers:
        return
    row = Network.objects.filter(pk=network_id).values("status", "progress", "stage").first()
    if row is not None:
        for watcher in list(_watchers):
            watcher(network_id, row["status"], row["progress"], row["stage"])


def _send(name: str, *args: int | str) -> None:
    """Queue a task; a broker outage must not turn a saved upload into an HTTP 500.

    The network stays in its status and the reaper queues it again later. By task name
    on the current app (leaderboard.celery's, loaded with Django): this module needs
    neither the Celery module nor the tasks, which import it.
    """
    try:
        current_app.send_task(name, args=list(args))
    except Exception:
        log.exception("could not queue %s%s; the reaper will retry", name, args)


def enqueue_on_commit(name: str, *args: int | str) -> None:
    transaction.on_commit(lambda: _send(name, *args))


def pipeline_enqueue(network: Network) -> None:
    """Start (or restart) a network's pipeline once the current transaction commits."""
    enqueue_on_commit(TASK_NETWORK_EVALUATE, network.pk)


def ranking_enqueue(benchmark_id: int) -> None:
    enqueue_on_commit(TASK_BENCHMARK_RANK, benchmark_id)


def analysis_enqueue(network_id: int) -> None:
    """Queued after the ranking (FIFO): the analysis never delays a level."""
    enqueue_on_commit(TASK_NETWORK_ANALYSE, network_id)


def meet_peers_enqueue(network_id: int) -> None:
    """The other uploads on a ranked upload's set (pipeline.network_meet_peers): after
    the ranking, so they never delay a level."""
    enqueue_on_commit(TASK_NETWORK_MEET_PEERS, network_id)


def reference_rebuild_enqueue(network: Network) -> None:
    enqueue_on_commit(TASK_REFERENCE_REBUILD, network.benchmark_id, network.recipe)


def network_move(
    *, network: Network, to: str, reason: str | None = None, progress: int | None = None,
    stage: str | None = None, restart: bool = False,
) -> None:
    """Move `network` to `to`, from its stored status, within the run `network` was read in.

    restart: a new run begins (rerun, re-validation), the token moves on and every
    writer of the old run is superseded. Raises JobSuperseded when the network was
    deleted or restarted since it was read, TransitionError when the move is not allowed.
    """
    with transaction.atomic():
        row = Network.objects.select_for_update().filter(pk=network.pk).values(*_TIMED, "run").first()
        if row is None or row["run"] != network.run:
            raise JobSuperseded(f"network {network.pk} was deleted or restarted")
        if to not in ALLOWED[row["status"]]:
            raise TransitionError(f"network {network.pk}: {row['status']} → {to} is not allowed")
        fields: dict = {"status": to, "updated_at": timezone.now()}
        if to != row["status"] or restart:
            fields["status_since"] = _since(row, to, fields["updated_at"], restart=restart)
            _stage_left(network.pk, row, to, fields["updated_at"])
        if reason is not None:
            fields["reason"] = reason[:5000]
        if progress is not None:
            # Within a run the bar never goes back (a retried job restarts its phase, the
            # column restarts at the cross stage's start); a new run starts from `progress`.
            fields["progress"] = progress if restart or to not in RUNNING else Greatest("progress", progress)
        if stage is not None:
            fields["stage"] = stage[:200]
        if restart:
            fields["run"] = row["run"] + 1
        Network.objects.filter(pk=network.pk).update(**fields)
    stored = Network.objects.filter(pk=network.pk).values("status", "progress", "stage", "reason", "run").first()
    for name, value in (stored or {}).items():
        setattr(network, name, value)
    _notify(network.pk)


def network_progress(*, network: Network, status: str, progress: int, stage: str) -> bool:
    """A running job's report (every second at most): one conditional UPDATE, and when
    the status changes a read and a second one, which time the stage it leaves.

    False when the network is no longer running (cancelled, finished): the report is
    dropped. Raises JobSuperseded when it was deleted or restarted since it was read.
    """
    now = timezone.now()
    mine = Network.objects.filter(pk=network.pk, run=network.run)
    change = {"progress": Greatest("progress", progress), "stage": stage[:200], "updated_at": now}
    # The usual report keeps its status: one UPDATE, as before stages were timed.
    moved = mine.filter(status=status).update(**change)
    if not moved:
        # A new status: the stage it leaves is timed, from the status it was read in
        # (the conditional UPDATE below moves it only from there).
        sources = [s for s in RUNNING if status in ALLOWED[s]]
        row = mine.filter(status__in=sources).values(*_TIMED).first()
        if row is not None:
            moved = mine.filter(status=row["status"]).update(status=status, status_since=_since(row, status, now),
                                                             **change)
            if moved:
                _stage_left(network.pk, row, status, now)
    if not moved:
        network_current(network)
    _notify(network.pk)
    return bool(moved)


def network_current(network: Network) -> None:
    """Raise JobSuperseded unless `network` still exists in the run it was read in
    (checked before a job's result is stored)."""
    if not Network.objects.filter(pk=network.pk, run=network.run).exists():
        raise JobSuperseded(f"network {network.pk} was deleted or restarted")


def network_fail(*, network: Network, exc: Exception) -> bool:
    """What a pipeline stage ends with when its job did not succeed; returns False.

    Nothing is written for a superseded run (a newer one owns the network now).
    """
    if isinstance(exc, JobSuperseded):
        log.info("network %s: %s; the newer run goes on", network.pk, exc)
        return False
    if Network.objects.filter(pk=network.pk, run=network.run, status__in=[S.FAILED, S.REJECTED]).exists():
        return False  # already ended (an admin's cancel): the first outcome stands
    try:
        if isinstance(exc, JobUnavailable):
            network_move(network=network, to=S.QUEUED, reason=UNAVAILABLE.format(problem=exc))
        elif isinstance(exc, JobRejected):
            network_move(network=network, to=S.REJECTED, reason=str(exc))
            # Nothing of a rejected model stays unpacked; its archive stays for the owner.
            storage.remove_tree(storage.media_path(f"networks/{network.pk}/model"))
            Network.objects.filter(pk=network.pk).update(model_files={}, info={})
        elif isinstance(exc, JobCancelled):
            network_move(network=network, to=S.FAILED, reason=CANCELLED)
        else:
            network_move(network=network, to=S.FAILED, reason=str(exc))
    except JobSuperseded:
        pass  # deleted or restarted while its job ran: nothing to mark
    return False


def network_requeue(*, network: Network, reason: str, stage: str) -> None:
    """Start a new run of a network's pipeline from what is stored (re-validation)."""
    network_move(network=network, to=S.QUEUED, reason=reason, stage=stage, progress=0, restart=True)
    pipeline_enqueue(network)


def network_rerun(*, network: Network) -> Network:
    """Forget every result touching this network and run its pipeline again.

    Its live jobs are cancelled and the run token moves on, so a job still running for
    it stops at its next heartbeat without writing anything (issue 13's rerun bug).
    """
    with transaction.atomic():
        Evaluation.objects.filter(network=network).delete()
        Evaluation.objects.filter(source=network).delete()
        AdversarialDataset.objects.filter(network=network).delete()
        AuditResult.objects.filter(network=network).delete()
        Job.objects.filter(network=network, state__in=[Job.State.QUEUED, Job.State.RUNNING]).update(
            state=Job.State.CANCELLED, finished_at=timezone.now()
        )
        network.refresh_from_db(fields=["status", "run"])
        network_move(network=network, to=S.QUEUED, reason="", stage="queued for rerun", progress=0, restart=True)
        Network.objects.filter(pk=network.pk).update(
            info={}, flags=[], level=None, score=None, deciding_rung=None, robust_accuracy=None,
            robust_low=None, robust_high=None, audit_curve=[], flag_notes={},
        )
        network.refresh_from_db()
        pipeline_enqueue(network)
    return network


def benchmark_rerun_all(*, benchmark: Benchmark) -> int:
    networks = list(Network.objects.filter(benchmark=benchmark).exclude(archive=""))
    for network in networks:
        network_rerun(network=network)
    return len(networks)


def benchmark_recompute(*, benchmark: Benchmark) -> None:
    ranking_enqueue(benchmark.pk)


def job_cancel(*, job: Job) -> Job:
    """Cancel a queued or running job; a running one's child is killed at its next
    heartbeat (evaluator.services.jobs), within about a second. Its network, if still
    running, ends failed."""
    if job.state not in (Job.State.QUEUED, Job.State.RUNNING):
        return job
    with transaction.atomic():
        job.state = Job.State.CANCELLED
        job.finished_at = timezone.now()
        job.append_log(CANCELLED)
        job.save()
        network = Network.objects.filter(pk=job.network_id, status__in=RUNNING).first()
        if network is not None:
            network_move(network=network, to=S.FAILED, reason=CANCELLED)
    return job


def network_delete(*, network: Network) -> None:
    """Remove a network, its files, and its row and column of the matrix; re-rank.

    A job still running for it finds the row gone at its next heartbeat and stops.
    """
    benchmark_id, pk = network.benchmark_id, network.pk
    with transaction.atomic():
        if network.owner_id and not network.is_reference and network.created_at >= timezone.now() - timedelta(hours=1):
            LogEntry.objects.create(
                user_id=network.owner_id, content_type=ContentType.objects.get_for_model(Network),
                object_id=str(pk), object_repr=network.name[:200], action_flag=DELETION,
                change_message=DELETED_UPLOAD_MARK,
            )
        network.delete()
        ranking_enqueue(benchmark_id)
    shutil.rmtree(storage.media_path(f"networks/{pk}"), ignore_errors=True)


def network_mark_ranked(*, network_id: int, fields: dict, was: str) -> None:
    """The ranking's write: levels and judged numbers always; `ranked` only for a
    network whose pipeline reached the matrix (and still is where the ranking saw it)."""
    if was in (S.CROSS_EVALUATING, S.RANKED):
        now = timezone.now()
        row = Network.objects.filter(pk=network_id, status=was).values(*_TIMED).first() if was != S.RANKED else None
        moved = Network.objects.filter(pk=network_id, status=was).update(
            **fields, status=S.RANKED, progress=100, stage="ranked", reason="",
            **({} if was == S.RANKED else {"ranked_at": now, "status_since": now}),
        )
        if moved and row is not None:
            _stage_left(network_id, row, S.RANKED, now)  # its cross-evaluation ended with the ranking
        if moved:
            return
    Network.objects.filter(pk=network_id).update(**fields)

