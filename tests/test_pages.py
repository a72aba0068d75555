"""The benchmark-wide pages over synthetic stored results (tests.fakes: no TensorFlow):
leaderboard, cross-attack matrix, benchmark page."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import AnonymousUser, User
from PIL import Image

from leaderboard import filters, selectors
from leaderboard.models import Benchmark, Network
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db


def _text(response) -> str:
    return response.content.decode()


# --------------------------------------------------------------------------- leaderboard


def test_leaderboard_lists_networks_with_levels_and_intervals(client) -> None:
    suite = fake_suite(references=4, uploads=3)
    response = client.get("/")
    assert response.status_code == 200
    html = _text(response)
    for net in [*suite.references, *suite.uploads]:
        net.refresh_from_db()
        assert f'href="/networks/{net.pk}/"' in html
        assert net.name in html
    ref = suite.references[-1]
    ref.refresh_from_db()
    assert ref.level is not None
    # References are marked with their rung; levels carry the ladder glyph.
    assert html.count('class="badge ref"') >= 4
    assert re.search(r"reference R\d", html)
    assert 'class="glyph"' in html and f'title="level {ref.level} of 4"' in html
    # Intervals beside every accuracy; robustness with its tier.
    assert 'title="95% Wilson interval"' in html
    assert f"{ref.clean_low * 100:.1f}–{ref.clean_high * 100:.1f}" in html
    assert f"tier {ref.universal_tier}" in html
    # Sortable without losing the no-JS table order.
    assert 'class="board sortable"' in html and "data-sort=" in html
    assert "Plotly" not in html  # the leaderboard loads no plotting library


def test_leaderboard_rows_follow_the_ranking(client) -> None:
    suite = fake_suite(references=3, uploads=3)
    html = _text(client.get("/"))
    expected = [n.pk for n in filters.leaderboard_networks(user=AnonymousUser(), benchmark=suite.benchmark)]
    shown = [int(m) for m in re.findall(r'<tr class="[^"]*" data-id="(\d+)"', html)]
    assert shown == expected


def test_leaderboard_is_paginated_with_ranks_counted_across_pages(client) -> None:
    suite = fake_suite(references=3)
    Network.objects.bulk_create(
        Network(benchmark=suite.benchmark, name=f"bulk-{i:03d}", status=Network.Status.RANKED,
                level=1 + i % 3, score=float(i))
        for i in range(230)
    )
    expected = [n.pk for n in filters.leaderboard_networks(user=AnonymousUser(), benchmark=suite.benchmark)]
    assert len(expected) == 233
    pages, ranks = [], []
    for number in (1, 2, 3):
        html = _text(client.get(f"/?page={number}"))
        pages.append([int(m) for m in re.findall(r'<tr class="[^"]*" data-id="(\d+)"', html)])
        ranks.append([int(r) for r in re.findall(r'class="num rank" data-sort="(\d+)"', html)])
    assert [len(p) for p in pages] == [100, 100, 33]
    assert pages[0] + pages[1] + pages[2] == expected  # every network once, in ranking order
    assert ranks[1] == list(range(101, 201)) and ranks[2] == list(range(201, 234))
    html = _text(client.get("/?page=2"))
    assert "Networks 101–200 of 233 · page 2 of 3" in html
    assert 'href="?page=1" rel="prev"' in html and 'href="?page=3" rel="next"' in html
    # Links keep the filter; out-of-range and junk page numbers fall back to a real page.
    html = _text(client.get("/?kind=uploads&page=2"))
    assert 'href="?kind=uploads&amp;page=3" rel="next"' in html
    assert "of 230 · page 2 of 3" in html
    assert "page 3 of 3" in _text(client.get("/?page=99"))
    assert "page 1 of 3" in _text(client.get("/?page=abc"))
    # One page only: no pager at all.
    assert 'class="pager"' not in _text(client.get("/?kind=references"))


def test_leaderboard_filters_references_and_uploads(client) -> None:
    suite = fake_suite(references=3, uploads=2)
    refs = _text(client.get("/?kind=references"))
    ups = _text(client.get("/?kind=uploads"))
    for net in suite.references:
        assert f'/networks/{net.pk}/"' in refs and f'/networks/{net.pk}/"' not in ups
    for net in suite.uploads:
        assert f'/networks/{net.pk}/"' in ups and f'/networks/{net.pk}/"' not in refs
    assert client.get("/?kind=bogus").status_code == 200


def test_leaderboard_shows_running_network_with_progress(client, alice) -> None:
    suite = fake_suite(references=2, uploads=1, owner=alice)
    Network.objects.filter(pk=suite.uploads[0].pk).update(status=Network.Status.ATTACKING, progress=37,
                                                          stage="attacking: 40 steps", level=None)
    html = _text(client.get("/"))
    assert 'aria-valuenow="37"' in html and "width: 37%" in html
    assert "attacking: 40 steps" in html
    Network.objects.filter(pk=suite.uploads[0].pk).update(status=Network.Status.VALIDATING, stage="queued")
    html = _text(client.get("/"))
    assert '<span class="status-text">validating</span> <span' not in html  # a stale stage is not shown
    assert 'data-poll="/api/leaderboard"' in html


def test_leaderboard_while_benchmark_missing_or_building(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "being set up" in _text(response)
    Benchmark.objects.create(name="mnist-5k", state=Benchmark.State.BUILDING,
                             stage="training reference down50", progress=42)
    html = _text(client.get("/"))
    assert "being built" in html and "training reference down50" in html and "42%" in html
    for page in ("/matrix/", "/benchmark/"):
        assert client.get(page).status_code == 200


def test_unknown_benchmark_is_404_but_friendly(client) -> None:
    fake_suite(references=2)
    response = client.get("/?benchmark=nope")
    assert response.status_code == 404
    assert "Back to the leaderboard" in _text(response)


def test_second_benchmark_selectable(client) -> None:
    fake_suite(references=2)
    other = fake_suite(references=2, name="other-bench")
    html = _text(client.get("/?benchmark=other-bench"))
    assert 'name="benchmark"' in html and '<option value="other-bench" selected>' in html
    assert f'/networks/{other.references[0].pk}/"' in html


# --------------------------------------------------------------------------- matrix and benchmark


def test_matrix_page(client) -> None:
    suite = fake_suite(references=3, uploads=2)
    response = client.get("/matrix/")
    assert response.status_code == 200
    html = _text(response)
    assert 'id="fig-matrix"' in html and re.search(r"/static/vendor/plotly-cartesian\.min\.[0-9a-f]{12}\.js", html)
    assert "&#x27;s adversarial images" in html or "'s adversarial images" in html
    assert "pair_hover" in html and "customdata" in html
    table = html.split('class="matrix"')[1].split("</table>")[0]
    for net in [*suite.references, *suite.uploads]:
        assert net.name in table
    assert table.count("<tr") == 1 + 5
    # Ladder order: R1 first.
    ladder = suite.benchmark.ladder
    first = Network.objects.get(pk=ladder[0])
    assert re.search(rf"<th scope=\"row\"><a href=\"/networks/{first.pk}/\">R1 ", table)
    # The colours are the charter's transfer-only comparison, and the page says so (issue 12).
    assert "A is right on more of the same images" in html
    note = html.split("</table>")[1]
    assert "That is the charter rule (transfer only)" in note and "no longer decides levels" in note
    assert "is more robust than the column network" not in html


def test_benchmark_page(client) -> None:
    suite = fake_suite(references=3)
    response = client.get("/benchmark/")
    assert response.status_code == 200
    html = _text(response)
    for text in ("0.3", "0.01", "40", "ξ = 0.3", "100 train", "200 eval"):
        assert text in html, text
    table = html.split('class="ladder"')[1].split("</table>")[0]
    names = re.findall(r'<a href="/networks/\d+/">([^<]+)</a>', table)
    ladder_names = list(Network.objects.in_bulk(suite.benchmark.ladder).values())
    by_pk = {n.pk: n.name for n in ladder_names}
    assert names == [by_pk[pk] for pk in suite.benchmark.ladder]
    assert "Wilson" in table
    png = client.get("/benchmark/samples.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    Image.open(io.BytesIO(png.content)).load()
    # SPEC §2 Secrecy: the universal perturbations, page and image alike, to staff only.
    assert "/benchmark/universal.png" not in html
    assert client.get("/benchmark/universal.png").status_code == 403
    client.force_login(User.objects.create_user("root", is_staff=True))
    assert "/benchmark/universal.png" in _text(client.get("/benchmark/"))
    png = client.get("/benchmark/universal.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and "private" in png["Cache-Control"]
    Image.open(io.BytesIO(png.content)).load()


def _section(html: str) -> str:
    return html.split('id="validity"')[1].split("</section>")[0]


def test_benchmark_page_asks_whether_the_level_measures_robustness(client) -> None:
    """Issue 12: rank correlations of each ordering with robust accuracy, and the count of
    reference pairs the ladder orders against significantly different robust accuracies."""
    suite = fake_suite(references=3, uploads=3)
    bench = suite.benchmark
    Network.objects.filter(pk=suite.uploads[2].pk).update(is_public=False)  # private: left out
    nets = Network.objects.filter(benchmark=bench)
    nets.update(robust_accuracy=None, robust_low=None, robust_high=None)
    section = _section(_text(client.get("/benchmark/")))
    assert "Does the level measure robustness?" in section
    assert "Robust accuracy is not measured yet" in section and "Spearman" not in section

    # Measured, and rising up the ladder: every reference pair differs significantly and
    # the ladder agrees with each (Wilson intervals over the 200 eval images).
    for k, pk in enumerate(bench.ladder):
        Network.objects.filter(pk=pk).update(robust_accuracy=0.1 + 0.3 * k)
    for net in suite.uploads:
        net.refresh_from_db()
        Network.objects.filter(pk=net.pk).update(robust_accuracy=0.05 + 0.3 * net.level)
    section = _section(_text(client.get("/benchmark/")))
    assert "3 references and 2 public ranked uploads" in section
    rows = section.split("<tbody>")[1].split("</tbody>")[0]
    for name in ("level (revised rule)", "level (charter rule, transfer only)", "robustness score"):
        assert name in rows
    validity = selectors.benchmark_validity(benchmark=bench)
    level = validity["correlations"][0]
    assert level.networks == 5 and f"{level.spearman:.2f}" in rows and f"{level.kendall:.2f}" in rows
    assert "3 pairs): <strong>0</strong> (should be 0)" in section

    # The least robust rung made the most robust: the ladder now contradicts it twice.
    Network.objects.filter(pk=bench.ladder[0]).update(robust_accuracy=0.95)
    section = _section(_text(client.get("/benchmark/")))
    first, second, third = (Network.objects.get(pk=pk).name for pk in bench.ladder)
    assert "<strong>2</strong>:" in section
    assert f"{first} (R1) is more robust than {second} (R2)" in section
    assert f"{first} (R1) is more robust than {third} (R3)" in section


def test_level_explanations_state_the_revised_rule(client) -> None:
    fake_suite(references=3, uploads=1)
    board = _text(client.get("/"))
    assert "reaches at most level k − 1" in board and "computed against the rest of the ladder" not in board
    page = _text(client.get("/benchmark/"))
    ladder_note = page.split("<h2>The ladder")[1].split("</p>")[0]
    assert "compared on the same images" in ladder_note and "reaches at most level k − 1" in ladder_note
    assert "drawn with a secret of this deployment" in page


def test_plotly_is_served_from_our_static_files(client) -> None:
    from django.templatetags.static import static

    url = static("vendor/plotly-cartesian.min.js")
    assert re.fullmatch(r"/static/vendor/plotly-cartesian\.min\.[0-9a-f]{12}\.js", url)
    response = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    # Fingerprinted: cached for good, and sent compressed to a browser that asks for it.
    assert "immutable" in response["Cache-Control"] and "max-age=315360000" in response["Cache-Control"]
    assert response["Content-Encoding"] == "gzip"
    import gzip

    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"plotly" in gzip.decompress(body)[:2000].lower()
