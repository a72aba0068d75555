"""Recording how long stages take on this deployment (issue 14: time left from history).

Writes only; the estimates are read by leaderboard.progress_selectors. Two sources:

- A network's statuses: evaluator.services.lifecycle, the one writer of statuses, asks
  here what `status_since` becomes and records the stage the network leaves
  (`status_left`). Only a stage that ends by moving on counts: a failure, a cancel, a
  retry that starts its phase again or a wait for the sandbox says nothing about how
  long the stage takes. A reference's queue is not timed: in a build it waits there
  while every other reference trains.
- A build's steps: evaluator.services.benchmarks records each reference's training,
  the universal set and each reference's pipeline once it actually ran (a resumed build
  that finds them stored records nothing), and marks the step it is in
  (`benchmark_step`) for the banner and the time left.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.utils import timezone

from evaluator.models import StageDuration
from leaderboard.models import Benchmark, Network

S = Network.Status
RUNNING = frozenset(Network.RUNNING)
# A network's way through its pipeline; a move to a later one ends the stage it left.
ORDER = (S.QUEUED, S.VALIDATING, S.EVALUATING, S.ATTACKING, S.CROSS_EVALUATING, S.RANKED)

# A build's timed steps (StageDuration.stage), per reference or per build.
BUILD_TRAINING = "build:training"
BUILD_UNIVERSAL = "build:universal"
BUILD_REFERENCE = "build:reference"
# Benchmark.build_step["step"] values and the StageDuration they are timed by.
BUILD_STEPS = {"training": BUILD_TRAINING, "universal": BUILD_UNIVERSAL, "reference": BUILD_REFERENCE}


def status_since_next(*, was: str, since: datetime | None, to: str, restart: bool, now: datetime) -> datetime | None:
    """What Network.status_since becomes when a network moves from `was` to `to`.

    A ranked network that goes back into its pipeline without a new run (its universal
    accuracy re-measured after a control rebuild, a new peer's cells) does only what
    changed: that run is not a full stage and stays untimed (None) until it ends.
    """
    if restart or to not in RUNNING:
        return now
    if was == S.RANKED or (was in RUNNING and since is None):
        return None
    return now


def status_left(
    *, network_id: int, benchmark_id: int, is_reference: bool, was: str, since: datetime | None, to: str,
    now: datetime,
) -> StageDuration | None:
    """Record the stage `was` as done when the network moved on from it to a later one."""
    if since is None or was not in RUNNING or to not in ORDER or ORDER.index(to) <= ORDER.index(was):
        return None
    if is_reference and was == S.QUEUED:
        return None
    return stage_duration_record(benchmark_id=benchmark_id, network_id=network_id, is_reference=is_reference,
                                 stage=was, seconds=(now - since).total_seconds(), now=now)


def stage_duration_record(
    *, benchmark_id: int, network_id: int | None, is_reference: bool, stage: str, seconds: float,
    now: datetime | None = None,
) -> StageDuration:
    return StageDuration.objects.create(
        benchmark_id=benchmark_id, network_id=network_id, is_reference=is_reference, stage=stage,
        seconds=max(0.0, float(seconds)), finished_at=now or timezone.now(),
    )


def build_step_timed(*, network: Network, stage: str, started: float) -> None:
    """A build step that ran for this reference (not one found stored) took this long
    here, since `started` (time.perf_counter())."""
    stage_duration_record(benchmark_id=network.benchmark_id, network_id=network.pk, is_reference=True, stage=stage,
                          seconds=time.perf_counter() - started)


def benchmark_step(*, benchmark: Benchmark, step: str, reference: str | None = None,
                   plan: dict[str, Any] | None = None, until: int | None = None) -> None:
    """The build's current step, from now on, kept with the build's plan.

    plan: a new build's {"recipes": its references, "reevaluate": networks a control
    rebuild re-measures afterwards}; None keeps the current build's.
    until: where the build's percent stands when this step ends, so a page can move the
    bar within a reference's pipeline by that reference's own (monotonic) progress.
    """
    if plan is None:
        plan = Benchmark.objects.filter(pk=benchmark.pk).values_list("build_step", flat=True).first() or {}
    plan = {**plan, "step": step, "reference": reference, "until": until}
    Benchmark.objects.filter(pk=benchmark.pk).update(build_step=plan, stage_since=timezone.now())
