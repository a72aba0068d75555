"""Reads of the evaluator app for tools outside the request path (bench/, tests): where a
job's time went and where a stored model lives, without reading logs or tables by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from evaluator.models import Job
from evaluator.services import storage
from leaderboard.models import Network


@dataclass(frozen=True)
class JobTimings:
    """One job's timings: wall clock from the Job row, the sandbox child's own seconds
    and peak memory (its last attempt) and, for an evaluate job, each phase's seconds."""

    job_id: int
    kind: str
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None  # started → finished, bookkeeping outside the child included
    sandbox_seconds: float | None
    sandbox_peak_mb: float | None
    warm: bool  # the last attempt ran in a spare child that had imported TensorFlow already
    phases: dict[str, float] = field(default_factory=dict)


def job_timings(*, job: Job) -> JobTimings:
    sandbox = job.timings.get("sandbox", {})
    return JobTimings(
        job_id=job.pk, kind=job.kind, started_at=job.started_at, finished_at=job.finished_at, seconds=job.seconds,
        sandbox_seconds=sandbox.get("seconds"), sandbox_peak_mb=sandbox.get("peak_mb"),
        warm=bool(sandbox.get("warm", False)), phases=dict(job.timings.get("phases", {})),
    )


def network_job_timings(*, network: Network, kind: str = Job.Kind.EVALUATE) -> list[JobTimings]:
    """The network's finished jobs of one kind, oldest first (an upload has one evaluate
    job; a cross-evaluation round adds another)."""
    jobs = Job.objects.filter(network=network, kind=kind, state=Job.State.DONE).order_by("created_at", "pk")
    return [job_timings(job=job) for job in jobs]


def reference_model_dir(*, benchmark: str, recipe: str) -> Path:
    """The extracted SavedModel folder of a benchmark's reference (e.g. its control)."""
    network = Network.objects.filter(benchmark__name=benchmark, is_reference=True, recipe=recipe).first()
    if network is None or "model_dir" not in network.info:
        raise LookupError(f"benchmark {benchmark!r} has no built {recipe!r} reference")
    return storage.media_path(network.info["model_dir"])
