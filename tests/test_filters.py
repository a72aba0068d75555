"""Search, filters and sort order of the leaderboard (issue 14): leaderboard.filters,
the page's GET form and links, and the same parameters on the JSON API. Every answer is
checked against an independent reading of the Network rows.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone

from leaderboard import filters
from leaderboard.filters import BoardFilters, filters_parse
from leaderboard.models import Network
from tests.fakes import fake_network, fake_suite

pytestmark = pytest.mark.django_db

S = Network.Status


@pytest.fixture
def board(db):
    """4 references, 6 uploads of alice and bob (one of bob's private), flags on two."""
    alice = User.objects.create_user("alice", password="pw-alice-123")
    bob = User.objects.create_user("Bob", password="pw-bob-123")
    suite = fake_suite(references=4)
    peers = list(suite.references)
    for j, (name, owner, public) in enumerate([("mnist-cnn", alice, True), ("Wide ResNet", alice, True),
                                               ("resnet-tiny", bob, True), ("bob secret", bob, False),
                                               ("madry-adv", bob, True), ("plain", None, True)]):
        peers.append(fake_network(suite.benchmark, suite.labels, name=name, owner=owner, is_public=public,
                                  strength=(j % 5 + 0.5) / 5, peers=list(peers), seed=300 + j))
    from evaluator.services.ranking import benchmark_rank

    benchmark_rank(benchmark=suite.benchmark)
    Network.objects.update(flags=[])
    # Stored results without an audit have no robust accuracy: give all but one a value.
    for i, pk in enumerate(Network.objects.order_by("pk").values_list("pk", flat=True)):
        Network.objects.filter(pk=pk).update(robust_accuracy=None if i == 3 else (i * 37 % 11) / 20)
    Network.objects.filter(name="mnist-cnn").update(flags=["gradient-masking"])
    Network.objects.filter(name="resnet-tiny").update(flags=["probabilities", "low-accuracy"])
    suite.benchmark.refresh_from_db()
    return suite.benchmark, alice, bob


def _all(bench, user=None) -> list[Network]:
    """The unfiltered board, in its order (the reference for every filter)."""
    return [n for n, _ in filters.board_networks(user=user or AnonymousUser(), benchmark=bench,
                                                 filters=BoardFilters())]


def _ids(bench, user=None, **params) -> list[int]:
    chosen, errors = filters_parse(params)
    assert errors == {}
    return [n.pk for n, _ in filters.board_networks(user=user or AnonymousUser(), benchmark=bench, filters=chosen)]


def _rows(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr class="[^"]*" data-id="(\d+)"', html)]


# --------------------------------------------------------------------------- parsing


def test_parse_defaults_and_reasons_for_bad_values() -> None:
    assert filters_parse({}) == (BoardFilters(), {})
    chosen, errors = filters_parse({"q": "  res   net ", "level_min": "2", "level_max": "5", "flag": "flagged",
                                    "owner": " alice ", "kind": "uploads", "sort": "robust", "order": "asc"})
    assert errors == {}
    assert chosen == BoardFilters(q="res net", level_min=2, level_max=5, flag="flagged", owner="alice",
                                  kind="uploads", sort="robust", order="asc")
    assert chosen.params() == {"q": "res net", "kind": "uploads", "level_min": "2", "level_max": "5",
                               "flag": "flagged", "owner": "alice", "sort": "robust", "order": "asc"}
    chosen, errors = filters_parse({"level_min": "two", "level_max": "-1", "sort": "magic", "order": "up",
                                    "kind": "x", "flag": "evil", "q": "x" * 101})
    assert set(errors) == {"level_min", "level_max", "sort", "order", "kind", "flag", "q"}
    assert chosen == BoardFilters()  # every bad value ignored
    chosen, errors = filters_parse({"level_min": "5", "level_max": "2"})
    assert "level_max" in errors and chosen.level_min is None and chosen.level_max is None


# --------------------------------------------------------------------------- each filter


def test_search_is_a_case_insensitive_substring_of_the_name(board) -> None:
    bench, *_ = board
    everyone = _all(bench)
    expected = [n.pk for n in everyone if "resnet" in n.name.lower()]
    assert len(expected) == 2  # "Wide ResNet", "resnet-tiny"; "bob secret" is private
    assert _ids(bench, q="RESNET") == expected
    assert _ids(bench, q="no such thing") == []


def test_level_range_keeps_ranked_networks_inside_it(board) -> None:
    bench, *_ = board
    everyone = _all(bench)
    levels = sorted({n.level for n in everyone if n.status == S.RANKED})
    assert len(levels) >= 2
    low, high = levels[0], levels[-1] - (1 if len(levels) > 2 else 0)
    expected = [n.pk for n in everyone if n.status == S.RANKED and low <= n.level <= high]
    assert _ids(bench, level_min=str(low), level_max=str(high)) == expected
    assert _ids(bench, level_min=str(levels[-1])) == [n.pk for n in everyone if n.level == levels[-1]]
    assert _ids(bench, level_max=str(levels[0])) == [n.pk for n in everyone if n.level == levels[0]]
    assert 0 < len(expected) < len(everyone) or low == high


def test_level_filter_leaves_out_networks_without_a_level(board) -> None:
    bench, *_ = board
    running = Network.objects.get(name="plain")
    Network.objects.filter(pk=running.pk).update(status=S.ATTACKING)  # keeps its stale level
    assert running.pk in _ids(bench)
    assert running.pk not in _ids(bench, level_min="0")


def test_flag_filters(board) -> None:
    bench, *_ = board
    everyone = _all(bench)
    assert _ids(bench, flag="flagged") == [n.pk for n in everyone if n.flags]
    assert len(_ids(bench, flag="flagged")) == 2
    assert _ids(bench, flag="unflagged") == [n.pk for n in everyone if not n.flags]
    assert _ids(bench, flag="probabilities") == [Network.objects.get(name="resnet-tiny").pk]
    assert _ids(bench, flag="memorisation") == []


def test_owner_filter_and_kind(board) -> None:
    bench, alice, bob = board
    everyone = _all(bench)
    assert _ids(bench, owner="ALICE") == [n.pk for n in everyone if n.owner_id == alice.pk]
    # bob's private network only for bob
    assert Network.objects.get(name="bob secret").pk not in _ids(bench, owner="bob")
    mine = _ids(bench, user=bob, owner="bob")
    assert Network.objects.get(name="bob secret").pk in mine and len(mine) == 3
    assert _ids(bench, kind="references") == [n.pk for n in everyone if n.is_reference]
    assert _ids(bench, kind="uploads", owner="alice", q="wide") == [Network.objects.get(name="Wide ResNet").pk]


@pytest.mark.parametrize("sort, field, default", [
    ("robust", "robust_accuracy", "desc"), ("clean", "clean_accuracy", "desc"), ("score", "score", "desc"),
    ("whitebox", "whitebox_accuracy", "desc"), ("universal", "universal_accuracy", "desc"),
    ("name", "name", "asc"), ("newest", "created_at", "desc"),
])
def test_sort_orders(board, sort, field, default) -> None:
    bench, *_ = board
    everyone = _all(bench)
    key = (lambda n: n.name.casefold()) if field == "name" else (lambda n: getattr(n, field))
    for order in ("asc", "desc"):
        ids = _ids(bench, sort=sort, order=order)
        values = [key(Network.objects.get(pk=pk)) for pk in ids]
        assert sorted(ids) == sorted(n.pk for n in everyone)
        measured = [v for v in values if v is not None]
        # Networks without the value go last, in either direction.
        assert values == measured + [None] * (len(values) - len(measured))
        assert measured == sorted(measured, reverse=order == "desc"), (sort, order, values)
        assert len(set(measured)) > 2
    assert _ids(bench, sort=sort) == _ids(bench, sort=sort, order=default)


def test_ranks_are_those_of_the_whole_board(board) -> None:
    bench, *_ = board
    full = {n.pk: rank for n, rank in filters.board_networks(user=AnonymousUser(), benchmark=bench,
                                                             filters=BoardFilters())}
    assert sorted(r for r in full.values() if r) == list(range(1, sum(1 for r in full.values() if r) + 1))
    chosen, _ = filters_parse({"q": "res", "sort": "name"})
    for network, rank in filters.board_networks(user=AnonymousUser(), benchmark=bench, filters=chosen):
        assert rank == full[network.pk]


# --------------------------------------------------------------------------- the page and the API


def test_page_applies_filters_and_every_link_keeps_them(client, board) -> None:
    bench, *_ = board
    html = client.get("/?q=res&sort=name&order=desc&flag=unflagged").content.decode()
    assert _rows(html) == _ids(bench, q="res", sort="name", order="desc", flag="unflagged")
    assert len(_rows(html)) == 1
    # The form shows what was asked; the tabs and the downloads keep it.
    assert 'name="q" value="res"' in html
    assert re.search(r'<option value="name" selected>', html) and re.search(r'<option value="desc" selected>', html)
    tabs = re.findall(r'<nav class="tabs".*?</nav>', html, flags=re.S)[0]
    for href in re.findall(r'href="([^"]+)"', tabs):
        assert "q=res" in href and "sort=name" in href and "order=desc" in href and "flag=unflagged" in href
    uploads_tab = re.search(r'<a href="\?([^"]+)"[^>]*>Uploads only', tabs).group(1)
    assert parse_qs(uploads_tab.replace("&amp;", "&")) == {
        "q": ["res"], "kind": ["uploads"], "flag": ["unflagged"], "sort": ["name"], "order": ["desc"]}
    csv_link = re.search(r'href="([^"]+)" id="export-leaderboard-csv"', html).group(1)
    assert csv_link.startswith(f"/api/benchmarks/{bench.name}/leaderboard.csv?") and "q=res" in csv_link
    assert "1 of 9 networks match" in re.sub(r"<[^>]+>", "", html)
    assert 'id="filters-reset"' in html


def test_page_says_when_nothing_matches_and_what_was_ignored(client, board) -> None:
    html = client.get("/?q=zzz&level_min=abc").content.decode()
    assert 'id="no-match"' in html and "show them all" in html
    assert 'id="filter-errors"' in html and "level_min must be a whole number" in html


def test_pager_links_keep_the_filters(client, board) -> None:
    bench, *_ = board
    Network.objects.bulk_create(Network(benchmark=bench, name=f"bulk-{i:03d}", status=S.RANKED, level=1,
                                        score=float(i)) for i in range(120))
    html = client.get("/?q=bulk&sort=score&order=asc").content.decode()
    shown = _rows(html)
    assert len(shown) == 100
    assert [Network.objects.get(pk=pk).score for pk in shown] == [float(i) for i in range(100)]
    assert 'href="?q=bulk&amp;sort=score&amp;order=asc&amp;page=2" rel="next"' in html
    page2 = client.get("/?q=bulk&sort=score&order=asc&page=2").content.decode()
    assert [Network.objects.get(pk=pk).score for pk in _rows(page2)] == [float(i) for i in range(100, 120)]


def test_last_updated_is_the_latest_ranking(client, board) -> None:
    bench, *_ = board
    when = timezone.now() - timedelta(hours=3)
    type(bench).objects.filter(pk=bench.pk).update(ranked_at=when)
    html = client.get("/").content.decode()
    stamp = re.search(r'id="last-updated">Last updated <time datetime="([^"]+)">', html)
    assert stamp and datetime.fromisoformat(stamp.group(1)) == when
    assert "3\xa0hours ago" in html
    assert client.get("/api/leaderboard").json()["last_updated"] == when.isoformat()


def test_api_takes_the_same_parameters(client, board) -> None:
    bench, alice, _ = board
    params = {"q": "n", "owner": "alice", "sort": "clean", "order": "asc"}
    data = client.get("/api/leaderboard", params).json()
    assert [r["id"] for r in data["networks"]] == _ids(bench, **params)
    assert data["filters"] == params and data["count"] == len(data["networks"]) == 2
    page = client.get("/", params).content.decode()
    assert [r["id"] for r in data["networks"]] == _rows(page)
    ranks = {n.pk: r for n, r in filters.board_networks(user=AnonymousUser(), benchmark=bench,
                                                        filters=BoardFilters())}
    assert all(r["rank"] == ranks[r["id"]] for r in data["networks"])
    response = client.get("/api/leaderboard", {"level_min": "x", "sort": "magic"})
    assert response.status_code == 400
    assert set(response.json()["parameters"]) == {"level_min", "sort"}
