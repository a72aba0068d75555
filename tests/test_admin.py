"""Admin actions: rerun one, rerun all (with confirmation), recompute ranking,
rebuild a reference, cancel a job; job list readable by staff only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from evaluator.models import AdversarialDataset, Evaluation, Job, StageDuration
from leaderboard.models import Network
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    admin = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def _action(client, model: str, action: str, pks: list[int], **extra):
    return client.post(f"/admin/{model}/", {"action": action, "_selected_action": pks, **extra})


def test_rerun_network_forgets_every_result_touching_it(staff_client, queued, django_capture_on_commit_callbacks) -> None:
    suite = fake_suite(references=3, uploads=1)
    target = suite.uploads[0]
    others = Evaluation.objects.exclude(network=target).exclude(source=target).count()
    with django_capture_on_commit_callbacks(execute=True):
        resp = _action(staff_client, "leaderboard/network", "rerun", [target.pk])
    assert resp.status_code == 302
    target.refresh_from_db()
    assert target.status == Network.Status.QUEUED and target.level is None
    assert not Evaluation.objects.filter(network=target).exists()
    assert not Evaluation.objects.filter(source=target).exists()
    assert not AdversarialDataset.objects.filter(network=target).exists()
    assert Evaluation.objects.count() == others
    assert ("network_evaluate", (target.pk,)) in queued


def test_rerun_all_asks_for_confirmation_first(staff_client, queued, django_capture_on_commit_callbacks) -> None:
    suite = fake_suite(references=2)
    Network.objects.filter(benchmark=suite.benchmark).update(archive="networks/x/upload.zip")
    own = Evaluation.objects.filter(network__benchmark=suite.benchmark)
    resp = _action(staff_client, "leaderboard/benchmark", "rerun_all", [suite.benchmark.pk])
    assert resp.status_code == 200
    assert b"Rerun every network?" in resp.content
    assert own.exists()
    with django_capture_on_commit_callbacks(execute=True):
        resp = _action(staff_client, "leaderboard/benchmark", "rerun_all", [suite.benchmark.pk], confirmed="yes")
    assert resp.status_code == 302
    assert not own.exists()
    assert sorted(a[0] for n, a in queued if n == "network_evaluate") == sorted(n.pk for n in suite.references)


def test_recompute_ranking_and_rebuild_reference_are_queued(staff_client, queued, django_capture_on_commit_callbacks) -> None:
    suite = fake_suite(references=2, uploads=1)
    with django_capture_on_commit_callbacks(execute=True):
        _action(staff_client, "leaderboard/benchmark", "recompute_ranking", [suite.benchmark.pk])
        _action(staff_client, "leaderboard/network", "rebuild_reference",
                [suite.references[0].pk, suite.uploads[0].pk])
    assert ("benchmark_rank", (suite.benchmark.pk,)) in queued
    assert ("reference_rebuild", (suite.benchmark.pk, suite.references[0].recipe)) in queued
    assert len([n for n, _ in queued if n == "reference_rebuild"]) == 1  # uploads are skipped


def test_cancel_job_marks_job_and_network(staff_client) -> None:
    suite = fake_suite(references=1, uploads=1)
    net = suite.uploads[0]
    Network.objects.filter(pk=net.pk).update(status=Network.Status.ATTACKING)
    job = Job.objects.create(kind=Job.Kind.ATTACK, benchmark=suite.benchmark, network=net,
                             state=Job.State.RUNNING, attempts=1)
    _action(staff_client, "evaluator/job", "cancel", [job.pk])
    job.refresh_from_db()
    net.refresh_from_db()
    assert job.state == Job.State.CANCELLED and "cancelled" in job.log
    assert net.status == Network.Status.FAILED and "cancelled" in net.reason


def test_job_list_and_log_visible_to_staff_only(client, staff_client) -> None:
    suite = fake_suite(references=1)
    job = Job.objects.create(kind=Job.Kind.VALIDATE, benchmark=suite.benchmark, state=Job.State.DONE,
                             attempts=2, log="attempt 1 crashed\nattempt 2 ok\n", seconds=3.5)
    resp = staff_client.get("/admin/evaluator/job/")
    assert resp.status_code == 200 and b"validate" in resp.content
    resp = staff_client.get(f"/admin/evaluator/job/{job.pk}/change/")
    assert b"attempt 1 crashed" in resp.content
    client.logout()
    assert client.get("/admin/evaluator/job/").status_code == 302  # to the login page


def test_recorded_stage_times_are_listed_and_an_outlier_can_be_deleted(staff_client) -> None:
    suite = fake_suite(references=1)
    net = suite.references[0]
    kept = StageDuration.objects.create(benchmark=suite.benchmark, network=net, is_reference=True,
                                        stage="attacking", seconds=12.5)
    outlier = StageDuration.objects.create(benchmark=suite.benchmark, network=net, is_reference=True,
                                           stage="attacking", seconds=900.0)
    page = staff_client.get("/admin/evaluator/stageduration/")
    assert page.status_code == 200 and b"12.5" in page.content and b"900.0" in page.content
    assert staff_client.get("/admin/evaluator/stageduration/add/").status_code == 403
    resp = _action(staff_client, "evaluator/stageduration", "delete_selected", [outlier.pk], post="yes")
    assert resp.status_code == 302
    left = StageDuration.objects.filter(pk__in=[kept.pk, outlier.pk]).values_list("pk", flat=True)
    assert list(left) == [kept.pk]
