"""The researcher features of issue 14 in a real browser (Debian's chromium through
Playwright, the fixtures of tests/test_browser.py): the model card round trip, filters
and sort order kept in the URL while navigating, a download parsed, and the answer to a
duplicate upload. Nothing may leave the live server; no JavaScript error is allowed.
"""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import parse_qs, urlparse

import pytest

from leaderboard.models import Network
from tests.fakes import fake_suite, stub_zip
from tests.test_browser import alice, chrome, session  # noqa: F401 - fixtures used by name

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def no_broker(monkeypatch):
    """Uploads are stored and queued, but nothing is sent to a worker."""
    sent = []
    monkeypatch.setattr("evaluator.services.lifecycle.pipeline_enqueue", lambda network: sent.append(network.pk))
    monkeypatch.setattr("evaluator.services.lifecycle._send", lambda name, *args: None)
    return sent


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


def _row_ids(page) -> list[int]:
    return [int(x) for x in page.locator("#leaderboard tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)")]


def test_model_card_round_trip(session, alice, no_broker, tmp_path) -> None:
    from playwright.sync_api import expect

    fake_suite(references=2)
    archive = tmp_path / "model.zip"
    archive.write_bytes(stub_zip())
    session.login("alice", "pw-alice-123")
    session.go("/networks/upload/")
    page = session.page
    page.fill("#id_name", "carded net")
    page.set_input_files("#id_archive", str(archive))
    page.fill("#id_paper_url", "https://arxiv.org/abs/1706.06083")
    page.fill("#id_training_data", "MNIST train <b>60k</b>")
    page.fill("#id_architecture", "Keras 3 CNN")
    page.select_option("#id_threat_norm", "linf")
    page.fill("#id_threat_epsilon", "0.3")
    page.fill("#id_description", "adversarially trained")
    with page.expect_navigation():
        page.click("#upload-form button[type=submit]")
    net = Network.objects.get(name="carded net")
    assert page.url.endswith(f"/networks/{net.pk}/") and no_broker == [net.pk]
    card = page.locator("#model-card")
    link = card.locator("a.card-link")
    assert link.get_attribute("href") == "https://arxiv.org/abs/1706.06083"
    assert link.get_attribute("rel") == "nofollow noopener"
    text = card.inner_text()
    assert "MNIST train <b>60k</b>" in text  # shown as typed, never as markup
    assert card.locator("b").count() == 0
    assert "L∞, ε = 0.3" in text and "Keras 3 CNN" in text
    session.shoot("network-model-card")

    # On the leaderboard: hidden until hovered or focused.
    session.go("/")
    page.mouse.move(0, 0)  # away from wherever the last click left the pointer
    pop = page.locator(f"#card-{net.pk}")
    # expect(...) waits for the page's script (up to 5 s): a bare is_visible() right after
    # a key press raced it on a busy machine.
    expect(pop).to_be_hidden()
    page.hover(f"tr[data-id='{net.pk}'] .card-btn")
    expect(pop).to_be_visible()
    assert "L∞, ε = 0.3" in pop.inner_text() and "adversarially trained" in pop.inner_text()
    session.shoot("leaderboard-model-card")
    # The full-page screenshot resizes the viewport; point at the button again so the
    # card's :hover state is current before Escape dismisses it.
    page.hover(f"tr[data-id='{net.pk}'] .card-btn")
    page.keyboard.press("Escape")
    expect(pop).to_be_hidden()
    page.mouse.move(0, 0)
    page.focus(f"tr[data-id='{net.pk}'] .card-btn")  # keyboard users get it on focus
    expect(pop).to_be_visible()
    page.keyboard.press("Escape")
    expect(pop).to_be_hidden()
    page.locator("#f-q").focus()
    page.click(f"tr[data-id='{net.pk}'] .card-btn")  # and on click
    assert page.get_attribute(f"tr[data-id='{net.pk}'] .card-btn", "aria-expanded") == "true"

    # The owner edits it later.
    session.go(f"/networks/{net.pk}/")
    with page.expect_navigation():
        page.click("#edit-card")
    assert page.input_value("#id_training_data") == "MNIST train <b>60k</b>"
    page.fill("#id_training_data", "MNIST train, eval split excluded")
    page.fill("#id_paper_url", "javascript:alert(1)")
    with page.expect_navigation():
        page.click("#card-form button[type=submit]")
    assert "http:// or https://" in page.locator("#card-fields .error").inner_text()
    page.fill("#id_paper_url", "https://github.com/example/model")
    with page.expect_navigation():
        page.click("#card-form button[type=submit]")
    assert "MNIST train, eval split excluded" in page.locator("#model-card").inner_text()
    net.refresh_from_db()
    assert net.paper_url == "https://github.com/example/model"


def test_filters_and_sort_stay_in_the_url_while_navigating(session) -> None:
    suite = fake_suite(references=4, uploads=8)
    page = session.page
    session.go("/")
    page.fill("#f-q", "upload")
    page.fill("#f-level-min", "1")
    with page.expect_navigation():
        page.press("#f-q", "Enter")
    assert _query(page.url) == {"q": ["upload"], "level_min": ["1"], "sort": ["level"]}  # no empty fields
    expected = [n.pk for n in Network.objects.filter(pk__in=[u.pk for u in suite.uploads], level__gte=1)]
    shown = _row_ids(page)
    assert sorted(shown) == sorted(expected) and 0 < len(shown) < len(suite.uploads) + 4
    # A tab keeps the search and the level range.
    with page.expect_navigation():
        page.click("nav.tabs a:has-text('Uploads only')")
    assert _query(page.url)["q"] == ["upload"] and _query(page.url)["level_min"] == ["1"]
    assert _query(page.url)["kind"] == ["uploads"]
    # A column header sorts the rows and writes the order into the URL and the links.
    page.click("#leaderboard thead th[data-sort-key='clean'] button")
    page.wait_for_function("location.search.includes('sort=clean')")
    assert _query(page.url)["order"] == ["desc"]
    clean = [float(v) for v in page.locator("#leaderboard tbody td:nth-child(6)").evaluate_all(
        "cs => cs.map(c => c.dataset.sort)")]
    assert clean == sorted(clean, reverse=True)
    assert "sort=clean" in page.get_attribute("#export-leaderboard-csv", "href")
    ordered = _row_ids(page)
    session.shoot("leaderboard-filtered")
    # To a network page and back: the same view.
    with page.expect_navigation():
        page.click(f"#leaderboard tr[data-id='{ordered[0]}'] td.name a")
    page.go_back()
    assert _query(page.url)["sort"] == ["clean"] and _query(page.url)["q"] == ["upload"]
    page.reload()
    assert _row_ids(page) == ordered  # the server sorts the same way
    assert page.input_value("#f-q") == "upload" and page.input_value("#f-level-min") == "1"
    assert page.input_value("#f-sort") == "clean"
    assert page.get_attribute("#leaderboard thead th[data-sort-key='clean']", "aria-sort") == "descending"


def test_leaderboard_download_is_parsed(session) -> None:
    suite = fake_suite(references=3, uploads=3)
    page = session.page
    session.go("/?kind=uploads")
    with page.expect_download() as info:
        page.click("#export-leaderboard-csv")
    download = info.value
    assert download.suggested_filename == "leaderboard-mnist-5k.csv"
    rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    assert [int(r["id"]) for r in rows] == _row_ids(page)
    assert {int(r["id"]) for r in rows} == {u.pk for u in suite.uploads}
    for row in rows:
        net = Network.objects.get(pk=int(row["id"]))
        assert row["name"] == net.name and int(row["level"]) == net.level
        assert abs(float(row["clean_accuracy"]) - net.clean_accuracy) < 1e-9
        assert abs(float(row["whitebox_low"]) - net.whitebox_low) < 1e-9
    session.go("/matrix/")
    with page.expect_download() as info:
        page.click("#export-matrix-csv")
    table = list(csv.reader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert info.value.suggested_filename == "matrix-mnist-5k.csv"
    assert len(table) == 1 + 6 and all(len(line) == 2 + 6 for line in table)


def test_duplicate_upload_is_answered_with_a_link(session, alice, no_broker, tmp_path) -> None:
    fake_suite(references=2)
    archive = tmp_path / "model.zip"
    archive.write_bytes(stub_zip())
    session.login("alice", "pw-alice-123")
    page = session.page
    for name in ("first copy", "second copy"):
        session.go("/networks/upload/")
        page.fill("#id_name", name)
        page.set_input_files("#id_archive", str(archive))
        with page.expect_navigation():
            page.click("#upload-form button[type=submit]")
    first = Network.objects.get(name="first copy")
    assert not Network.objects.filter(name="second copy").exists()
    error = page.locator(".field.has-error .error")
    assert "already on the leaderboard" in error.inner_text()
    session.shoot("upload-duplicate")
    with page.expect_navigation():
        page.click("#duplicate-link")
    assert re.search(rf"/networks/{first.pk}/$", page.url)
