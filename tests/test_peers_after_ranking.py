"""The other uploads meet a new upload's set after its ranking (issue 11).

Each uploaded peer runs alone in its own sandbox child, so an upload's column costs one
child per earlier upload. Those cells never decide the new upload's level or robust
accuracy (levels are against the references, SPEC §2; its own robust accuracy is its
row), so they run after its ranking: upload → ranked no longer grows with the board.
A reference's column stays on the path: every upload's level is compared on its set.
These tests run on the fake suite with the sandbox replaced by a recorder; the real
path is in tests/test_pipeline.py.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from evaluator import tasks
from evaluator.models import Evaluation, PeerFailure
from evaluator.services import peers, pipeline
from evaluator.services.jobs import JobFailed, JobSuperseded
from evaluator.services.ranking import benchmark_rank
from evaluator.services.reaper import jobs_reap
from leaderboard.models import Network
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db
S = Network.Status


class Columns:
    """peers.columns_evaluate replaced: records each call and stores the forgotten cells back."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.forgotten: dict[tuple[int, int], Evaluation] = {}

    def forget(self, network: Network, peers_: list[Network]) -> None:
        """Delete the cells of `peers_` on `network`'s set, as if `network` were new."""
        for cell in Evaluation.objects.filter(source=network, network__in=peers_):
            self.forgotten[(network.pk, cell.network_id)] = cell
            cell.delete()

    def __call__(self, *, network: Network, peers_todo: list[Network], progress: bool = True) -> None:
        self.calls.append({"network": network.pk, "peers": sorted(p.pk for p in peers_todo), "progress": progress})
        for peer in peers_todo:
            cell = self.forgotten.pop((network.pk, peer.pk))
            cell.pk = None
            cell.save()


@pytest.fixture
def columns(monkeypatch) -> Columns:
    recorder = Columns()
    monkeypatch.setattr(peers, "columns_evaluate", recorder)
    return recorder


def _missing_column(network: Network) -> list[int]:
    return sorted(p.pk for p in peers.matrix_missing(network, peers.matrix_peers(network))[1])


def test_an_upload_waits_only_for_the_references_then_the_uploads_meet_its_set(columns: Columns) -> None:
    suite = fake_suite(references=2, uploads=3)
    new = suite.uploads[-1]
    others = suite.uploads[:-1]
    everyone = suite.references + others
    columns.forget(new, everyone)

    assert pipeline.network_cross_evaluate(network=new)
    # On its path: the references, with its bar moving; the uploads are still missing.
    assert columns.calls == [{"network": new.pk, "peers": sorted(r.pk for r in suite.references),
                                 "progress": True}]
    assert _missing_column(new) == sorted(p.pk for p in others)

    Network.objects.filter(pk=new.pk).update(status=S.RANKED, progress=100)
    new.refresh_from_db()
    since = new.status_since
    assert pipeline.network_meet_peers(network=new) == len(others)
    assert columns.calls[1:] == [{"network": new.pk, "peers": sorted(p.pk for p in others), "progress": False}]
    assert _missing_column(new) == []
    new.refresh_from_db()
    assert (new.status, new.progress, new.status_since) == (S.RANKED, 100, since)  # never moved
    assert pipeline.network_meet_peers(network=new) == 0  # nothing left: nothing re-ranked


def test_a_newer_upload_meets_the_set_in_its_own_row_not_in_the_follow_up(columns: Columns) -> None:
    """The ranking needs a newer upload's row on every older set (its own pipeline
    computes it), so the follow-up never starts a child for it."""
    suite = fake_suite(references=1, uploads=3)
    older, new, newer = suite.uploads
    columns.forget(new, [older, newer])
    Network.objects.filter(pk=new.pk).update(status=S.RANKED)
    assert pipeline.network_meet_peers(network=new) == 1
    assert [c["peers"] for c in columns.calls] == [[older.pk]]


def test_a_references_whole_column_stays_on_its_path(columns: Columns) -> None:
    """Every upload's level is compared on a reference's set: none of it may wait."""
    suite = fake_suite(references=2, uploads=2)
    reference = suite.references[0]
    rest = suite.references[1:] + suite.uploads
    columns.forget(reference, rest)
    assert pipeline.network_cross_evaluate(network=reference)
    assert columns.calls == [{"network": reference.pk, "peers": sorted(p.pk for p in rest), "progress": True}]
    assert _missing_column(reference) == []


@pytest.mark.parametrize("status", [S.QUEUED, S.ATTACKING, S.REJECTED, S.FAILED])
def test_a_network_that_left_its_ranking_meets_no_peer(columns: Columns, status: str) -> None:
    """A rerun queues the follow-up again when it ends; a rejected or failed network
    has no set worth evaluating."""
    suite = fake_suite(references=1, uploads=2)
    new = suite.uploads[-1]
    columns.forget(new, suite.uploads[:-1])
    Network.objects.filter(pk=new.pk).update(status=status)
    assert pipeline.network_meet_peers(network=new) == 0
    assert columns.calls == []


def test_a_peer_is_not_charged_when_the_set_it_read_went_away(monkeypatch) -> None:
    """The upload was rerun (or deleted) while a peer read its set: the peer failing on
    a vanished file is not the peer's fault."""
    suite = fake_suite(references=1, uploads=2)
    peer, new = suite.uploads

    def fails(*args, **kwargs):
        Network.objects.filter(pk=new.pk).update(run=new.run + 1)  # a rerun began meanwhile
        raise JobFailed("internal error while running cross: FileNotFoundError")

    monkeypatch.setattr(peers, "_cells", fails)
    with pytest.raises(JobSuperseded):
        peers.columns_evaluate(network=new, peers_todo=[peer], progress=False)
    assert not PeerFailure.objects.exists()
    # The same failure with the set still there is the peer's.
    new.refresh_from_db()
    monkeypatch.setattr(peers, "_cells", lambda *a, **k: (_ for _ in ()).throw(JobFailed("it crashed")))
    peers.columns_evaluate(network=new, peers_todo=[peer], progress=False)
    assert PeerFailure.objects.filter(network=peer, source=new).count() == 1


def test_the_worker_queues_the_follow_up_for_uploads_and_re_ranks_only_after_new_cells(
    queued, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    suite = fake_suite(references=1, uploads=1)
    upload, reference = suite.uploads[0], suite.references[0]
    monkeypatch.setattr(pipeline, "network_evaluate", lambda *, network: True)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.network_evaluate(upload.pk)
        tasks.network_evaluate(reference.pk)
    bench = suite.benchmark.pk
    assert queued == [
        ("benchmark_rank", (bench,)), ("network_analyse", (upload.pk,)), ("network_meet_peers", (upload.pk,)),
        ("benchmark_rank", (bench,)), ("network_analyse", (reference.pk,)),
    ]
    queued.clear()
    for met in (0, 2):
        monkeypatch.setattr(pipeline, "network_meet_peers", lambda *, network, met=met: met)
        with django_capture_on_commit_callbacks(execute=True):
            tasks.network_meet_peers(upload.pk)
    assert queued == [("benchmark_rank", (bench,))]


def test_the_reaper_queues_the_follow_up_of_a_ranked_upload_whose_column_is_behind(
    queued, django_capture_on_commit_callbacks
) -> None:
    """A follow-up lost with the broker would leave cells missing for good."""
    suite = fake_suite(references=1, uploads=3)
    behind, young, complete = suite.uploads
    for network in (behind, young):
        Evaluation.objects.filter(source=network, network=complete).delete()
    old = timezone.now() - timedelta(hours=1)
    Network.objects.filter(pk__in=[behind.pk, complete.pk]).update(status=S.RANKED, ranked_at=old)
    # Just ranked: its follow-up is probably still in the queue.
    Network.objects.filter(pk=young.pk).update(status=S.RANKED, ranked_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_reap() == []  # no network's pipeline is queued again
    assert queued == [("network_meet_peers", (behind.pk,))]


def test_the_matrix_says_which_cells_are_not_evaluated_yet(client) -> None:
    suite = fake_suite(references=2, uploads=2)
    older, new = suite.uploads
    columns = Columns()
    columns.forget(new, [older])
    benchmark_rank(benchmark=suite.benchmark)
    data = client.get("/api/matrix").json()
    ids = [n["id"] for n in data["networks"]]
    assert new.pk in ids  # ranked all the same
    i, j = ids.index(older.pk), ids.index(new.pk)
    assert data["matrix"][i][j] is None and data["matrix"][j][i] is not None
    assert sum(v is None for row in data["matrix"] for v in row) == 1
    page = client.get("/matrix/").content.decode()
    assert 'id="matrix-pending"' in page and '<td class="pending">…</td>' in page
    # The other direction keeps its number but no charter colour (nothing to compare with).
    assert f'<td class="pending">{data["matrix"][j][i] * 100:.1f}</td>' in page
    # The heatmap's figure is strict JSON (no NaN, which the browser's JSON.parse refuses).
    figure = page.split('id="fig-matrix">', 1)[1].split("</script>", 1)[0]
    z = json.loads(figure, parse_constant=lambda name: pytest.fail(f"{name} in the figure"))["data"][0]["z"]
    assert z[i][j] is None and z[j][i] is not None
    table = list(csv.reader(io.StringIO(
        client.get(f"/api/benchmarks/{suite.benchmark.name}/matrix.csv").content.decode())))
    assert table[1 + i][2 + j] == "" and table[1 + j][2 + i] != ""

    columns(network=new, peers_todo=[older])  # the follow-up stores the cell
    assert 'id="matrix-pending"' not in client.get("/matrix/").content.decode()
    assert all(v is not None for row in client.get("/api/matrix").json()["matrix"] for v in row)


def test_without_a_sandbox_the_peers_wait_and_nothing_is_charged(monkeypatch) -> None:
    from evaluator.services.jobs import JobUnavailable

    suite = fake_suite(references=1, uploads=2)
    older, new = suite.uploads
    Evaluation.objects.filter(network=older, source=new).delete()
    Network.objects.filter(pk=new.pk).update(status=S.RANKED)

    def unavailable(*args, **kwargs):
        raise JobUnavailable("evaluation sandbox unavailable: install bubblewrap")

    monkeypatch.setattr(peers, "_cells", unavailable)
    assert pipeline.network_meet_peers(network=new) == 0
    assert not PeerFailure.objects.exists()
    assert not Evaluation.objects.filter(network=older, source=new).exists()
