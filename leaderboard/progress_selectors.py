"""Where a running network or a benchmark's build stands, and the time it has left
(issue 14). The one definition the network page, the leaderboard, the JSON API, the
build console (`build_benchmark`) and `rank` all read: the durations recorded on this
deployment (evaluator.services.progress) go into the engine's arithmetic
(evaluator.engine.progress_eta), and its one wording comes back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from evaluator.engine.progress_eta import Estimate, Step, estimate_left
from evaluator.models import StageDuration, UniversalSet
from evaluator.services.progress import BUILD_REFERENCE, BUILD_STEPS, BUILD_TRAINING, BUILD_UNIVERSAL
from leaderboard.models import Benchmark, Network

S = Network.Status
# The stages of a network's pipeline, in order; a reference's queue is not timed (in a
# build it waits there while the other references train: evaluator.services.progress).
UPLOAD_STAGES = (S.QUEUED, S.VALIDATING, S.EVALUATING, S.ATTACKING, S.CROSS_EVALUATING)
REFERENCE_STAGES = UPLOAD_STAGES[1:]
# Only the latest durations count: the machine's load today, not last month's.
RECENT = 20
# Bounds the history read per request (a few stages x RECENT, with room to spare).
HISTORY_ROWS = 1000
BUILD_WORDS = {BUILD_TRAINING: "training", BUILD_UNIVERSAL: "universal perturbations",
               BUILD_REFERENCE: "evaluating and attacking"}
UNTIMED_RUN = "re-measuring what changed since it was ranked (not timed)"
UNTIMED_STEP = "this step is not timed"
REEVALUATE = "re-evaluating the ranked networks"
# The steps of a build (Benchmark.build_step["step"]) in the order they run.
BUILD_ORDER = ("dataset", "training", "universal", "reference", "re-evaluating", "ready")

History = dict[tuple[int, bool, str], tuple[float, ...]]


def stage_history(benchmark_ids: Iterable[int]) -> History:
    """(benchmark id, is reference, stage) → its latest recorded durations here: one query."""
    rows = (StageDuration.objects.filter(benchmark_id__in=set(benchmark_ids))
            .order_by("-finished_at", "-pk")
            .values_list("benchmark_id", "is_reference", "stage", "seconds")[:HISTORY_ROWS])
    found: dict[tuple[int, bool, str], list[float]] = defaultdict(list)
    for benchmark_id, is_reference, stage, seconds in rows:
        durations = found[(benchmark_id, is_reference, stage)]
        if len(durations) < RECENT:
            durations.append(seconds)
    return {key: tuple(values) for key, values in found.items()}


def _spent(since: datetime | None, now: datetime) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def _network_estimate(network: Network, history: History, now: datetime) -> Estimate:
    stages = REFERENCE_STAGES if network.is_reference else UPLOAD_STAGES
    steps = [Step(stage, history.get((network.benchmark_id, network.is_reference, stage), ())) for stage in stages]
    if network.status not in stages:  # a reference still waiting in its build
        return estimate_left(current=None, spent=0.0, later=steps, waiting=True)
    if network.status_since is None:
        return Estimate(seconds=None, reason=UNTIMED_RUN)
    i = stages.index(network.status)
    return estimate_left(current=steps[i], spent=_spent(network.status_since, now), later=steps[i + 1:])


def network_estimates(networks: Iterable[Network], *, now: datetime | None = None) -> dict[int, Estimate]:
    """The time left of every running network among `networks`: one query in all (none
    when nothing runs), so a board of any size costs the same."""
    running = [n for n in networks if n.status in Network.RUNNING]
    if not running:
        return {}
    history = stage_history(n.benchmark_id for n in running)
    now = now or timezone.now()
    return {n.pk: _network_estimate(n, history, now) for n in running}


def network_estimate(network: Network) -> Estimate | None:
    """The time left of one network (None unless it is running)."""
    return network_estimates([network]).get(network.pk)


def estimate_json(estimate: Estimate | None) -> dict[str, Any] | None:
    return None if estimate is None else estimate.as_dict()


# --------------------------------------------------------------------------- builds


def _build_estimate(bench: Benchmark, plan: dict[str, Any], refs: dict[str, dict[str, Any]],
                    recipes: list[str], now: datetime) -> Estimate:
    """Time left in the build: the step it is in, then each reference still to train,
    the universal set if it is still to come, each reference still to evaluate and attack."""
    if plan.get("step") == "ready":  # the last write of the build
        return Estimate(seconds=0.0, finishing=True)
    history = stage_history([bench.pk])
    durations = {stage: history.get((bench.pk, True, stage), ()) for stage in BUILD_WORDS}

    def step(stage: str, count: int = 1) -> Step:
        return Step(BUILD_WORDS[stage], durations[stage], count)

    name, reference = plan.get("step") or "dataset", plan.get("reference")
    current_stage = BUILD_STEPS.get(name)
    # Steps before the current one are done, whatever the rows say (a rebuilt control
    # waits for the final ranking while the other networks are re-measured).
    at = BUILD_ORDER.index(name) if name in BUILD_ORDER else 0

    def still(step_name: str, count: int) -> int:
        return count if at <= BUILD_ORDER.index(step_name) else 0

    to_train = sum(1 for r in recipes
                   if not refs.get(r, {}).get("archive") and not (name == "training" and r == reference))
    to_rank = sum(1 for r in recipes
                  if refs.get(r, {}).get("status") != S.RANKED and not (name == "reference" and r == reference))
    universal = 0 if name == "universal" or UniversalSet.objects.filter(benchmark=bench).exists() else 1
    later = [step(BUILD_TRAINING, still("training", to_train)), step(BUILD_UNIVERSAL, still("universal", universal)),
             step(BUILD_REFERENCE, still("reference", to_rank)),
             # A control rebuild then re-measures every ranked network: never timed, so
             # the time left before it is a lower bound.
             Step(REEVALUATE, (), still("reference", int(plan.get("reevaluate") or 0)))]
    if current_stage is None:
        estimate = estimate_left(current=None, spent=0.0, later=later)
        if estimate.seconds is None and name != "dataset":
            return Estimate(seconds=None, reason=UNTIMED_STEP)
        return estimate
    return estimate_left(current=step(current_stage), spent=_spent(bench.stage_since, now), later=later)


def build_progress(bench: Benchmark | None, *, name: str = "", now: datetime | None = None) -> dict[str, Any]:
    """What the build banner, the benchmark API and the build console say about a build
    that is not finished: its stage, the reference it is on, how many references are
    trained and ranked of how many, its percent and the time left.

    The percent is the build's own (monotonic within a build); while a reference goes
    through its pipeline it moves with that reference's own monotonic progress, up to
    where the next step starts.
    """
    now = now or timezone.now()
    if bench is None:
        # The default benchmark before its first build has even created it: no API to poll.
        counts = {"total": 0, "trained": 0, "ranked": 0}
        return {"name": name, "poll": False, "state": "new", "failed": False, "stage": "not started yet",
                "step": None, "reference": None, "progress": 0, "references": counts,
                "counts_text": _counts_text(counts), "nothing_built": True,
                "estimate": Estimate(seconds=None, reason="the build has not started").as_dict()}
    plan = dict(bench.build_step or {})
    rows = Network.objects.filter(benchmark=bench, is_reference=True).values("recipe", "archive", "status", "progress")
    refs = {row["recipe"]: row for row in rows}
    recipes = list(plan.get("recipes") or refs)
    trained = sum(1 for r in recipes if refs.get(r, {}).get("archive"))
    ranked = sum(1 for r in recipes if refs.get(r, {}).get("status") == S.RANKED)
    percent = bench.progress or 0
    reference = plan.get("reference")
    until = plan.get("until")
    if plan.get("step") == "reference" and until is not None and reference in refs:
        # The bar moves within this reference's pipeline instead of sitting on one number.
        percent = max(percent, percent + (int(until) - percent) * int(refs[reference]["progress"] or 0) // 100)
    building = bench.state == Benchmark.State.BUILDING
    estimate = (_build_estimate(bench, plan, refs, recipes, now) if building
                else Estimate(seconds=None, reason="the build has not started" if bench.state == Benchmark.State.NEW
                              else "the build stopped"))
    counts = {"total": len(recipes), "trained": trained, "ranked": ranked}
    return {
        "name": bench.name,
        "poll": True,
        "state": bench.state,
        "failed": bench.state == Benchmark.State.FAILED,
        "stage": bench.stage or ("waiting for a worker" if bench.state == Benchmark.State.NEW else bench.state),
        "step": plan.get("step"),
        "reference": reference if building else None,
        "progress": min(100, percent),
        "references": counts,
        "counts_text": _counts_text(counts),
        "nothing_built": not bench.data_file and trained == 0,
        "estimate": estimate.as_dict(),
    }


def _counts_text(counts: dict[str, int]) -> str:
    if not counts["total"]:
        return "References not chosen yet"
    return f"{counts['trained']} of {counts['total']} references trained, {counts['ranked']} ranked"


def build_line(bench: Benchmark) -> str:
    """The console's words after a build's progress line: counts and time left."""
    info = build_progress(bench)
    if info["step"] == "ready":
        return info["counts_text"]
    return f"{info['counts_text']} · {info['estimate']['text']}"
