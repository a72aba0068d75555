"""A network's column of the matrix: the other networks on its adversarial set.

An uploaded peer runs in its own sandbox child with only its own (verified) model and
the adversarial sets it has not met yet, so an upload never shares a process with
another user's model. The references are the suite's own code with verified files:
they are trusted and share one child per column (one TensorFlow import instead of one
per reference, which is what keeps upload → ranked near its cost before isolation).
A peer's time limit comes from its own measured pass over the eval split
(PEER_TIMEOUT_FACTOR × that per set + PEER_TIMEOUT_MARGIN_S for the import and load).
A peer that fails or overruns is charged to the peer: the cell is recorded as a
PeerFailure, the peer is flagged, left out of the matrix and re-validated, and the
network being evaluated is ranked without it.
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
from evaluator.services import lifecycle, results, spares, storage
from evaluator.services.jobs import (
    Inputs,
    JobCancelled,
    JobFailed,
    JobRejected,
    JobSuperseded,
    Stage,
    job_run,
)
from evaluator.services.sandboxing import sandbox_limits
from leaderboard.models import Network

log = logging.getLogger(__name__)

S = Network.Status
CROSS_START, CROSS_END = 70, 98  # the network's progress bar while its column fills


def matrix_peers(network: Network) -> list[Network]:
    """Networks of the same benchmark whose attack exists (candidates for pairs)."""
    return list(
        Network.objects.filter(benchmark=network.benchmark, adversarial__isnull=False)
        .exclude(pk=network.pk)
        .exclude(status__in=[S.REJECTED, S.FAILED])
        .exclude(peer_failures__resolved=False)
        .select_related("adversarial")
        .distinct()
    )


def matrix_missing(network: Network, peers_now: list[Network]) -> tuple[list[Network], list[Network]]:
    """(peers whose set this network has not been evaluated on, peers not yet evaluated
    on this network's set)."""
    have_row = set(Evaluation.objects.filter(network=network, source__in=peers_now).values_list("source_id", flat=True))
    have_col = set(Evaluation.objects.filter(source=network, network__in=peers_now).values_list("network_id", flat=True))
    return [p for p in peers_now if p.pk not in have_row], [p for p in peers_now if p.pk not in have_col]


def peer_timeout(peer: Network, passes: int = 1) -> float:
    """How long `passes` passes of `peer` over adversarial sets may take."""
    measured = (peer.info or {}).get("eval_seconds")
    if not measured:
        return float(settings.SANDBOX_TIMEOUT_S)
    limit = settings.PEER_TIMEOUT_FACTOR * float(measured) * passes + settings.PEER_TIMEOUT_MARGIN_S
    return min(float(settings.SANDBOX_TIMEOUT_S), limit)


def _sources(network: Network, peer: Network) -> list[Network]:
    """The sets an uploaded peer's child classifies: `network`'s, and every other live
    set it has not met yet (concurrent uploads then find their cell done), so each
    uploaded model starts once per round instead of once per new set."""
    waiting, _ = matrix_missing(peer, matrix_peers(peer))
    return [network] + [n for n in waiting if n.pk != network.pk]


def _cells(network: Network, group: list[Network], sources: list[Network], stage: Stage | None) -> None:
    """Every network of `group` on every set of `sources`, in one child; raises what
    job_run raises. Several networks share a child only when all are references."""
    if len(group) > 1 and not all(peer.is_reference for peer in group):
        raise ValueError("untrusted models never share a child")
    inputs = Inputs()
    kwargs = {
        "models": [{"key": p.pk, "name": p.name, "info": p.info, "model_dir": inputs.model(f"model-{p.pk}", p)}
                   for p in group],
        "sets": [{"key": n.pk, "name": n.name,
                  "adversarial": inputs.file(f"adv-{n.pk}.npz", storage.media_path(n.adversarial.file))}
                 for n in sources],
        "out": isolation.output_path("predictions.npz"),
    }
    timeout = sum(peer_timeout(p, len(sources)) for p in group)
    limits = dataclasses.replace(sandbox_limits(trusted=all(p.is_reference for p in group)),
                                 timeout_s=min(float(settings.SANDBOX_TIMEOUT_S), timeout))
    # The references' cells are this network's work; an upload's cells are that upload's.
    owner = network if group[0].is_reference else group[0]
    # A job of its own, never a live one of the same peer: two uploads evaluated at once
    # both need the peer (on different sets), and sharing one Job row would make one of
    # them the loser of an attempt it never competed for.
    job = Job.objects.create(kind=Job.Kind.CROSS, benchmark=network.benchmark, network=owner)
    out_dir = storage.network_dir(owner.pk) / f"cells-{network.pk}-{job.pk}"
    job.append_log(f"{', '.join(p.name for p in group)} on the adversarial set of "
                   + ", ".join(f"{n.name} (network {n.pk})" for n in sources))
    job.save(update_fields=["log"])
    value = job_run(job=job, target=engine_jobs.classify, kwargs=kwargs, inputs=inputs, out_dir=out_dir,
                    network=network, stage=stage, limits=limits)
    bench = network.benchmark
    labels = storage.eval_labels(bench.data_file)
    with np.load(out_dir / "predictions.npz") as data:
        for peer in group:
            for source in sources:
                results.evaluation_save(
                    network=peer, kind=Evaluation.Kind.ADVERSARIAL, source=source,
                    predictions=data[f"{peer.pk}__{source.pk}"], labels=labels, num_classes=bench.num_classes,
                    seconds=float(value["seconds"].get(str(peer.pk), 0.0)),
                )
    storage.remove_tree(out_dir)


def columns_evaluate(*, network: Network, peers_todo: list[Network], progress: bool = True) -> None:
    """Each peer on adv(network); failures are charged to the peer, not raised.

    The references go first, together; each uploaded peer then alone. JobUnavailable
    (no sandbox here) propagates: nothing can run, the network waits. `progress`:
    move the network's status and bar through its cross-evaluating share (False once
    it is ranked: pipeline.network_meet_peers).
    """
    trusted = [p for p in peers_todo if p.is_reference]
    groups = ([trusted] if trusted else []) + [[p] for p in peers_todo if not p.is_reference]
    # Their TensorFlow imports overlap the first groups (in a worker with spares on).
    spares.spares_ahead(min(len(groups) - 1, settings.SANDBOX_SPARES_AHEAD))
    try:
        for index, group in enumerate(groups):
            low = CROSS_START + (CROSS_END - CROSS_START) * index // len(groups)
            high = CROSS_START + (CROSS_END - CROSS_START) * (index + 1) // len(groups)
            _group(network, group, Stage(S.CROSS_EVALUATING, low, high) if progress else None)
    finally:
        spares.spares_trim()


def _group(network: Network, group: list[Network], stage: Stage | None) -> None:
    try:
        _cells(network, group, [network] if group[0].is_reference else _sources(network, group[0]), stage)
    except JobSuperseded:
        raise  # this network was rerun or deleted: no peer is at fault
    except (JobRejected, JobFailed, JobCancelled) as exc:
        if not Network.objects.filter(pk=network.pk, run=network.run).exists():
            # Its set went with a rerun or a deletion while the peer read it: no peer is at fault.
            raise JobSuperseded(f"network {network.pk} was deleted or restarted") from exc
        if len(group) == 1:
            peer_charge(peer=group[0], source=network, exc=exc)
            return
        if isinstance(exc, JobCancelled):
            raise  # the references' job belongs to this network: it was cancelled
        # A reference failing is not expected: find which one, each in its own child.
        log.error("references on the set of network %s failed together (%s); retrying one by one", network.pk, exc)
        for peer in group:
            _group(network, [peer], stage)


def peer_charge(*, peer: Network, source: Network, exc: Exception) -> PeerFailure:
    """Record the failed cell, flag the peer, and queue it for re-validation."""
    outcome = {JobRejected: "rejected", JobCancelled: "cancelled"}.get(type(exc), "failed")
    log.warning("network %s (%s) failed on the set of network %s: %s", peer.pk, peer.name, source.pk, exc)
    with transaction.atomic():
        failure = PeerFailure.objects.create(network=peer, source=source, outcome=outcome, reason=str(exc)[:5000])
        # Its clean evaluation is taken again: re-validation from scratch.
        Evaluation.objects.filter(network=peer, source__isnull=True).delete()
        peer.refresh_from_db()
        results.summary_refresh(peer)
        lifecycle.network_requeue(
            network=peer, stage="queued for re-validation",
            reason=f"re-validating: it failed a later evaluation (on the adversarial set of {source.name}): {exc}",
        )
    return failure


def failures_resolve(*, network: Network) -> int:
    """The network's own pipeline went through again: its failed cells are behind it
    (its flag stays, the failures stay on record for staff)."""
    return PeerFailure.objects.filter(network=network, resolved=False).update(resolved=True)
