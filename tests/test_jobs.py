"""Recorded sandbox jobs (evaluator.services.jobs): how a job's progress moves the
network's status and bar, and how outcomes become retries, rejections and failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from evaluator.models import Job
from evaluator.services import storage
from evaluator.services.jobs import JobCancelled, JobFailed, JobRejected, Phases, Stage, job_open, job_run
from evaluator.services.pipeline import EVALUATE
from leaderboard.models import Network
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db
S = Network.Status


@pytest.mark.parametrize(
    ("fraction", "status", "percent"),
    [
        # evaluate_network's phases: validate [0, .12), attack [.12, .85), cross [.85, 1];
        # the validate phase is validating until its predicts start (half way), then
        # evaluating; the bar runs 0-12, 12-25, 25-70, 70-98.
        (0.0, S.VALIDATING, 0),
        (0.03, S.VALIDATING, 6),
        (0.06, S.EVALUATING, 12),
        (0.09, S.EVALUATING, 18),
        (0.12, S.ATTACKING, 25),
        (0.485, S.ATTACKING, 47),
        (0.85, S.CROSS_EVALUATING, 70),
        (0.925, S.CROSS_EVALUATING, 84),
        (1.0, S.CROSS_EVALUATING, 98),
    ],
)
def test_evaluate_job_progress_maps_onto_statuses(fraction: float, status: str, percent: int) -> None:
    assert EVALUATE.at(fraction) == (status, percent)


def _job_and_network() -> tuple[Job, Network]:
    suite = fake_suite(references=1)
    net = suite.references[0]
    Network.objects.filter(pk=net.pk).update(status=S.VALIDATING, progress=0)  # as the pipeline leaves it
    net.refresh_from_db()
    return job_open(kind=Job.Kind.EVALUATE, benchmark=suite.benchmark, network=net), net


def test_a_change_of_status_is_written_at_once(tmp_path) -> None:
    """Two reports 0.5 s apart fall inside the one-write-a-second throttle; the second
    enters another stage, so it must still reach the network row."""
    job, net = _job_and_network()
    stages = Phases(((0.0, 0.5, Stage(S.VALIDATING, 0, 50)), (0.5, 1.0, Stage(S.ATTACKING, 50, 100))))
    reports: list[Path] = []
    value = job_run(job=job, target="tests.sandbox_targets:two_phases", kwargs={}, network=net,
                    stage=stages, on_report=reports.append)
    assert value == {"done": True}
    assert len(reports) == 2 and reports[0].name == "out"  # each report, with the live output folder
    net.refresh_from_db()
    assert (net.status, net.progress, net.stage) == (S.ATTACKING, 90, "second phase")


@override_settings(JOB_MAX_ATTEMPTS=2)
def test_internal_errors_are_retried_then_fail() -> None:
    job, net = _job_and_network()
    with pytest.raises(JobFailed, match="after 2 attempts"):
        job_run(job=job, target="tests.sandbox_targets:fail", kwargs={}, network=net)
    job.refresh_from_db()
    assert (job.state, job.attempts) == (Job.State.FAILED, 2)
    assert job.log.count("internal error: ValueError: boom in the engine") == 2


def test_a_contract_breach_is_rejected_without_retry() -> None:
    job, net = _job_and_network()
    with pytest.raises(JobRejected, match=r"input shape \(None, 32, 32, 3\)"):
        job_run(job=job, target="tests.sandbox_targets:reject", kwargs={}, network=net)
    job.refresh_from_db()
    assert (job.state, job.attempts) == (Job.State.DONE, 1)


@pytest.fixture
def spares(settings, monkeypatch):
    """Spares on (the conftest turns them off), preloading a slow stand-in for TF."""
    from evaluator.services import spares

    spares.spares_release()  # the session's spare preloaded TensorFlow, not the stand-in
    settings.SANDBOX_SPARE = True
    monkeypatch.setattr(spares, "PRELOAD", ("tests.slow_import",))
    monkeypatch.setattr(spares, "_spare_wanted", True)  # as in a worker (worker_process_init)
    yield spares
    # Children stopped and folders gone: a later test counts the job folders left behind.
    spares.spares_release()


def _wait_ready(jobs_module) -> None:
    import time

    end = time.monotonic() + 20
    while not jobs_module._spare.ready():
        assert time.monotonic() < end
        time.sleep(0.05)


def test_the_next_job_runs_in_the_spare_started_after_the_last(spares, settings) -> None:
    job, net = _job_and_network()
    kwargs = {"name": "tests.slow_import"}
    first = job_run(job=job, target="tests.sandbox_targets:preloaded", kwargs=kwargs, network=net)
    assert first["loaded"] is False  # no spare before the first job: a cold child
    spare = spares._spare
    assert spare is not None and spare.alive()
    _wait_ready(spares)
    job2 = job_open(kind=Job.Kind.CROSS, benchmark=net.benchmark, network=net)
    second = job_run(job=job2, target="tests.sandbox_targets:preloaded", kwargs=kwargs, network=net)
    assert second["loaded"] is True and second["cwd"] == "/job"  # the spare, under bubblewrap
    assert not spare.alive()  # it served this job and exited
    assert "(warm child)" in Job.objects.get(pk=job2.pk).log
    assert not spare.workdir.exists()  # its folder went with the job, like any job folder
    # A spare started under other limits is thrown away, not used. (A shorter timeout
    # alone would not do: the parent enforces it, see SpareChild.matches.)
    _wait_ready(spares)
    stale = spares._spare
    settings.SANDBOX_MEMORY_MB = 5000
    job3 = job_open(kind=Job.Kind.ATTACK, benchmark=net.benchmark, network=net)
    third = job_run(job=job3, target="tests.sandbox_targets:preloaded", kwargs=kwargs, network=net)
    assert third["loaded"] is False and not stale.alive()


def test_no_spare_outside_a_worker(settings, monkeypatch) -> None:
    """A management command (rank, build_benchmark) runs jobs but keeps no spare."""
    from evaluator.services import spares

    spares.spares_release()
    monkeypatch.setattr(spares, "_spare_wanted", False)  # not a worker (the test session acts as one)
    settings.SANDBOX_SPARE = True
    job, net = _job_and_network()
    job_run(job=job, target="tests.sandbox_targets:add", kwargs={"a": 1, "b": 1}, network=net)
    assert spares._spare is None


def test_a_forked_process_does_not_use_its_parents_spare(spares) -> None:
    job, net = _job_and_network()
    spares.spare_prepare()
    _wait_ready(spares)
    parents = spares._spare
    spares._spare_owner = -1  # as if started by the process this one was forked from
    try:
        value = job_run(job=job, target="tests.sandbox_targets:preloaded", kwargs={"name": "tests.slow_import"},
                        network=net)
    finally:
        # The parent's to stop in a real fork; here it would outlive the test.
        parents.discard()
        storage.remove_tree(parents.workdir)
    assert value["loaded"] is False


def test_a_fault_in_the_worker_ends_the_job_and_its_child(tmp_path) -> None:
    """Storing a finished phase fails (say, the database): the job must end failed, not
    stay 'running' forever, and the child must not outlive it."""
    job, net = _job_and_network()
    from tests.test_sandbox import sleeper_dead, sleeper_marker

    marker = sleeper_marker()

    def store(out: Path) -> None:
        raise RuntimeError("database went away")

    with pytest.raises(JobFailed, match="internal error while running evaluate: RuntimeError"):
        job_run(job=job, target="tests.sandbox_targets:hang_after_progress",
                kwargs={"pid_file": "pid", "marker": marker}, network=net, on_report=store)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "database went away" in job.log
    assert sleeper_dead(marker)


def test_an_admin_cancel_stops_the_running_child_within_seconds(tmp_path) -> None:
    """A cancel takes effect at the next progress report, not when the (long) job ends,
    and a late progress write never turns the cancelled network back to 'attacking'."""
    import time

    from evaluator.services.lifecycle import job_cancel
    from tests.test_sandbox import sleeper_dead, sleeper_marker

    job, net = _job_and_network()
    marker = sleeper_marker()
    reports: list[Path] = []

    def cancel_after_first_report(out: Path) -> None:
        reports.append(out)
        if len(reports) == 1:
            job_cancel(job=Job.objects.get(pk=job.pk))

    started = time.monotonic()
    with pytest.raises(JobCancelled):
        job_run(job=job, target="tests.sandbox_targets:tick_forever", kwargs={"pid_file": "pid", "marker": marker},
                network=net, stage=Stage(S.ATTACKING, 25, 70), on_report=cancel_after_first_report)
    assert time.monotonic() - started < 10
    assert sleeper_dead(marker)
    job.refresh_from_db()
    net.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert (net.status, net.reason) == (S.FAILED, "cancelled by an administrator")


def test_a_zombie_worker_counts_as_dead() -> None:
    """A killed worker nobody reaped answers signals but runs nothing: its jobs are orphans."""
    import os
    import signal
    import subprocess
    import time

    from evaluator.services.reaper import _pid_alive

    child = subprocess.Popen(["sleep", "30"])
    assert _pid_alive(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    time.sleep(0.3)  # not waited for: a zombie until reaped
    assert not _pid_alive(child.pid)
    child.wait()
