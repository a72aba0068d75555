"""Finding work that a vanished worker left behind, and queueing it again.

A worker killed mid-job (OOM killer, kill -9, a lost machine) leaves its Job
`running` forever, and with the filesystem broker the message is gone too. The
reaper runs when a worker starts and from `manage.py reap` (cron): a running job
whose worker process is dead (same host) or whose heartbeat is stale (other hosts)
is marked back to queued, and its network's pipeline is queued again. Stages are
idempotent, so the pipeline resumes where results stop.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from evaluator.models import Evaluation, Job
from evaluator.services import lifecycle
from evaluator.services.peers import matrix_peers
from leaderboard.models import Network

log = logging.getLogger(__name__)

# The worker writes a running job's heartbeat every second (services.jobs HEARTBEAT_EVERY_S),
# whatever its child reports: two minutes of silence means the worker is gone.
STALE_AFTER = timedelta(minutes=2)
# A network whose status says running but which has no live job and has not moved.
IDLE_AFTER = timedelta(minutes=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker whose parent never reaps it stays a zombie: signalable, yet dead.
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return True  # no /proc here: the signal's answer is all there is
    return stat.rpartition(")")[2].split()[0] != "Z"


def _orphaned(job: Job, now) -> bool:
    host, _, pid = job.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _pid_alive(int(pid))
    return job.heartbeat_at is None or now - job.heartbeat_at > STALE_AFTER


def jobs_reap(*, idle_after: timedelta = IDLE_AFTER) -> list[int]:
    """Requeue orphaned jobs and stalled networks; returns the network ids queued."""
    now = timezone.now()
    requeue: set[int] = set()
    with transaction.atomic():
        for job in Job.objects.select_for_update().filter(state=Job.State.RUNNING):
            if _orphaned(job, now):
                if job.kind == Job.Kind.CROSS:
                    # Column cells get a new job each time (services.peers): the network's
                    # pipeline, queued again below, computes the missing cells anew.
                    job.state = Job.State.FAILED
                    job.append_log(f"worker {job.worker} vanished; the cells are computed again")
                else:
                    job.state = Job.State.QUEUED
                    job.append_log(f"worker {job.worker} vanished; requeued")
                job.save(update_fields=["state", "log"])
                if job.network_id:
                    requeue.add(job.network_id)
        busy = set(
            Job.objects.filter(state__in=[Job.State.QUEUED, Job.State.RUNNING], network__isnull=False)
            .exclude(network_id__in=requeue)
            .values_list("network_id", flat=True)
        )
        stalled = (
            Network.objects.filter(status__in=Network.RUNNING, updated_at__lt=now - idle_after)
            .exclude(pk__in=busy)
            .exclude(archive="")
            .values_list("pk", flat=True)
        )
        requeue.update(stalled)
        for network in Network.objects.filter(pk__in=requeue):
            lifecycle.pipeline_enqueue(network)
        behind = _columns_behind(now - idle_after)
        for network_id in behind:
            lifecycle.meet_peers_enqueue(network_id)
    if requeue:
        log.warning("reaper requeued networks %s", sorted(requeue))
    if behind:
        log.warning("reaper queued the uploaded peers of networks %s on their sets again", behind)
    return sorted(requeue)


def _columns_behind(ranked_before) -> list[int]:
    """Ranked uploads whose column still lacks a live peer: the follow-up that meets the
    uploaded peers (pipeline.network_meet_peers) comes after the ranking, so a message
    lost with the broker would otherwise leave those cells missing for good."""
    behind: list[int] = []
    candidates = Network.objects.filter(status=Network.Status.RANKED, is_reference=False,
                                        adversarial__isnull=False, ranked_at__lt=ranked_before)
    for benchmark_id in candidates.order_by().values_list("benchmark_id", flat=True).distinct():
        ranked = candidates.filter(benchmark_id=benchmark_id).first()
        members = {ranked.pk} | {p.pk for p in matrix_peers(ranked)}
        have = dict(
            Evaluation.objects.filter(source__in=candidates.filter(benchmark_id=benchmark_id), network__in=members)
            .values("source").annotate(n=Count("id")).values_list("source", "n")
        )
        behind += [pk for pk in candidates.filter(benchmark_id=benchmark_id, pk__in=members).values_list("pk", flat=True)
                   if have.get(pk, 0) < len(members) - 1]
    return sorted(behind)
