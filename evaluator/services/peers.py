"""A network's column of the matrix: each existing peer, alone, on its adversarial set.

Every peer runs in its own sandbox child with only its own (verified) model and the
one adversarial set, so an upload never shares a process with another user's model.
A peer's time limit comes from its own measured pass over the eval split
(PEER_TIMEOUT_FACTOR × that + PEER_TIMEOUT_MARGIN_S for the import and load). A peer
that fails or overruns is charged to the peer: the cell is recorded as a PeerFailure,
the peer is flagged, left out of the matrix and re-validated, and the network being
evaluated is ranked without it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from django.conf import settings
from django.db import transaction

from evaluator.engine import isolation
from evaluator.engine import jobs as engine_jobs
from evaluator.models import Evaluation, Job, PeerFailure
from evaluator.services import jobs, results, storage
from evaluator.services.jobs import (
    Inputs,
    JobCancelled,
    JobFailed,
    JobRejected,
    job_open,
    job_run,
    sandbox_limits,
)
from leaderboard.models import Network

log = logging.getLogger(__name__)

S = Network.Status
CROSS_START, CROSS_END = 70, 98  # the network's progress bar while its column fills


def peer_timeout(peer: Network) -> float:
    """How long one pass of `peer` over an adversarial set may take."""
    measured = (peer.info or {}).get("eval_seconds")
    if not measured:
        return float(settings.SANDBOX_TIMEOUT_S)
    limit = settings.PEER_TIMEOUT_FACTOR * float(measured) + settings.PEER_TIMEOUT_MARGIN_S
    return min(float(settings.SANDBOX_TIMEOUT_S), limit)


def _column_cell(network: Network, peer: Network) -> None:
    """`peer` on adv(`network`), in the peer's own child; raises what job_run raises."""
    inputs = Inputs()
    kwargs = {
        "model_dir": inputs.model("model", peer),
        "info": peer.info,
        "adversarial": inputs.file("adversarial.npz", storage.media_path(network.adversarial.file)),
        "out": isolation.output_path("predictions.npz"),
    }
    limits = dataclasses.replace(sandbox_limits(trusted=peer.is_reference), timeout_s=peer_timeout(peer))
    out_dir = storage.network_dir(peer.pk) / f"cell-{network.pk}"
    job = job_open(kind=Job.Kind.CROSS, benchmark=network.benchmark, network=peer)
    job.append_log(f"{peer.name} on the adversarial set of {network.name} (network {network.pk})")
    job.save(update_fields=["log"])
    value = job_run(job=job, target=engine_jobs.classify, kwargs=kwargs, inputs=inputs, out_dir=out_dir, limits=limits)
    bench = network.benchmark
    with np.load(out_dir / "predictions.npz") as data:
        predictions = data["predictions"]
    storage.remove_tree(out_dir)
    results.evaluation_save(
        network=peer, kind=Evaluation.Kind.ADVERSARIAL, source=network, predictions=predictions,
        labels=storage.eval_labels(bench.data_file), num_classes=bench.num_classes,
        seconds=float(value.get("seconds", 0.0)),
    )


def columns_evaluate(*, network: Network, peers_todo: list[Network]) -> None:
    """Each peer on adv(network); failures are charged to the peer, not raised.

    JobUnavailable (no sandbox here) propagates: nothing can run, the network waits.
    """
    # Their TensorFlow imports overlap the first cells (in a worker with spares on).
    jobs.spares_ahead(min(len(peers_todo) - 1, settings.SANDBOX_SPARES_AHEAD))
    try:
        _columns(network, peers_todo)
    finally:
        jobs.spares_trim()


def _columns(network: Network, peers_todo: list[Network]) -> None:
    for done, peer in enumerate(peers_todo):
        percent = CROSS_START + (CROSS_END - CROSS_START) * done // max(1, len(peers_todo))
        Network.objects.filter(pk=network.pk, status__in=Network.RUNNING).update(
            progress=percent, stage=f"{peer.name} on this network's attack ({done + 1}/{len(peers_todo)})"[:200]
        )
        try:
            _column_cell(network, peer)
        except (JobRejected, JobFailed, JobCancelled) as exc:
            peer_charge(peer=peer, source=network, exc=exc)


def peer_charge(*, peer: Network, source: Network, exc: Exception) -> PeerFailure:
    """Record the failed cell, flag the peer, and queue it for re-validation."""
    from evaluator.tasks import pipeline_enqueue

    outcome = {JobRejected: "rejected", JobCancelled: "cancelled"}.get(type(exc), "failed")
    log.warning("network %s (%s) failed on the set of network %s: %s", peer.pk, peer.name, source.pk, exc)
    with transaction.atomic():
        failure = PeerFailure.objects.create(network=peer, source=source, outcome=outcome, reason=str(exc)[:5000])
        # Its clean evaluation is taken again: re-validation from scratch.
        Evaluation.objects.filter(network=peer, source__isnull=True).delete()
        peer.refresh_from_db()
        peer.status, peer.progress, peer.stage = S.QUEUED, 0, "queued for re-validation"
        peer.reason = f"re-validating: it failed a later evaluation (on the adversarial set of {source.name}): {exc}"[:5000]
        peer.save(update_fields=["status", "progress", "stage", "reason", "updated_at"])
        results.summary_refresh(peer)
        pipeline_enqueue(peer)
    return failure


def failures_resolve(*, network: Network) -> int:
    """The network's own pipeline went through again: its failed cells are behind it
    (its flag stays, the failures stay on record for staff)."""
    return PeerFailure.objects.filter(network=network, resolved=False).update(resolved=True)
