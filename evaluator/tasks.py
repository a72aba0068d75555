"""Celery tasks: thin wrappers that fetch by id and call the service they are named after.

A network is evaluated by one task (validate + attack + its row + the references'
column, see evaluator.services.pipeline), which queues the ranking only after its
writes are committed, so the ranking never misses them; then, behind the ranking, the
analysis and (for an upload) the earlier uploads on its set, which re-ranks. Every stage is idempotent, which is
what makes acks_late and redelivery after a lost worker safe. Services queue these
through evaluator.services.lifecycle, by the names registered here; nothing imports
this module but Celery's autodiscovery (the arrow runs tasks → services only).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from evaluator.services import lifecycle, pipeline
from evaluator.services.benchmarks import reference_rebuild as reference_rebuild_service
from evaluator.services.ranking import benchmark_rank as benchmark_rank_service
from leaderboard.models import Benchmark, Network

log = logging.getLogger(__name__)
S = Network.Status


@shared_task(name=lifecycle.TASK_NETWORK_EVALUATE)
def network_evaluate(network_id: int) -> None:
    network = Network.objects.select_related("benchmark").filter(pk=network_id).first()
    if network is None or network.status in (S.REJECTED, S.FAILED):
        log.info("network %s: deleted or finished, nothing to evaluate", network_id)
        return
    try:
        done = pipeline.network_evaluate(network=network)
    except SoftTimeLimitExceeded:
        # A long column (many uploads) outlasted one task: what is stored stays, and a
        # fresh task resumes from there. Each task stores work, so this ends.
        log.warning("network %s (%s): task time limit reached; resuming in a new task", network_id, network.name)
        lifecycle.pipeline_enqueue(network)
        return
    after = Network.objects.filter(pk=network_id).values("status", "reason").first()
    # The worker's log names the network and how it ended (not just "task succeeded").
    if after is None:
        log.info("network %s (%s): deleted while it was evaluated", network_id, network.name)
    else:
        log.info("network %s (%s): %s%s", network_id, network.name, after["status"],
                 "" if done else f" ({after['reason'][:200]})")
    if done:
        lifecycle.ranking_enqueue(network.benchmark_id)
        lifecycle.analysis_enqueue(network_id)
        if not network.is_reference:  # a reference's whole column is on its path
            lifecycle.meet_peers_enqueue(network_id)


@shared_task(name=lifecycle.TASK_BENCHMARK_RANK)
def benchmark_rank(benchmark_id: int) -> None:
    benchmark = Benchmark.objects.filter(pk=benchmark_id).first()
    if benchmark is not None:
        benchmark_rank_service(benchmark=benchmark)


@shared_task(name=lifecycle.TASK_REFERENCE_REBUILD)
def reference_rebuild(benchmark_id: int, recipe: str) -> None:
    benchmark = Benchmark.objects.filter(pk=benchmark_id).first()
    if benchmark is not None:
        reference_rebuild_service(benchmark=benchmark, recipe=recipe)


@shared_task(name=lifecycle.TASK_NETWORK_ANALYSE)
def network_analyse(network_id: int) -> None:
    network = Network.objects.select_related("benchmark").filter(pk=network_id).first()
    if network is not None and network.status not in (S.REJECTED, S.FAILED):
        pipeline.network_analyse_after_ranking(network=network)


@shared_task(name=lifecycle.TASK_NETWORK_MEET_PEERS)
def network_meet_peers(network_id: int) -> None:
    network = Network.objects.select_related("benchmark").filter(pk=network_id).first()
    if network is None:
        return
    try:
        met = pipeline.network_meet_peers(network=network)
    except SoftTimeLimitExceeded:
        # Many uploads on one set outlasted one task: the cells stored stay, a fresh task goes on.
        log.warning("network %s: task time limit reached meeting its peers; resuming", network_id)
        lifecycle.meet_peers_enqueue(network_id)
        return
    if met:
        log.info("network %s (%s): %d uploaded peers evaluated on its set", network_id, network.name, met)
        lifecycle.ranking_enqueue(network.benchmark_id)
