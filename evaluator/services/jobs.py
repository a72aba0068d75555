"""Running engine work as recorded, sandboxed jobs.

A Job row is the durable record of one unit of work: its attempts, log, timings
and peak memory. The engine runs in a child process (engine.sandbox) so a hostile
or broken model can crash, hang or blow up memory without taking the worker down.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evaluator.engine import isolation
from evaluator.engine.sandbox import (
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    Target,
    run_in_sandbox,
    target_name,
)
from evaluator.models import Job
from evaluator.services import lifecycle, spares, storage
from evaluator.services.errors import (  # noqa: F401  (re-exported: the pipeline's vocabulary)
    MODEL_CHANGED,
    JobCancelled,
    JobFailed,
    JobRejected,
    JobSuperseded,
    JobUnavailable,
)
from evaluator.services.sandboxing import sandbox_limits
from leaderboard.models import Benchmark, Network

log = logging.getLogger(__name__)

# Outcomes that mean the upload itself is at fault: its own exception, or it broke
# a resource limit that every network must respect.
UPLOAD_FAULTS = ("rejected", "timeout", "memory")
# How often the worker marks a running job alive (Job.heartbeat_at; the reaper's
# evidence on another host) and checks it was not cancelled or taken over.
HEARTBEAT_EVERY_S = 1.0

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
    network: Network | None,
    stage: Stage | Phases | None,
    on_report: Callable[[], None] | None,
) -> Callable[[float, str], None]:
    last = {"at": 0.0, "status": ""}

    def write(fraction: float, text: str) -> None:
        if on_report is not None:
            on_report()  # every report, not throttled: it stores finished phases
        if network is None or stage is None:
            return
        status, percent = stage.at(fraction)
        now = time.monotonic()
        # At most one write a second, but a change of status is never held back.
        if now - last["at"] < 1.0 and fraction < 1.0 and status == last["status"]:
            return
        last.update(at=now, status=status)
        # Only while it is still running and in this run: never over a cancel's
        # 'failed', and a rerun's job never hears from the run before it.
        lifecycle.network_progress(network=network, status=status, progress=percent, stage=text)

    return write


def _heartbeat(job: Job, worker: str, attempt: int) -> Callable[[], None]:
    """The parent's liveness signal, every HEARTBEAT_EVERY_S while the child runs,
    whatever the child reports (a long silent phase is not a dead worker). It is
    also where a cancel (or a newer attempt by another worker) stops the child."""
    last = {"at": 0.0}

    def beat() -> None:
        now = time.monotonic()
        if now - last["at"] < HEARTBEAT_EVERY_S:
            return
        last["at"] = now
        mine = Job.objects.filter(pk=job.pk, worker=worker, attempts=attempt)
        if mine.exclude(state=Job.State.CANCELLED).update(heartbeat_at=timezone.now()):
            return
        if mine.filter(state=Job.State.CANCELLED).exists() or not Job.objects.filter(pk=job.pk).exists():
            raise JobCancelled(f"job {job.pk} was cancelled")
        raise JobSuperseded(f"job {job.pk} was taken over by a newer attempt")

    return beat


@dataclass(frozen=True)
class Inputs:
    """What a job's child gets read-only under `in/` (engine.isolation.input_path), and
    which folders are models to verify against their accepted hashes."""

    files: dict[str, Path] = dataclasses.field(default_factory=dict)
    manifests: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def model(self, name: str, network: Network) -> str:
        """Add `network`'s stored model (verified); returns the child's path to it."""
        self.files[name] = storage.media_path(network.info["model_dir"])
        self.manifests[name] = dict(network.model_files)
        return isolation.input_path(name)

    def file(self, name: str, path: Path) -> str:
        self.files[name] = Path(path)
        return isolation.input_path(name)


def job_run(
    *,
    job: Job,
    target: Target,
    kwargs: dict[str, Any],
    inputs: Inputs | None = None,
    out_dir: Path | None = None,
    network: Network | None = None,
    stage: Stage | Phases | None = None,
    limits: SandboxLimits | None = None,
    on_report: Callable[[Path], None] | None = None,
) -> Any:
    """Run one engine function in the sandbox, retrying internal errors.

    The child reads `inputs` under `in/` and writes its results under `out/`, which
    becomes `out_dir` when it succeeds. `stage` moves the network's status and progress
    bar with the job's reports; `on_report(out)` is called with every report and the
    live output folder (to store a phase the job has finished). Returns the function's
    value. Raises JobRejected when the upload is at fault, JobFailed when attempts run
    out or a stored model changed, JobCancelled when an admin cancelled it, and
    JobUnavailable when the isolation it needs is missing.
    """
    limits = limits or sandbox_limits()
    try:
        return _job_attempts(job, target_name(target), kwargs, limits, inputs or Inputs(), out_dir,
                             network, stage, on_report)
    except (JobRejected, JobFailed, JobCancelled):  # JobSuperseded too
        raise
    except SoftTimeLimitExceeded:
        # Celery's task limit (evaluator.tasks resumes in a new task): the child is
        # killed already; the job goes back to the queue for the next attempt.
        job.refresh_from_db()
        job_finish(job=job, state=Job.State.QUEUED, line="task time limit reached; resumed by a new task")
        raise
    except SandboxUnavailable as exc:
        job.refresh_from_db()
        job_finish(job=job, state=Job.State.QUEUED, line=str(exc))
        raise JobUnavailable(str(exc)) from exc
    except isolation.IntegrityError as exc:
        log.error("job %s: %s", job.pk, exc)
        job.refresh_from_db()
        job_finish(job=job, state=Job.State.FAILED, line=f"{exc} (the job was not started)")
        raise JobFailed(MODEL_CHANGED) from exc
    except Exception as exc:
        # A fault on this side (storing a finished phase, the database): the child is
        # already killed; end the job so neither it nor its network stays 'running'.
        log.exception("job %s: internal error in the worker", job.pk)
        job.refresh_from_db()
        job_finish(job=job, state=Job.State.FAILED, line=f"internal error in the worker: {exc!r}")
        raise JobFailed(f"internal error while running {job.kind}: {type(exc).__name__}") from exc
    finally:
        spares.spare_prepare()  # for the next job, while this process does other things


def _job_attempts(
    job: Job, target: str, kwargs: dict[str, Any], limits: SandboxLimits, inputs: Inputs,
    out_dir: Path | None, network: Network | None, stage: Stage | Phases | None,
    on_report: Callable[[Path], None] | None,
) -> Any:
    while True:
        job.refresh_from_db()
        if job.state == Job.State.CANCELLED:
            raise JobCancelled(f"job {job.pk} was cancelled")
        if job.attempts >= settings.JOB_MAX_ATTEMPTS:
            job_finish(job=job, state=Job.State.FAILED, line="giving up: no attempts left")
            raise JobFailed(f"{job.kind} failed after {job.attempts} attempts")
        attempt, worker = job.attempts + 1, worker_id()
        # The claim is conditional on the attempt count this process read: of two
        # workers racing on one job, one gets the attempt, the other stops here.
        claimed = Job.objects.filter(pk=job.pk, attempts=job.attempts).exclude(state=Job.State.CANCELLED).update(
            attempts=attempt, state=Job.State.RUNNING, worker=worker, heartbeat_at=timezone.now(),
            started_at=job.started_at or timezone.now(),
        )
        if not claimed:
            raise JobSuperseded(f"job {job.pk} was taken by another worker")
        job.refresh_from_db()
        spare = spares.spare_take(limits)
        # Start the next job's child now: its TensorFlow import overlaps this job's work
        # (an upload's column is one short job per peer, back to back).
        spares.spare_prepare()
        warm = " (warm child)" if spare is not None and spare.ready() else ""
        job.append_log(f"attempt {job.attempts} on {job.worker}{warm}: {target}")
        job.save(update_fields=["log"])
        workdir = spare.workdir if spare is not None else storage.job_workdir(job.pk)
        live_out = workdir / isolation.OUTPUTS
        report = None if on_report is None else (lambda: on_report(live_out))
        try:
            result: SandboxResult = run_in_sandbox(
                target,
                kwargs,
                workdir=workdir,
                limits=limits,
                on_progress=_progress_writer(network, stage, report),
                on_tick=_heartbeat(job, job.worker, job.attempts),
                spare=spare,
                inputs=inputs.files,
                manifests=inputs.manifests,
            )
            if result.ok and out_dir is not None:
                storage.remove_tree(out_dir)
                out_dir.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(live_out, out_dir)
        finally:
            if spare is not None and spare.alive():
                spare.discard()  # inputs failed to stage: it never got its request
            storage.remove_tree(workdir)
        job.refresh_from_db()
        if (job.worker, job.attempts) != (worker, attempt):
            raise JobSuperseded(f"job {job.pk} was taken over by a newer attempt")
        job.peak_rss_mb = max(job.peak_rss_mb or 0.0, result.peak_rss_mb)
        job.append_log(f"{result.outcome} in {result.seconds:.1f} s, peak {result.peak_rss_mb:.0f} MB")
        # The same as numbers (the last attempt's), for what reads them: evaluator.selectors.
        job.timings = {**job.timings, "sandbox": {"seconds": result.seconds, "peak_mb": result.peak_rss_mb,
                                                  "outcome": result.outcome, "warm": bool(warm)}}
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
