"""The pages in a real browser (Debian's chromium through Playwright), over synthetic data.

Every request the browser makes is recorded: none may leave the live server. Each
page is saved as a screenshot at desktop and phone width under
test-artifacts/screenshots/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import User

from leaderboard.gallery import GALLERY_SIZE
from leaderboard.models import Network
from tests.conftest import need
from tests.fakes import fake_suite

# Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run
# inside one unless told it is fine (the test thread never shares it with async code).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--mute-audio",
]


@pytest.fixture(scope="module")
def chrome():
    need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()




class Session:
    """A browser context plus everything it requested and every console error."""

    def __init__(self, browser, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.set_default_timeout(15000)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def go(self, path: str):
        response = self.page.goto(self.base + path)
        assert response is not None and response.status < 400, (path, response and response.status)
        return response

    def login(self, username: str, password: str) -> None:
        self.go("/accounts/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        with self.page.expect_navigation():
            self.page.click("form button[type=submit]:has-text('Log in')")

    def shoot(self, name: str) -> None:
        """Screenshots at desktop and phone width (full page)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        for label, (w, h) in WIDTHS.items():
            self.page.set_viewport_size({"width": w, "height": h})
            self.page.wait_for_timeout(350)  # let responsive plots re-layout
            self.page.screenshot(path=str(SHOTS / f"{name}-{w}.png"), full_page=True)
        self.page.set_viewport_size({"width": 1280, "height": 800})

    def foreign_requests(self) -> list[str]:
        host = urlparse(self.base).netloc
        return [u for u in self.requests
                if not u.startswith(("data:", "blob:", "about:")) and urlparse(u).netloc != host]


@pytest.fixture
def session(chrome, live_server):
    s = Session(chrome, live_server.url)
    yield s
    s.context.close()
    assert s.requests, "the browser made no request at all"
    assert s.foreign_requests() == [], "requests left the machine"
    assert s.errors == [], f"JavaScript errors: {s.errors}"


@pytest.fixture
def alice(transactional_db) -> User:
    return User.objects.create_user("alice", password="pw-alice-123")


def _wait_plot(page, selector: str) -> None:
    page.wait_for_selector(f"{selector} svg.main-svg", state="attached")
    assert page.locator(f"{selector} .heatmaplayer image, {selector} .hm image, {selector} .heatmaplayer").count() > 0


# --------------------------------------------------------------------------- tests


def test_leaderboard_lists_references_with_levels(session) -> None:
    suite = fake_suite(references=4, uploads=3)
    session.go("/")
    page = session.page
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 7
    for ref in suite.references:
        ref.refresh_from_db()
        row = page.locator(f"#leaderboard tr[data-id='{ref.pk}']")
        assert "reference" in row.inner_text()
        assert row.locator("td.level .level-n").inner_text().strip() == str(ref.level)
        assert row.locator(".glyph i").count() == 4
    # Sorting by name (client-side), then back by level.
    page.click("#leaderboard thead th:nth-child(2) button")
    names = [t.strip() for t in page.locator("#leaderboard tbody td.name a").all_inner_texts()]
    assert names == sorted(names, key=str.lower)
    page.click("#leaderboard thead th:nth-child(3) button")
    session.shoot("leaderboard")
    page.click("text=References only")
    page.wait_for_url("**/?kind=references")
    assert page.locator("#leaderboard tbody tr").count() == 4


def test_network_page_heatmaps_and_gallery(session) -> None:
    suite = fake_suite(references=4, uploads=2)
    net = suite.uploads[1]
    images: dict[str, tuple[int, str]] = {}
    session.page.on("response", lambda r: images.__setitem__(r.url, (r.status, r.headers.get("content-type", "")))
                    if "/gallery/" in r.url else None)
    session.go(f"/networks/{net.pk}/")
    page = session.page
    for key in ("clean", "universal", "own", "other"):
        _wait_plot(page, f"#plot-{key}")
    assert "robust than" in page.locator("p.deciding").inner_text()
    assert page.locator("table.comparisons tbody tr").count() == 4
    # Another network's attack: the select redraws the fourth heatmap.
    options = page.locator("#other-attack option")
    assert options.count() >= 4
    page.select_option("#other-attack", index=options.count() - 1)
    page.wait_for_function(
        "name => { const t = document.querySelector('#plot-other .gtitle'); return t && t.textContent.includes(name); }",
        arg=options.nth(options.count() - 1).inner_text().strip(),
    )
    # Gallery images load (lazy: scroll them into view).
    gallery = page.locator(".gallery img")
    assert gallery.count() == 3 * GALLERY_SIZE
    for i in range(gallery.count()):
        gallery.nth(i).scroll_into_view_if_needed()
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.gallery img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert len(images) == 3 * GALLERY_SIZE
    assert all(status == 200 and ctype == "image/png" for status, ctype in images.values()), images
    page.evaluate("window.scrollTo(0, 0)")
    session.shoot("network")


def test_matrix_and_benchmark_pages(session) -> None:
    fake_suite(references=4, uploads=3)
    session.go("/matrix/")
    _wait_plot(session.page, "#plot-matrix")
    assert session.page.locator("table.matrix tbody tr").count() == 7
    session.shoot("matrix")
    session.go("/benchmark/")
    page = session.page
    assert page.locator("table.ladder tbody tr").count() == 4
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.samples img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    session.shoot("benchmark")


def test_login_and_upload_junk_shows_reason(session, alice, tmp_path) -> None:
    fake_suite(references=2)
    session.go("/accounts/login/")
    session.shoot("login")
    session.login("alice", "pw-alice-123")
    assert "alice" in session.page.locator("header .account").inner_text()
    session.go("/networks/upload/")
    page = session.page
    junk = tmp_path / "model.zip"
    junk.write_bytes(b"this is not an archive at all")
    page.fill("#id_name", "junk net")
    page.fill("#id_description", "should be refused")
    page.set_input_files("#id_archive", str(junk))
    with page.expect_navigation():
        page.click("#upload-form button[type=submit]")
    error = page.locator(".field.has-error .error")
    assert "not a .zip or .tar.gz archive" in error.inner_text()
    assert page.input_value("#id_name") == "junk net"
    assert not Network.objects.filter(name="junk net").exists()
    session.shoot("upload")
    session.go("/accounts/profile/")
    session.shoot("profile")


def test_rejected_network_shows_reason(session, alice) -> None:
    suite = fake_suite(references=2)
    net = Network.objects.create(benchmark=suite.benchmark, owner=alice, name="wrong shape",
                                 status=Network.Status.VALIDATING, progress=5)
    Network.objects.filter(pk=net.pk).update(
        status=Network.Status.REJECTED,
        reason="the signature takes float32 [None, 32, 32, 3]; this benchmark needs [batch, 8, 8, 1]",
    )
    session.login("alice", "pw-alice-123")
    session.go(f"/networks/{net.pk}/")
    reason = session.page.locator("#reason .reason").inner_text()
    assert "needs [batch, 8, 8, 1]" in reason
    session.shoot("rejected")


def test_running_network_updates_live_and_reloads_when_ranked(session, alice) -> None:
    suite = fake_suite(references=3, uploads=1, owner=alice)
    net = suite.uploads[0]
    net.refresh_from_db()
    level = net.level
    Network.objects.filter(pk=net.pk).update(status=Network.Status.ATTACKING, progress=30, stage="attacking",
                                             level=None)
    session.login("alice", "pw-alice-123")
    session.go(f"/networks/{net.pk}/")
    page = session.page
    assert page.get_attribute("#live-bar", "aria-valuenow") == "30"
    session.shoot("running")
    Network.objects.filter(pk=net.pk).update(status=Network.Status.CROSS_EVALUATING, progress=80,
                                             stage="on the attack of ref-2 (2 of 3)")
    page.wait_for_function("document.querySelector('#live-bar').getAttribute('aria-valuenow') === '80'")
    assert page.locator("#live-status").inner_text() == "cross-evaluating"
    assert page.locator("#live-stage").inner_text() == "on the attack of ref-2 (2 of 3)"
    Network.objects.filter(pk=net.pk).update(status=Network.Status.RANKED, progress=100, stage="ranked", level=level)
    page.wait_for_selector(".level-card #level", timeout=15000)
    assert page.locator("#live").count() == 0
    assert page.locator(".level-card #level").inner_text().strip() == str(level)


def test_phone_width_has_no_horizontal_page_scroll(session) -> None:
    suite = fake_suite(references=4, uploads=2)
    session.page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", f"/networks/{suite.uploads[0].pk}/", "/matrix/", "/benchmark/", "/accounts/login/"):
        session.go(path)
        session.page.wait_for_timeout(200)
        overflow = session.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)


def test_benchmark_generalisation_section_draws_its_plots(session) -> None:
    """Issue 15, part 3: two built-in ladders compared, both Plotly figures drawn, nothing
    loaded from outside, no console error (the session fixture checks the last two)."""
    from tests.test_generalisation import ORDER_DIGITS, ORDER_MNIST, fake_builtin

    fake_builtin("mnist-5k", ORDER_MNIST)
    fake_builtin("digits-8x8", ORDER_DIGITS)
    session.go("/benchmark/#generalisation")
    page = session.page
    page.wait_for_selector("#plot-generalisation-ladders svg.main-svg", state="attached")
    assert page.locator("#plot-generalisation-ladders .scatterlayer .trace").count() == len(ORDER_MNIST)
    _wait_plot(page, "#plot-generalisation-tau")
    assert page.locator("table.generalisation tbody tr").count() == len(ORDER_MNIST)
    assert "mnist-5k against digits-8x8" in page.locator("#generalisation").inner_text()
    page.locator("#generalisation").scroll_into_view_if_needed()
    session.shoot("benchmark-generalisation")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
