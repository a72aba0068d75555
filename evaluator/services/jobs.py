"""Running engine work as recorded, sandboxed jobs.

A Job row is the durable record of one unit of work: its attempts, log, timings
and peak memory. The engine runs in a child process (engine.sandbox) so a hostile
or broken model can crash, hang or blow up memory without taking the worker down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evaluator.engine.sandbox import SandboxLimits, SandboxResult, SpareChild, run_in_sandbox
from evaluator.models import Job
from evaluator.services import storage
from leaderboard.models import Benchmark, Network

log = logging.getLogger(__name__)

# Outcomes that mean the upload itself is at fault: its own exception, or it broke
# a resource limit that every network must respect.
UPLOAD_FAULTS = ("rejected", "timeout", "memory")
HEARTBEAT_EVERY_S = 5.0
# What a spare child imports before its job arrives: every engine job needs TensorFlow.
PRELOAD = ("tensorflow",)

# This process's spare sandbox child (settings.SANDBOX_SPARE): it imports TensorFlow
# (2–3 s, up to a fifth of an upload's wait) while the worker is idle, and the next job
# runs in it. Only in Celery's task-running processes (spare_enable, from the
# worker_process_init signal): a command that runs a few jobs and exits has no use
# for one. Owned by the pid that started it: a forked process must not use its parent's.
_spare: SpareChild | None = None
_spare_owner = 0
_spare_wanted = False
_spare_lock = threading.Lock()  # a threads pool would share this process's spare


class JobRejected(Exception):
    """The network broke the contract; the message is for the user."""


class JobFailed(Exception):
    """An internal error that survived every attempt; the message is for the user."""


class JobCancelled(Exception):
    """An admin cancelled the job while it was queued or running."""


@dataclass(frozen=True)
class Stage:
    """Maps a job's own 0..1 progress onto the network's 0..100 bar."""

    status: str
    start: int
    end: int

    def at(self, fraction: float) -> tuple[str, int]:
        """(network status, percent) when the job reports `fraction`."""
        return self.status, int(self.start + (self.end - self.start) * max(0.0, min(1.0, fraction)))


@dataclass(frozen=True)
class Phases:
    """A job that goes through several stages: each part owns a [low, high) share of
    the job's 0..1 progress (e.g. engine.jobs.PHASES) and maps its share like a Stage
    (or like nested Phases)."""

    parts: tuple[tuple[float, float, Stage | Phases], ...]

    def at(self, fraction: float) -> tuple[str, int]:
        for low, high, part in self.parts:
            if fraction < high:
                return part.at((fraction - low) / max(high - low, 1e-9))
        return self.parts[-1][2].at(1.0)


def worker_id() -> str:
    """host:pid of this process, so a reaper on the same host can tell it is dead."""
    return f"{socket.gethostname()}:{os.getpid()}"


def job_open(*, kind: str, benchmark: Benchmark, network: Network | None = None) -> Job:
    """The live job of this kind for this target, or a new one (idempotent)."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update()
            .filter(
                kind=kind,
                benchmark=benchmark,
                network=network,
                state__in=[Job.State.QUEUED, Job.State.RUNNING],
            )
            .first()
        )
        if job is None:
            job = Job.objects.create(kind=kind, benchmark=benchmark, network=network)
    return job


def job_finish(*, job: Job, state: str, line: str = "") -> None:
    job.state = state
    job.finished_at = timezone.now()
    if job.started_at:
        job.seconds = (job.finished_at - job.started_at).total_seconds()
    if line:
        job.append_log(line)
    job.save()


def _progress_writer(
    job: Job,
    network: Network | None,
    stage: Stage | Phases | None,
    on_report: Callable[[float, str], None] | None,
) -> Callable[[float, str], None]:
    last = {"at": 0.0, "status": ""}

    def write(fraction: float, text: str) -> None:
        if on_report is not None:
            on_report(fraction, text)  # every report, not throttled: it stores results
        status, percent = stage.at(fraction) if stage is not None else ("", 0)
        now = time.monotonic()
        # At most one write a second, but a change of status is never held back.
        if now - last["at"] < 1.0 and fraction < 1.0 and status == last["status"]:
            return
        last.update(at=now, status=status)
        # The heartbeat doubles as the cancel check: an admin's cancel (or the network's
        # deletion) stops the child here, within a second, not when a long job ends.
        if not Job.objects.filter(pk=job.pk).exclude(state=Job.State.CANCELLED).update(heartbeat_at=timezone.now()):
            raise JobCancelled(f"job {job.pk} was cancelled")
        if network is not None and stage is not None:
            # Only while it is still running: never over a cancel's 'failed'.
            Network.objects.filter(pk=network.pk, status__in=Network.RUNNING).update(
                status=status, progress=percent, stage=text[:200], updated_at=timezone.now()
            )

    return write


def sandbox_limits() -> SandboxLimits:
    return SandboxLimits(timeout_s=settings.SANDBOX_TIMEOUT_S, memory_mb=settings.SANDBOX_MEMORY_MB)


def spare_enable() -> None:
    """This process runs jobs for a worker: keep a spare child from now on."""
    global _spare_wanted
    _spare_wanted = True
    spare_prepare()


def spare_prepare() -> None:
    """Start this process's spare child unless it has a live one (after every job).
    Does nothing with SANDBOX_SPARE off or outside a worker."""
    global _spare, _spare_owner
    if not (settings.SANDBOX_SPARE and _spare_wanted):
        return
    with _spare_lock:
        if _spare is not None and _spare_owner == os.getpid() and _spare.alive():
            return
        _spare = SpareChild(storage.spare_workdir(), limits=sandbox_limits(), preload=PRELOAD)
        _spare_owner = os.getpid()


def _spare_take(limits: SandboxLimits) -> SpareChild | None:
    """The spare for a job with these limits, or None (then the job starts cold)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is None or _spare_owner != os.getpid():
        return None
    if not spare.matches(limits, None):  # the settings changed since it started
        spare.discard()
        storage.remove_tree(spare.workdir)
        return None
    return spare


def job_run(
    *,
    job: Job,
    target: str,
    kwargs: dict[str, Any],
    network: Network | None = None,
    stage: Stage | Phases | None = None,
    limits: SandboxLimits | None = None,
    on_report: Callable[[float, str], None] | None = None,
) -> Any:
    """Run one engine function in the sandbox, retrying internal errors.

    `stage` moves the network's status and progress bar with the job's reports;
    `on_report` is called with every report (to store a phase the job has finished).
    Returns the function's value. Raises JobRejected when the upload is at fault,
    JobFailed when attempts run out, JobCancelled when an admin cancelled it.
    """
    try:
        return _job_attempts(job, target, kwargs, limits or sandbox_limits(),
                             _progress_writer(job, network, stage, on_report))
    except (JobRejected, JobFailed, JobCancelled):
        raise
    except Exception as exc:
        # A fault on this side (storing a finished phase, the database): the child is
        # already killed; end the job so neither it nor its network stays 'running'.
        log.exception("job %s: internal error in the worker", job.pk)
        job.refresh_from_db()
        job_finish(job=job, state=Job.State.FAILED, line=f"internal error in the worker: {exc!r}")
        raise JobFailed(f"internal error while running {job.kind}: {type(exc).__name__}") from exc
    finally:
        spare_prepare()  # for the next job, while this process does other things


def _job_attempts(
    job: Job, target: str, kwargs: dict[str, Any], limits: SandboxLimits,
    write_progress: Callable[[float, str], None],
) -> Any:
    while True:
        job.refresh_from_db()
        if job.state == Job.State.CANCELLED:
            raise JobCancelled(f"job {job.pk} was cancelled")
        if job.attempts >= settings.JOB_MAX_ATTEMPTS:
            job_finish(job=job, state=Job.State.FAILED, line="giving up: no attempts left")
            raise JobFailed(f"{job.kind} failed after {job.attempts} attempts")
        job.attempts += 1
        job.state = Job.State.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.heartbeat_at = timezone.now()
        job.worker = worker_id()
        spare = _spare_take(limits)
        warm = " (warm child)" if spare is not None and spare.ready() else ""
        job.append_log(f"attempt {job.attempts} on {job.worker}{warm}: {target}")
        job.save()
        workdir = spare.workdir if spare is not None else storage.job_workdir(job.pk)
        try:
            result: SandboxResult = run_in_sandbox(
                target,
                kwargs,
                workdir=workdir,
                limits=limits,
                on_progress=write_progress,
                spare=spare,
            )
        finally:
            storage.remove_tree(workdir)
        job.refresh_from_db()
        job.peak_rss_mb = max(job.peak_rss_mb or 0.0, result.peak_rss_mb)
        job.append_log(f"{result.outcome} in {result.seconds:.1f} s, peak {result.peak_rss_mb:.0f} MB")
        if job.state == Job.State.CANCELLED:
            job.save()
            raise JobCancelled(f"job {job.pk} was cancelled")
        if result.ok:
            job_finish(job=job, state=Job.State.DONE)
            return result.value
        job.append_log(result.message)
        if result.log:
            job.append_log(result.log[-4000:])
        if result.outcome in UPLOAD_FAULTS:
            job_finish(job=job, state=Job.State.DONE, line="rejected: " + result.message)
            raise JobRejected(result.message)
        job.save()
        log.warning("job %s attempt %s: %s", job.pk, job.attempts, result.message)
