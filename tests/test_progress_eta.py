"""Time left from recorded stage durations (issue 14, "Progress that tells the truth").

The engine's arithmetic on hand-made durations, checked against a median computed here;
what lifecycle records when a network moves on (and what it does not); and the one
estimate on the network page, the leaderboard, the JSON API, the build banner, the
build console and `rank`, with "no estimate yet" until something was timed here.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evaluator.engine.progress_eta import FIRST_RUN, FLOOR_S, Step, estimate_left, format_duration, format_left
from evaluator.models import StageDuration, UniversalSet
from evaluator.services import lifecycle
from evaluator.services import progress as timing
from evaluator.services.errors import JobFailed
from leaderboard.management.commands.build_benchmark import Command as BuildCommand
from leaderboard.management.commands.rank import Command as RankCommand
from leaderboard.models import Benchmark, Network
from tests.fakes import fake_suite

S = Network.Status
NO_HISTORY = f"no estimate yet: {FIRST_RUN}"


def _median(values: tuple[float, ...]) -> float:
    """Written out here, not statistics.median (what the engine uses)."""
    ordered = sorted(values)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


# --------------------------------------------------------------------------- engine


@pytest.mark.parametrize(
    ("current", "count", "spent", "later"),
    [
        pytest.param((10.0, 30.0, 20.0), 1, 5.0, [((60.0, 40.0), 1)], id="odd-median-less-spent-plus-next"),
        pytest.param((12.0, 18.0), 1, 0.0, [], id="even-median-last-stage"),
        pytest.param((100.0,), 1, 40.0, [((50.0,), 3), ((7.0, 9.0, 8.0), 2)], id="stages-that-repeat"),
        pytest.param((75.0, 60.0, 90.0), 3, 20.0, [((10.0,), 1)], id="current-stage-repeats"),
        pytest.param((10.0, 30.0, 20.0), 1, 300.0, [((60.0, 40.0), 1)], id="over-its-median-gets-the-floor"),
        pytest.param((45.0, 50.0), 2, 49.0, [], id="over-but-one-more-to-come"),
    ],
)
def test_estimate_is_median_left_of_the_current_stage_plus_the_medians_to_come(current, count, spent, later) -> None:
    steps = [Step(f"next-{i}", durations, n) for i, (durations, n) in enumerate(later)]
    got = estimate_left(current=Step("now", current, count), spent=spent, later=steps)
    expected = max(_median(current) - spent, FLOOR_S) + _median(current) * (count - 1) + sum(
        _median(durations) * n for durations, n in later)
    assert got.seconds == pytest.approx(expected)
    assert got.over == (spent > _median(current))
    assert got.finishing == (spent > _median(current) and count == 1 and not later)
    assert got.untimed == ()


@pytest.mark.parametrize("spent", [0.0, 19.0, 20.0, 21.0, 500.0])
def test_estimate_never_drops_below_the_floor_and_says_so_honestly(spent: float) -> None:
    got = estimate_left(current=Step("cross", (20.0,)), spent=spent)
    assert got.seconds == pytest.approx(max(20.0 - spent, FLOOR_S))
    if spent > 20.0:
        assert got.text == "finishing (a little longer than usual)"
    else:
        assert got.text == format_duration(max(20.0 - spent, FLOOR_S)) + " left"
    running_on = estimate_left(current=Step("attack", (20.0,)), spent=spent, later=[Step("cross", (30.0,))])
    assert running_on.seconds == pytest.approx(max(20.0 - spent, FLOOR_S) + 30.0)
    assert ("taking a little longer than usual" in running_on.text) == (spent > 20.0)


def test_no_history_gives_no_number_and_a_missing_later_stage_a_lower_bound() -> None:
    none = estimate_left(current=Step("attacking"), spent=5.0, later=[Step("cross", (30.0,))])
    assert none.seconds is None and none.text == NO_HISTORY
    assert none.as_dict() == {"seconds": None, "text": NO_HISTORY, "over": False, "lower_bound": False}
    bound = estimate_left(current=Step("attacking", (100.0,)), spent=10.0,
                          later=[Step("cross-evaluating"), Step("ranking", (20.0,))])
    assert bound.seconds == pytest.approx(100.0 - 10.0 + 20.0)
    assert bound.untimed == ("cross-evaluating",)
    assert bound.text == f"at least {format_duration(110.0)} left (not timed on this machine yet: cross-evaluating)"
    # Stages that do not run again add nothing, timed or not.
    assert estimate_left(current=Step("a", (30.0,)), spent=0.0, later=[Step("b", (), 0), Step("c", (9.0,), 0)]).text \
        == format_duration(30.0) + " left"
    waiting = estimate_left(current=None, spent=0.0, later=[Step("v", (4.0, 6.0)), Step("x", (50.0,))], waiting=True)
    assert waiting.seconds == pytest.approx(5.0 + 50.0) and waiting.text.endswith(" once it starts")


@pytest.mark.parametrize(("seconds", "text"), [
    (3, "about 10 s"), (40, "about 40 s"), (44, "about 40 s"), (45, "about 50 s"), (54, "about 50 s"),
    (55, "about 1 min"), (150, "about 3 min"), (180, "about 3 min"), (209, "about 3 min"),
    (3569, "about 59 min"), (3599, "about 1 h"), (3700, "about 1 h 2 min"), (7200, "about 2 h"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert format_left(estimate_left(current=Step("s", (seconds + 5.0,)), spent=5.0, floor=0.0)) == text + " left"


# --------------------------------------------------------------------------- recording


def _bench(name: str = "mnist-5k", **fields) -> Benchmark:
    return Benchmark.objects.create(name=name, title=name, **fields)


def _aged(network: Network, seconds: float) -> None:
    """As if the network had entered its status `seconds` ago."""
    Network.objects.filter(pk=network.pk).update(status_since=timezone.now() - timedelta(seconds=seconds))


def _recorded(network: Network) -> list[tuple[str, float]]:
    return [(r.stage, r.seconds) for r in StageDuration.objects.filter(network=network).order_by("pk")]


@pytest.mark.django_db
def test_each_stage_a_network_moves_on_from_is_recorded_with_its_duration() -> None:
    net = Network.objects.create(benchmark=_bench(), name="upload")
    spent = {S.QUEUED: 30, S.VALIDATING: 12, S.EVALUATING: 40, S.ATTACKING: 50, S.CROSS_EVALUATING: 20}
    _aged(net, spent[S.QUEUED])
    lifecycle.network_move(network=net, to=S.VALIDATING, progress=0)
    _aged(net, spent[S.VALIDATING])
    assert lifecycle.network_progress(network=net, status=S.EVALUATING, progress=12, stage="clean images")
    _aged(net, spent[S.EVALUATING])
    # Reports within a status record nothing.
    assert lifecycle.network_progress(network=net, status=S.EVALUATING, progress=20, stage="universal images")
    assert lifecycle.network_progress(network=net, status=S.ATTACKING, progress=25, stage="attack step 1 of 40")
    _aged(net, spent[S.ATTACKING])
    lifecycle.network_move(network=net, to=S.CROSS_EVALUATING, progress=70)
    _aged(net, spent[S.CROSS_EVALUATING])
    lifecycle.network_mark_ranked(network_id=net.pk, fields={}, was=S.CROSS_EVALUATING)
    recorded = _recorded(net)
    assert [stage for stage, _ in recorded] == list(spent)
    for stage, seconds in recorded:
        assert seconds == pytest.approx(spent[stage], abs=2.0)
    assert not StageDuration.objects.filter(network=net, is_reference=True).exists()
    net.refresh_from_db()
    assert net.status == S.RANKED and timezone.now() - net.status_since < timedelta(seconds=5)


@pytest.mark.django_db
def test_failures_retries_a_references_queue_and_re_measuring_are_not_recorded() -> None:
    bench = _bench()
    upload = Network.objects.create(benchmark=bench, name="upload", status=S.ATTACKING)
    _aged(upload, 60)
    lifecycle.network_move(network=upload, to=S.VALIDATING)  # a retried job starts its phase again
    _aged(upload, 60)
    lifecycle.network_fail(network=upload, exc=JobFailed("the child crashed"))
    assert _recorded(upload) == []

    reference = Network.objects.create(benchmark=bench, name="pca", is_reference=True, recipe="pca")
    _aged(reference, 600)  # waited while the other references trained
    lifecycle.network_move(network=reference, to=S.VALIDATING)
    _aged(reference, 8)
    lifecycle.network_move(network=reference, to=S.EVALUATING)
    assert [(stage, round(seconds)) for stage, seconds in _recorded(reference)] == [(S.VALIDATING, 8)]
    assert StageDuration.objects.get(network=reference).is_reference

    ranked = Network.objects.create(benchmark=bench, name="ranked", status=S.RANKED)
    lifecycle.network_move(network=ranked, to=S.CROSS_EVALUATING)  # a new peer's cells only
    ranked.refresh_from_db()
    assert ranked.status_since is None
    _aged(ranked, 5)
    Network.objects.filter(pk=ranked.pk).update(status_since=None)
    lifecycle.network_mark_ranked(network_id=ranked.pk, fields={}, was=S.CROSS_EVALUATING)
    assert _recorded(ranked) == []
    # A new run (re-validation) is timed again from its start.
    lifecycle.network_move(network=ranked, to=S.QUEUED, restart=True, progress=0)
    ranked.refresh_from_db()
    assert ranked.status_since is not None


# --------------------------------------------------------------------------- pages and API


def _history(bench: Benchmark, stage: str, seconds: tuple[float, ...], *, is_reference: bool = False) -> None:
    for value in seconds:
        timing.stage_duration_record(benchmark_id=bench.pk, network_id=None, is_reference=is_reference,
                                     stage=stage, seconds=value)


def _suite(*, uploads: int):
    """tests.fakes' suite, without the durations its own ranking recorded: its networks
    are created cross-evaluating and ranked a moment later (a cross stage of ~0 s)."""
    suite = fake_suite(references=2, uploads=uploads)
    # Only this benchmark's: the session's mini build records its own (another benchmark).
    mine = StageDuration.objects.filter(benchmark=suite.benchmark)
    assert mine.filter(stage=S.CROSS_EVALUATING).count() == 2 + uploads
    mine.delete()
    return suite


def _running_upload(suite, *, status: str = S.ATTACKING, spent: float = 45.0) -> Network:
    net = suite.uploads[0]
    Network.objects.filter(pk=net.pk).update(status=status, progress=30, stage="attack step 3 of 40", level=None)
    _aged(net, spent)
    return net


def _page_eta(html: str) -> str:
    found = re.search(r'id="live-eta">([^<]*)<', html)
    assert found is not None
    return found.group(1)


@pytest.mark.django_db
def test_without_history_the_page_the_api_and_the_board_say_no_estimate_yet(client) -> None:
    suite = _suite(uploads=1)
    net = _running_upload(suite)
    data = client.get(f"/api/networks/{net.pk}").json()
    assert data["estimate"] == {"seconds": None, "text": NO_HISTORY, "over": False, "lower_bound": False}
    assert _page_eta(client.get(f"/networks/{net.pk}/").content.decode()) == NO_HISTORY
    row = next(r for r in client.get("/api/leaderboard").json()["networks"] if r["id"] == net.pk)
    assert row["estimate"]["text"] == NO_HISTORY
    assert f'<span class="eta">{NO_HISTORY}</span>' in client.get("/").content.decode()
    # A ranked network has no estimate at all.
    assert client.get(f"/api/networks/{suite.references[0].pk}").json()["estimate"] is None
    ref = next(r for r in client.get("/api/leaderboard").json()["networks"] if r["id"] == suite.references[0].pk)
    assert ref["estimate"] is None and ref["stage"] is None


@pytest.mark.django_db
def test_recorded_durations_give_the_same_estimate_on_page_api_and_board(client) -> None:
    suite = _suite(uploads=1)
    bench = suite.benchmark
    attacking, cross = (100.0, 140.0, 120.0), (30.0, 50.0)
    _history(bench, S.ATTACKING, attacking)
    _history(bench, S.CROSS_EVALUATING, cross)
    # Neither the references' durations nor another benchmark's count for an upload.
    _history(bench, S.ATTACKING, (1000.0,), is_reference=True)
    _history(_bench("other"), S.CROSS_EVALUATING, (900.0,))
    net = _running_upload(suite, spent=45.0)
    expected = _median(attacking) - 45.0 + _median(cross)
    data = client.get(f"/api/networks/{net.pk}").json()
    assert data["estimate"]["seconds"] == pytest.approx(expected, abs=2.0)
    assert data["estimate"]["text"] == "about 2 min left" == format_duration(expected) + " left"
    assert _page_eta(client.get(f"/networks/{net.pk}/").content.decode()) == data["estimate"]["text"]
    row = next(r for r in client.get("/api/leaderboard").json()["networks"] if r["id"] == net.pk)
    assert row["estimate"]["text"] == data["estimate"]["text"] and row["stage"] == "attack step 3 of 40"
    assert f'<span class="eta">{data["estimate"]["text"]}</span>' in client.get("/").content.decode()
    owner = User.objects.create_user("owner-eta", password="pw-owner-123")
    Network.objects.filter(pk=net.pk).update(owner=owner)
    client.force_login(owner)
    assert f'<span class="eta">{data["estimate"]["text"]}</span>' in client.get("/accounts/profile/").content.decode()
    # Past the attack's median: the floor, and the page says the stage runs long.
    _aged(net, 500.0)
    late = client.get(f"/api/networks/{net.pk}").json()["estimate"]
    assert late["seconds"] == pytest.approx(FLOOR_S + _median(cross)) and late["over"]
    assert late["text"] == format_duration(FLOOR_S + _median(cross)) + \
        " left, this stage is taking a little longer than usual"
    Network.objects.filter(pk=net.pk).update(status=S.CROSS_EVALUATING)
    _aged(net, 500.0)
    assert client.get(f"/api/networks/{net.pk}").json()["estimate"]["text"] == "finishing (a little longer than usual)"


@pytest.mark.django_db
def test_board_estimates_cost_one_query_however_many_networks_run(client) -> None:
    suite = _suite(uploads=6)
    _history(suite.benchmark, S.ATTACKING, (60.0,))

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/leaderboard").status_code == 200
        return len(ctx.captured_queries)

    Network.objects.filter(pk=suite.uploads[0].pk).update(status=S.ATTACKING)
    one = count()
    Network.objects.filter(pk__in=[n.pk for n in suite.uploads]).update(status=S.ATTACKING)
    assert count() == one
    rows = client.get("/api/leaderboard").json()["networks"]
    assert sum(1 for r in rows if r["estimate"] is not None) == 6


# --------------------------------------------------------------------------- builds

RECIPES = ["control", "pca", "down50", "adv-trained"]


def _building(*, step: str, reference: str | None, spent: float, progress: int, stage: str,
              until: int | None = None) -> Benchmark:
    """A build of four references: control ranked, pca trained, down50 training (or in
    its pipeline), adv-trained not started."""
    bench = _bench(state=Benchmark.State.BUILDING, data_file="benchmarks/mnist-5k/dataset.npz")
    Network.objects.create(benchmark=bench, name="control", is_reference=True, recipe="control",
                           archive="c.zip", status=S.RANKED)
    Network.objects.create(benchmark=bench, name="pca", is_reference=True, recipe="pca", archive="p.zip")
    Network.objects.create(benchmark=bench, name="down50", is_reference=True, recipe="down50",
                           archive="d.zip" if step == "reference" else "", progress=50)
    timing.benchmark_step(benchmark=bench, step="dataset", plan={"recipes": RECIPES})
    timing.benchmark_step(benchmark=bench, step=step, reference=reference, until=until)
    Benchmark.objects.filter(pk=bench.pk).update(stage=stage, progress=progress,
                                                 stage_since=timezone.now() - timedelta(seconds=spent))
    bench.refresh_from_db()
    return bench


@pytest.mark.django_db
def test_build_banner_api_and_console_say_where_the_build_is_and_its_time_left(client) -> None:
    bench = _building(step="training", reference="down50", spent=20.0, progress=20,
                      stage="training reference down50 (3/4)")
    training, pipeline = (60.0, 90.0, 75.0), (30.0, 50.0)
    _history(bench, timing.BUILD_TRAINING, training, is_reference=True)
    _history(bench, timing.BUILD_REFERENCE, pipeline, is_reference=True)
    # down50 is trained now; adv-trained is left; the universal set was never timed here.
    lower = _median(training) - 20.0 + _median(training) * 1 + _median(pipeline) * 3
    build = client.get("/api/benchmarks/mnist-5k").json()["build"]
    assert build["references"] == {"total": 4, "trained": 2, "ranked": 1}
    assert build["reference"] == "down50" and build["step"] == "training" and build["progress"] == 20
    assert build["estimate"]["seconds"] == pytest.approx(lower, abs=2.0) and build["estimate"]["lower_bound"]
    assert build["estimate"]["text"] == (f"at least {format_duration(lower)} left "
                                         "(not timed on this machine yet: universal perturbations)")
    html = client.get("/").content.decode()
    assert "Nothing has been built yet" not in html
    assert "training reference down50 (3/4)" in html and "2 of 4 references trained, 1 ranked" in html
    assert f'<span class="eta">{build["estimate"]["text"]}</span>' in html and "20%" in html
    assert 'data-poll="/api/benchmarks/mnist-5k"' in html

    _history(bench, timing.BUILD_UNIVERSAL, (40.0,), is_reference=True)
    full = client.get("/api/benchmarks/mnist-5k").json()["build"]["estimate"]
    assert full["seconds"] == pytest.approx(lower + 40.0, abs=2.0)
    assert full["text"] == format_duration(lower + 40.0) + " left"

    out = io.StringIO()
    BuildCommand(stdout=out).reporter(bench)("[ 20%] training reference down50 (3/4)")
    assert out.getvalue().strip() == ("[ 20%] training reference down50 (3/4) · 2 of 4 references trained, 1 ranked · "
                                      + full["text"])
    BuildCommand(stdout=out).reporter(bench)("some other line")
    assert out.getvalue().splitlines()[-1] == "some other line"

    # A long step: quiet for TICK_S, the console says the progress line again, with the
    # time left of that moment; not before.
    out = io.StringIO()
    console = BuildCommand(stdout=out).reporter(bench)
    assert not console.tick()  # nothing to repeat yet
    console("[ 20%] training reference down50 (3/4)")
    first = out.getvalue().splitlines()
    assert not console.tick(now=console.printed_at + console.TICK_S - 1)
    Benchmark.objects.filter(pk=bench.pk).update(stage_since=timezone.now() - timedelta(seconds=200))
    assert console.tick(now=console.printed_at + console.TICK_S)
    again = out.getvalue().splitlines()
    assert len(again) == len(first) + 1 and again[-1].startswith("[ 20%] training reference down50 (3/4) · ")
    assert again[-1] != first[-1]  # 200 s more spent: another time left


@pytest.mark.django_db
def test_a_control_rebuild_says_its_re_evaluations_are_not_timed(client) -> None:
    bench = _bench(state=Benchmark.State.BUILDING, data_file="benchmarks/mnist-5k/dataset.npz")
    timing.benchmark_step(benchmark=bench, step="training", reference="control",
                          plan={"recipes": ["control"], "reevaluate": 5})
    training, universal, pipeline = (60.0, 80.0), (40.0,), (30.0,)
    _history(bench, timing.BUILD_TRAINING, training, is_reference=True)
    _history(bench, timing.BUILD_UNIVERSAL, universal, is_reference=True)
    _history(bench, timing.BUILD_REFERENCE, pipeline, is_reference=True)
    estimate = client.get("/api/benchmarks/mnist-5k").json()["build"]["estimate"]
    expected = _median(training) + _median(universal) + _median(pipeline)  # spent ~0 s
    assert estimate["seconds"] == pytest.approx(expected, abs=2.0) and estimate["lower_bound"]
    assert estimate["text"].endswith("(not timed on this machine yet: re-evaluating the ranked networks)")
    timing.benchmark_step(benchmark=bench, step="re-evaluating")
    assert client.get("/api/benchmarks/mnist-5k").json()["build"]["estimate"]["text"] == \
        "no estimate yet: this step is not timed"
    timing.benchmark_step(benchmark=bench, step="ready")
    assert client.get("/api/benchmarks/mnist-5k").json()["build"]["estimate"]["text"] == "finishing"


@pytest.mark.django_db
def test_build_percent_moves_with_the_reference_in_its_pipeline(client) -> None:
    bench = _building(step="reference", reference="down50", spent=5.0, progress=45, until=70,
                      stage="evaluating and attacking down50 (3/4)")
    UniversalSet.objects.create(benchmark=bench, file="u.npz", count=6, xi=0.3)
    build = client.get("/api/benchmarks/mnist-5k").json()["build"]
    assert build["progress"] == 45 + (70 - 45) * 50 // 100  # down50 is half way through its pipeline
    assert build["estimate"]["text"] == NO_HISTORY  # nothing of this step was timed here


@pytest.mark.django_db
def test_banner_says_nothing_was_built_only_while_nothing_was(client) -> None:
    assert "Nothing has been built yet" in client.get("/").content.decode()  # no benchmark at all
    bench = _bench(state=Benchmark.State.BUILDING)
    timing.benchmark_step(benchmark=bench, step="dataset", plan={"recipes": RECIPES})
    Benchmark.objects.filter(pk=bench.pk).update(stage="dataset")
    html = client.get("/").content.decode()
    assert "Nothing has been built yet" in html and "0 of 4 references trained, 0 ranked" in html
    assert NO_HISTORY in html
    Network.objects.create(benchmark=bench, name="control", is_reference=True, recipe="control", archive="c.zip")
    html = client.get("/").content.decode()
    assert "Nothing has been built yet" not in html and "1 of 4 references trained, 0 ranked" in html


@pytest.mark.django_db
def test_rank_prints_the_time_left_with_each_progress_line() -> None:
    suite = _suite(uploads=1)
    _history(suite.benchmark, S.ATTACKING, (200.0,))
    _history(suite.benchmark, S.CROSS_EVALUATING, (30.0,))
    net = _running_upload(suite, spent=30.0)
    out = io.StringIO()
    RankCommand(stdout=out).progress_printer(net.pk)(net.pk, S.ATTACKING, 30, "attack step 3 of 40")
    left = format_duration(200.0 - 30.0 + 30.0)  # the attack's median less 30 s spent, then the cross stage
    assert out.getvalue().strip() == f"[ 30%] attacking: attack step 3 of 40 · {left} left"
