"""A network's lifecycle (evaluator.services.lifecycle): the table of allowed moves, and
the run and attempt tokens that keep a stale job from overwriting a newer state."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from django.db.models import F

from evaluator.models import Job
from evaluator.services import lifecycle
from evaluator.services.jobs import JobCancelled, JobSuperseded, Stage, job_open, job_run
from leaderboard.models import Network
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db
S = Network.Status
RUNNING = [S.QUEUED, S.VALIDATING, S.EVALUATING, S.ATTACKING, S.CROSS_EVALUATING]
# Written out by hand from SPEC §5's statuses, independently of lifecycle.ALLOWED.
FORBIDDEN = {
    *((S.REJECTED, to) for to in S.values if to != S.QUEUED),  # only a rerun revives it
    *((S.FAILED, to) for to in S.values if to != S.QUEUED),
    *((s, S.RANKED) for s in RUNNING if s != S.CROSS_EVALUATING),  # ranked only after the matrix
    (S.RANKED, S.REJECTED), (S.RANKED, S.FAILED),  # only from a stage it went back into
}


def _network(status: str = S.QUEUED, net: Network | None = None) -> Network:
    net = net or fake_suite(references=1).references[0]
    Network.objects.filter(pk=net.pk).update(status=status, progress=0)
    net.refresh_from_db()
    return net


@pytest.mark.parametrize(("start", "to"), list(itertools.product(S.values, S.values)))
def test_every_move_is_allowed_or_refused_as_the_table_says(start: str, to: str) -> None:
    net = _network(start)
    if (start, to) in FORBIDDEN:
        with pytest.raises(lifecycle.TransitionError):
            lifecycle.network_move(network=net, to=to)
        net.refresh_from_db()
        assert net.status == start
    else:
        lifecycle.network_move(network=net, to=to, reason="why", progress=7)
        net.refresh_from_db()
        assert (net.status, net.reason, net.progress) == (to, "why", 7)


def test_a_stale_run_cannot_move_the_network() -> None:
    net = _network(S.ATTACKING)
    stale = Network.objects.get(pk=net.pk)
    lifecycle.network_move(network=net, to=S.QUEUED, restart=True)
    assert net.run == stale.run + 1
    with pytest.raises(JobSuperseded):
        lifecycle.network_move(network=stale, to=S.FAILED)
    with pytest.raises(JobSuperseded):
        lifecycle.network_progress(network=stale, status=S.ATTACKING, progress=50, stage="step 9")
    assert lifecycle.network_fail(network=stale, exc=RuntimeError("late")) is False
    net.refresh_from_db()
    assert (net.status, net.reason) == (S.QUEUED, "")


def _job(net: Network) -> Job:
    return job_open(kind=Job.Kind.EVALUATE, benchmark=net.benchmark, network=net)


def _run_until_first_report(job: Job, net: Network, action, exc=JobCancelled) -> BaseException:
    reports: list[Path] = []

    def report(out: Path) -> None:
        reports.append(out)
        if len(reports) == 1:
            action()

    with pytest.raises(exc) as caught:
        job_run(job=job, target="tests.sandbox_targets:tick_forever", kwargs={"pid_file": "pid"},
                network=net, stage=Stage(S.ATTACKING, 25, 70), on_report=report)
    return caught.value


def test_rerun_while_its_job_runs_leaves_the_new_run_queued(queued, django_capture_on_commit_callbacks) -> None:
    """Issue 13's bug: the old job's cancel used to write 'failed' over the rerun's
    'queued', and the re-queued task then found 'failed' and did nothing."""
    net = _network(S.VALIDATING)
    job = _job(net)
    with django_capture_on_commit_callbacks(execute=True):
        exc = _run_until_first_report(job, net, lambda: lifecycle.network_rerun(network=Network.objects.get(pk=net.pk)))
    # What the pipeline does with the old job's end: nothing, for a superseded run.
    assert lifecycle.network_fail(network=net, exc=exc) is False
    fresh = Network.objects.get(pk=net.pk)
    assert (fresh.status, fresh.stage, fresh.run) == (S.QUEUED, "queued for rerun", net.run + 1)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert queued == [("network_evaluate", (net.pk,))]
    # The task that runs next sees 'queued' and proceeds.
    lifecycle.network_move(network=fresh, to=S.VALIDATING)


def test_cancel_fails_a_running_network_but_never_a_ranked_one() -> None:
    suite = fake_suite(references=2)
    net = _network(S.ATTACKING, suite.references[0])
    job = _job(net)
    exc = _run_until_first_report(job, net, lambda: lifecycle.job_cancel(job=Job.objects.get(pk=job.pk)))
    lifecycle.network_fail(network=net, exc=exc)
    net.refresh_from_db()
    assert (net.status, net.reason) == (S.FAILED, lifecycle.CANCELLED)
    ranked = _network(S.RANKED, suite.references[1])
    cell = job_open(kind=Job.Kind.CROSS, benchmark=ranked.benchmark, network=ranked)
    lifecycle.job_cancel(job=cell)
    ranked.refresh_from_db()
    cell.refresh_from_db()
    assert ranked.status == S.RANKED and cell.state == Job.State.CANCELLED


def test_deleting_a_network_mid_job_stops_the_job_and_writes_nothing(queued, django_capture_on_commit_callbacks) -> None:
    net = _network(S.ATTACKING)
    job = _job(net)
    with django_capture_on_commit_callbacks(execute=True):
        exc = _run_until_first_report(job, net, lambda: lifecycle.network_delete(network=Network.objects.get(pk=net.pk)))
    assert lifecycle.network_fail(network=net, exc=exc) is False
    assert not Network.objects.filter(pk=net.pk).exists() and not Job.objects.filter(pk=job.pk).exists()
    assert queued == [("benchmark_rank", (net.benchmark_id,))]


def test_of_two_workers_racing_on_one_job_only_the_newer_attempt_writes() -> None:
    net = _network(S.ATTACKING)
    job = _job(net)

    def another_worker_takes_over() -> None:
        Job.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1, worker="elsewhere:1")

    _run_until_first_report(job, net, another_worker_takes_over, exc=JobSuperseded)
    job.refresh_from_db()
    # The loser wrote neither an outcome nor a finish over the winner's attempt.
    assert (job.state, job.worker, job.attempts, job.finished_at) == (Job.State.RUNNING, "elsewhere:1", 2, None)
    assert "ok in" not in job.log and "giving up" not in job.log


def test_a_silent_child_still_has_a_live_heartbeat() -> None:
    """The parent beats while the child runs, whatever the child reports: the reaper on
    another host must not requeue a job in a long silent phase."""
    net = _network(S.ATTACKING)
    job = _job(net)
    assert job_run(job=job, target="tests.sandbox_targets:silent", kwargs={"seconds": 3.0}) == {"slept": 3.0}
    job.refresh_from_db()
    assert (job.heartbeat_at - job.started_at).total_seconds() >= 2.0


def test_the_ranking_never_marks_a_restarted_network_ranked() -> None:
    net = _network(S.CROSS_EVALUATING)
    lifecycle.network_move(network=net, to=S.QUEUED, restart=True)  # rerun between read and write
    lifecycle.network_mark_ranked(network_id=net.pk, fields={"level": 3}, was=S.CROSS_EVALUATING)
    net.refresh_from_db()
    assert (net.status, net.level) == (S.QUEUED, 3)


def test_every_queued_name_is_a_task_the_worker_registers() -> None:
    import evaluator.tasks  # noqa: F401  (what the worker's autodiscovery imports)
    from leaderboard.celery import app

    for name in (lifecycle.TASK_NETWORK_EVALUATE, lifecycle.TASK_BENCHMARK_RANK, lifecycle.TASK_REFERENCE_REBUILD,
                 lifecycle.TASK_NETWORK_ANALYSE, lifecycle.TASK_NETWORK_MEET_PEERS):
        assert name in app.tasks


def test_a_web_process_queues_by_name_without_the_tasks_module(tmp_path) -> None:
    """The web server never imports evaluator.tasks: the message must still reach the
    broker (a registry lookup there failed with NotRegistered)."""
    import os
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup()\n"
        "from evaluator.services import lifecycle\n"
        "lifecycle._send(lifecycle.TASK_NETWORK_EVALUATE, 41)\n"
        "assert 'evaluator.tasks' not in sys.modules\n"
    )
    env = {**os.environ, "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "leaderboard.settings",
           "CELERY_BROKER_URL": "filesystem://", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not queue" not in done.stderr
    messages = [f.read_text() for f in (tmp_path / "broker").rglob("*") if f.is_file()]
    assert any("evaluator.network_evaluate" in m and "41" in m for m in messages)


def test_two_columns_that_need_the_same_peer_at_once_never_share_its_job(monkeypatch) -> None:
    """Two uploads evaluated at once both run an uploaded peer on their sets: each gets
    a job of its own (a shared live Job made one of them lose an attempt it never raced
    for, and that upload then stayed 'cross-evaluating' forever)."""
    from evaluator.services import peers

    suite = fake_suite(references=1, uploads=3)
    peer, first, second = suite.uploads
    made: list[int] = []

    def fake_run(*, job, **kwargs):
        made.append(job.pk)
        raise JobSuperseded("stop here")  # the jobs exist; nothing needs to run

    monkeypatch.setattr(peers, "job_run", fake_run)
    for network in (first, second):
        with pytest.raises(JobSuperseded):
            peers._cells(network, [peer], [network], Stage(S.CROSS_EVALUATING, 70, 98))
    assert len(set(made)) == 2 and all(Job.objects.get(pk=pk).network_id == peer.pk for pk in made)


def test_the_bar_never_goes_back_within_a_run_and_starts_again_with_a_new_one() -> None:
    net = _network(S.ATTACKING)
    lifecycle.network_progress(network=net, status=S.ATTACKING, progress=60, stage="step 30/40")
    lifecycle.network_move(network=net, to=S.VALIDATING, progress=0)  # a retried job starts over
    lifecycle.network_progress(network=net, status=S.VALIDATING, progress=12, stage="loading")
    net.refresh_from_db()
    assert (net.status, net.progress) == (S.VALIDATING, 60)
    lifecycle.network_move(network=net, to=S.QUEUED, progress=0, restart=True)
    net.refresh_from_db()
    assert (net.status, net.progress) == (S.QUEUED, 0)


def test_watchers_see_every_write_in_order() -> None:
    net = _network(S.QUEUED)
    seen: list[tuple[str, int]] = []
    with lifecycle.progress_watch(lambda pk, status, percent, stage: seen.append((status, percent))):
        lifecycle.network_move(network=net, to=S.VALIDATING, progress=5)
        lifecycle.network_progress(network=net, status=S.ATTACKING, progress=40, stage="step 1")
    lifecycle.network_progress(network=net, status=S.ATTACKING, progress=50, stage="step 2")  # not watched
    assert seen == [(S.VALIDATING, 5), (S.ATTACKING, 40)]


def test_an_upload_never_shares_a_child_with_the_references() -> None:
    """Only the references (trusted code, verified files) share a column's child: a group
    holding an upload is refused before any job exists, so an upload can never sit in
    a process beside the models it is compared with."""
    from evaluator.services import peers

    suite = fake_suite(references=2, uploads=2)
    jobs_before = Job.objects.count()
    with pytest.raises(ValueError, match="never share"):
        peers._cells(suite.uploads[1], [suite.references[0], suite.uploads[0]], [suite.uploads[1]],
                     Stage(S.CROSS_EVALUATING, 70, 98))
    assert Job.objects.count() == jobs_before
