"""Layout in a real browser (Debian's chromium): every page at 1280, 1440 and 390 px.

- No horizontal overflow: the page never scrolls sideways, no table is wider than its
  box and no cell's content spills out of it (the Status column was clipped at 1280).
  The one exception, by design, is the cross-attack matrix on a phone: it scrolls
  sideways inside its own box, with readable cells and every label.
- No word of a heading, table header or badge is broken across lines ("autoenco der").
- A page's title sits below the navigation bar, not on it.
- On a phone the leaderboard shows every number of every row on screen (cards).
- Every link to /methodology/#anchor points at an anchor the methodology page has.
- No console errors (the `session` fixture of tests/test_browser.py checks it).

The suite uses the real reference names (conv-autoencoder is the longest) and long
upload names, so widths are realistic.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from evaluator.engine.suite import REFERENCES
from evaluator.services.ranking import benchmark_rank
from leaderboard.models import Network
from tests.fakes import FakeSuite, fake_benchmark, fake_network
from tests.test_browser import Session, chrome, session  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = (1280, 1440, 390)
PHONE = 390

# Measured in the page: sideways overflow of the document, tables wider than their box,
# cells whose content spills out, and words split across two lines.
PROBE = r"""(allowScroll) => {
  const doc = document.scrollingElement;
  const out = {page: doc.scrollWidth - doc.clientWidth, tables: [], cells: [], broken: [], titleGap: null};
  const main = document.querySelector('main');
  for (const table of main.querySelectorAll('table')) {
    if (table.closest('.plot')) continue;
    const box = table.parentElement;
    const scrolls = allowScroll && table.matches(allowScroll);
    const over = table.getBoundingClientRect().width - box.clientWidth;
    if (over > 1 && !scrolls) out.tables.push([table.className || table.id, Math.round(over)]);
    if (scrolls) continue;
    for (const cell of table.querySelectorAll('th, td')) {
      if (cell.offsetParent === null) continue;
      if (cell.scrollWidth > cell.clientWidth + 1)
        out.cells.push([table.className, cell.textContent.trim().slice(0, 40), cell.scrollWidth - cell.clientWidth]);
    }
  }
  // A word broken across lines: its characters lie on more than one line box.
  const words = /[^\s\-–—/·…]+/g;
  for (const el of document.querySelectorAll('h1, h2, h3, th, .badge, nav a, button, .stat .label, .level-big .label')) {
    if (el.offsetParent === null) continue;
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      let m;
      while ((m = words.exec(node.data)) !== null) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (tops.size > 1) out.broken.push([el.tagName, m[0]]);
      }
    }
  }
  // The page's first block (crumbs or title) sits clear of the navigation bar.
  const bar = document.querySelector('header.site');
  const first = Array.from(main.children).find(el => el.offsetParent !== null && el.getBoundingClientRect().height > 0);
  if (bar && first) out.titleGap = Math.round(first.getBoundingClientRect().top - bar.getBoundingClientRect().bottom);
  return out;
}"""


def real_suite(owner: User) -> FakeSuite:
    """Ten references with the real names, two uploads with long names (one alice's)."""
    bench, labels = fake_benchmark("mnist-5k")
    nets: list[Network] = []
    for i, name in enumerate(REFERENCES):
        nets.append(fake_network(bench, labels, name=name, strength=(i + 1) / 11, is_reference=True,
                                 peers=nets, seed=i))
    suite = FakeSuite(benchmark=bench, labels=labels, references=list(nets))
    for j, (name, who) in enumerate((("wide-resnet-madry-pgd-ensemble", owner), ("baseline-cnn-v2", None))):
        net = fake_network(bench, labels, name=name, strength=0.45 + 0.4 * j, owner=who, peers=nets, seed=50 + j)
        nets.append(net)
        suite.uploads.append(net)
    benchmark_rank(benchmark=bench)
    suite.benchmark.refresh_from_db()
    return suite


@pytest.fixture
def alice(transactional_db) -> User:
    return User.objects.create_user("alice", password="pw-alice-123")


def pages(suite: FakeSuite) -> dict[str, str]:
    """The pages a signed-in user sees (login and signup are checked signed out)."""
    upload = next(n for n in suite.uploads if n.owner_id)
    return {
        "leaderboard": "/",
        "benchmark": "/benchmark/",
        "reference": f"/networks/{suite.references[6].pk}/",
        "upload page": f"/networks/{upload.pk}/",
        "matrix": "/matrix/",
        "upload form": "/networks/upload/",
        "profile": "/accounts/profile/",
        "methodology": "/methodology/",
        "not found": NOT_FOUND,
    }


NOT_FOUND = "/networks/999999/"


def visit(s: Session, path: str) -> None:
    before = len(s.errors)
    response = s.page.goto(s.base + path)
    assert response is not None
    if path == NOT_FOUND:
        assert response.status == 404
        # The browser reports the page's own 404 status as a console error; nothing else may fail.
        s.errors[before:] = [e for e in s.errors[before:] if "status of 404" not in e]
    else:
        assert response.status < 400, (path, response.status)
    if s.page.locator(".plot[data-figure]").count():
        s.page.wait_for_function(
            "Array.from(document.querySelectorAll('.plot[data-figure]')).every(p => p.querySelector('svg.main-svg'))")
    s.page.wait_for_timeout(150)


def check_layout(s: Session, where: str, width: int) -> None:
    allow = "table.matrix" if width == PHONE else None
    r = s.page.evaluate(PROBE, allow)
    assert r["page"] <= 0, f"{where} at {width}px scrolls sideways by {r['page']}px"
    assert r["tables"] == [], f"{where} at {width}px: tables wider than their box {r['tables']}"
    assert r["cells"] == [], f"{where} at {width}px: content spills out of cells {r['cells']}"
    assert r["broken"] == [], f"{where} at {width}px: words broken across lines {r['broken']}"
    if r["titleGap"] is not None:
        assert r["titleGap"] >= 12, f"{where} at {width}px: the title sits {r['titleGap']}px below the nav bar"


@pytest.mark.parametrize("width", WIDTHS)
def test_no_overflow_on_any_page(session, alice, width) -> None:  # noqa: F811
    suite = real_suite(alice)
    session.page.set_viewport_size({"width": width, "height": 900})
    for where, path in (("login", "/accounts/login/"), ("signup", "/accounts/signup/")):
        visit(session, path)
        check_layout(session, where, width)
    session.login("alice", "pw-alice-123")
    session.page.set_viewport_size({"width": width, "height": 900})
    for where, path in pages(suite).items():
        visit(session, path)
        check_layout(session, where, width)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def test_phone_leaderboard_shows_every_number(session, alice) -> None:  # noqa: F811
    suite = real_suite(alice)
    session.page.set_viewport_size({"width": PHONE, "height": 900})
    visit(session, "/")
    page = session.page
    nets = {n.pk: n for n in Network.objects.filter(benchmark=suite.benchmark)}
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == len(nets) == 12
    for i in range(rows.count()):
        row = rows.nth(i)
        n = nets[int(row.get_attribute("data-id"))]
        # Every cell that carries a number lies wholly on screen, its content unclipped.
        boxes = row.evaluate("""r => Array.from(r.querySelectorAll('td')).filter(td => getComputedStyle(td).display !== 'none')
            .map(td => { const b = td.getBoundingClientRect();
                         return [td.dataset.label || td.className, b.left, b.right, b.width, td.scrollWidth - td.clientWidth]; })""")
        for label, left, right, width, spill in boxes:
            assert width > 0 and left >= 0 and right <= PHONE and spill <= 1, (n.name, label, left, right, spill)
        text = row.inner_text()
        expected = [str(n.level), f"{n.score:.2f}", f"{n.universal_robustness:.3f}", f"tier {n.universal_tier}", n.status]
        for prefix in ("clean", "universal", "whitebox"):
            value, low, high = (getattr(n, f"{prefix}_{k}") for k in ("accuracy", "low", "high"))
            expected += [_pct(value), f"{low * 100:.1f}–{high * 100:.1f}"]
        expected += list(n.flags)
        for number in expected:
            assert number in text, (n.name, number, text)
        # Each number says what it is: the column's name is printed beside it.
        for label in ("Level", "Robust", "Score", "Clean", "Universal", "White-box", "Univ. robustness", "Flags", "Status"):
            cell = row.locator(f"td[data-label='{label}']")
            assert cell.count() == 1 and cell.evaluate("td => getComputedStyle(td, '::before').content").strip('"') == label
        rank = row.locator("td.name").evaluate("td => getComputedStyle(td, '::before').content")
        assert rank.strip('"').strip() == f"#{i + 1}"


def test_methodology_links_resolve_to_existing_anchors(session, alice) -> None:  # noqa: F811
    suite = real_suite(alice)
    session.login("alice", "pw-alice-123")
    visit(session, "/methodology/")
    anchors = set(session.page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
    seen: dict[str, set[str]] = {}
    for where, path in pages(suite).items():
        visit(session, path)
        hrefs = session.page.eval_on_selector_all("a[href*='/methodology/']", "els => els.map(a => a.getAttribute('href'))")
        fragments = {h.split("#", 1)[1] for h in hrefs if "#" in h}
        assert fragments <= anchors, (where, fragments - anchors)
        seen[where] = fragments
    # The nav links the page; every level, score, flag and matrix header links its definition.
    assert session.page.locator("nav.main a[href='/methodology/']").count() == 1
    assert {"level", "robust-accuracy", "score", "clean-accuracy", "universal-accuracy", "whitebox-accuracy",
            "universal-robustness", "flags"} <= seen["leaderboard"]
    flagged = {f for n in Network.objects.filter(benchmark=suite.benchmark) for f in n.flags}  # not another benchmark's
    assert flagged and {f"flag-{f}" for f in flagged} <= seen["leaderboard"]
    assert {"level", "score", "pairwise", "mcnemar", "charter-rule", "example"} <= seen["upload page"]
    assert {"matrix", "whitebox-accuracy", "pairwise", "charter-rule"} <= seen["matrix"]
    assert {"ladder", "level", "universal-tier", "attack-success"} <= seen["benchmark"]
    # A header's link lands on its definition.
    visit(session, "/")
    session.page.click("#leaderboard thead a.def[href$='#score']")
    session.page.wait_for_url("**/methodology/#score")
    assert session.page.evaluate("document.querySelector(':target').id") == "score"
    # "How this level is computed" opens the worked example of that network.
    upload = next(n for n in suite.uploads if n.owner_id)
    upload.refresh_from_db()
    visit(session, f"/networks/{upload.pk}/")
    session.page.click("#level-worked")
    session.page.wait_for_url(f"**/methodology/?network={upload.pk}#example")
    example = session.page.locator("#example").inner_text()
    assert upload.name in example and f"level {upload.level}" in example


def test_matrix_hover_says_what_the_diagonal_is(session, alice) -> None:  # noqa: F811
    suite = real_suite(alice)
    visit(session, "/matrix/")
    page = session.page
    image = page.locator("#plot-matrix .heatmaplayer image").first.bounding_box()
    n = len(suite.references) + len(suite.uploads)
    cell_w, cell_h = image["width"] / n, image["height"] / n

    def hover(row: int, col: int) -> str:
        page.mouse.move(image["x"] + (col + 0.5) * cell_w, image["y"] + (row + 0.5) * cell_h)
        page.wait_for_selector("#plot-matrix .hoverlayer .hovertext", state="attached")
        return page.locator("#plot-matrix .hoverlayer .hovertext").text_content()

    ladder = list(suite.benchmark.ladder)
    names = {r.pk: r.name for r in suite.references}
    diagonal = hover(2, 2)
    assert "on its own adversarial images" in diagonal and "white-box" in diagonal
    assert diagonal.count(names[ladder[2]]) == 1  # one line about one network, not the pair twice
    page.mouse.move(0, 0)
    pair = hover(2, 5)
    assert f"{names[ladder[2]]} on R6 {names[ladder[5]]}'s adversarial images" in pair
    assert f"{names[ladder[5]]} on R3 {names[ladder[2]]}'s adversarial images" in pair


def test_phone_matrix_scrolls_with_readable_cells_and_every_label(session, alice) -> None:  # noqa: F811
    suite = real_suite(alice)
    n = len(suite.references) + len(suite.uploads)
    session.page.set_viewport_size({"width": PHONE, "height": 900})
    visit(session, "/matrix/")
    page = session.page
    assert page.locator("#plot-matrix .xtick text").count() == n
    assert page.locator("#plot-matrix .ytick text").count() == n
    image = page.locator("#plot-matrix .heatmaplayer image").first.bounding_box()
    assert image["width"] / n >= 30 and image["height"] / n >= 20
    scroller = page.locator(".plot-scroll").evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert scroller[0] > scroller[1] <= PHONE  # it scrolls inside its box, the page does not
    texts = page.eval_on_selector_all("#plot-matrix .textpoint text, #plot-matrix text.textpoint",
                                      "els => els.map(e => parseFloat(getComputedStyle(e).fontSize))")
    assert texts == [] or min(texts) >= 10
    font = page.locator("table.matrix tbody td").first.evaluate("td => parseFloat(getComputedStyle(td).fontSize)")
    assert font >= 11
    check_layout(session, "matrix", PHONE)


@pytest.mark.parametrize("width", (1280, PHONE))
def test_gallery_toggle_filters_without_gaps(session, alice, width) -> None:  # noqa: F811
    from leaderboard import gallery

    suite = real_suite(alice)
    session.page.set_viewport_size({"width": width, "height": 900})
    candidates = [*suite.uploads, *suite.references]
    samples = {n.pk: gallery.gallery_sample(benchmark=suite.benchmark, adversarial=n.adversarial) for n in candidates}
    net = next(n for n in candidates if 0 < sum(samples[n.pk].hit(i) for i in samples[n.pk].indices) < len(samples[n.pk].indices))
    sample = samples[net.pk]
    hits = sum(sample.hit(i) for i in sample.indices)
    visit(session, f"/networks/{net.pk}/")
    page = session.page
    assert "representative sample" in page.locator("#gallery-sample").inner_text()

    def visible() -> list[dict]:
        return page.eval_on_selector_all(".gallery .triple", """els => els.filter(e => getComputedStyle(e).display !== 'none')
            .map(e => { const b = e.getBoundingClientRect(); return {hit: e.classList.contains('hit'), left: Math.round(b.left), top: Math.round(b.top)}; })""")

    def packed(items: list[dict]) -> None:
        lefts = sorted({i["left"] for i in items})
        columns = len(lefts)
        for k, item in enumerate(items):  # row-major, every row full but the last
            assert item["left"] == lefts[k % columns], (k, items)

    everything = visible()
    assert len(everything) == gallery.GALLERY_SIZE and sum(i["hit"] for i in everything) == hits
    packed(everything)
    page.click("label[for='gallery-hit']")
    shown = visible()
    assert len(shown) == hits and all(i["hit"] for i in shown)
    packed(shown)
    page.click("label[for='gallery-missed']")
    shown = visible()
    assert len(shown) == gallery.GALLERY_SIZE - hits and not any(i["hit"] for i in shown)
    packed(shown)
    check_layout(session, "network page gallery", width)
