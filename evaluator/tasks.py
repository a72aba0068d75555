"""Celery tasks: thin wrappers that fetch by id and call a service.

A network is evaluated by one task (validate + attack + cross in one sandbox job,
see evaluator.services.pipeline), which queues the ranking only after its writes are
committed, so the ranking never misses them. Every stage is idempotent, which is
what makes acks_late and redelivery after a lost worker safe.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction

from evaluator.services import pipeline
from evaluator.services.ranking import benchmark_rank
from leaderboard.models import Benchmark, Network

log = logging.getLogger(__name__)
S = Network.Status
FINISHED = (S.RANKED, S.REJECTED, S.FAILED)


def _network(network_id: int) -> Network | None:
    network = Network.objects.select_related("benchmark").filter(pk=network_id).first()
    if network is None or network.status in (S.REJECTED, S.FAILED):
        return None  # deleted, or given up on: nothing to do
    return network


def _send(task, *args: int | str) -> None:
    """Queue a task; a broker outage must not turn a saved upload into an HTTP 500.

    The network stays in its status and the reaper queues it again later.
    """
    try:
        task.delay(*args)
    except Exception:
        log.exception("could not queue %s%s; the reaper will retry", task.name, args)


def enqueue_on_commit(task, *args: int | str) -> None:
    transaction.on_commit(lambda: _send(task, *args))


@shared_task
def evaluate_network(network_id: int) -> None:
    network = _network(network_id)
    if network is not None and pipeline.network_evaluate(network=network):
        enqueue_on_commit(rank_benchmark, network.benchmark_id)


@shared_task
def rank_benchmark(benchmark_id: int) -> None:
    benchmark = Benchmark.objects.filter(pk=benchmark_id).first()
    if benchmark is not None:
        benchmark_rank(benchmark=benchmark)


def pipeline_enqueue(network: Network) -> None:
    """Start (or restart) a network's pipeline once the current transaction commits."""
    enqueue_on_commit(evaluate_network, network.pk)


@shared_task
def rebuild_reference(benchmark_id: int, recipe: str) -> None:
    from evaluator.services.benchmarks import reference_rebuild

    benchmark = Benchmark.objects.filter(pk=benchmark_id).first()
    if benchmark is not None:
        reference_rebuild(benchmark=benchmark, recipe=recipe)


@shared_task
def reap_jobs() -> list[int]:
    from evaluator.services.reaper import jobs_reap

    return jobs_reap()
