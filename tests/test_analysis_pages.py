"""Issue 15 on the pages and in the API: the "Detection" and "Vector space" sections of
/benchmark/, the "detectable by the discriminator" line and figures of a network page, the
numbers in /api/benchmarks/<name> and /api/networks/<id>, what the pages say when the
analysis or the discriminator is missing, and the figures in Chromium.

Rows come from tests.analysis_fakes (the real engine and store on a synthetic benchmark).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from evaluator.engine import detection
from evaluator.models import Analysis
from evaluator.services import storage
from leaderboard.models import Network
from tests.analysis_fakes import fake_adversarial_sets, fake_analysis
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db


def _suite(name: str = "mnist-5k", *, discriminator: bool = True, uploads: int = 1):
    suite = fake_suite(references=3, uploads=uploads, name=name)
    fake_adversarial_sets(suite.benchmark)
    fake_analysis(suite.benchmark, discriminator=discriminator)
    return suite


def _figure(html: str, figure_id: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{figure_id}">(.*?)</script>', html, re.S)
    assert m, f"figure {figure_id} missing"
    return json.loads(m.group(1))


def test_benchmark_page_shows_detection_and_vector_space(client) -> None:
    suite = _suite()
    html = client.get("/benchmark/").content.decode()
    assert 'id="detection"' in html and 'id="vector-space"' in html
    assert re.search(r"vendor/plotly-cartesian\.min[.0-9a-f]*js", html)
    rows = {r.network_id: r for r in Analysis.objects.filter(benchmark=suite.benchmark)}
    # Every reference's AUC, as stored, with its interval.
    for ref in suite.references:
        d = rows[ref.pk].detection["discriminator"]
        assert f'{d["auc"]:.3f} <span class="muted">[{d["low"]:.3f}, {d["high"]:.3f}]</span>' in html
    roc = _figure(html, "fig-roc")
    # One curve per set and detector, plus the chance line in each panel.
    sets = Analysis.objects.filter(benchmark=suite.benchmark).exclude(kind="basis").count()
    assert len(roc["data"]) == 2 * (sets + 1)
    universal = rows[None] if None in rows else Analysis.objects.get(benchmark=suite.benchmark, kind="universal")
    curve = next(t for t in roc["data"] if t.get("name") == "universal set")
    assert curve["y"] == universal.detection["discriminator"]["tpr"]
    energy = _figure(html, "fig-energy")
    assert [a["text"] for a in energy["layout"]["annotations"]][:1] == ["top 10 components"]
    assert _figure(html, "fig-norms")["data"]
    assert 'id="fig-projection-1"' in html  # the universal set (the fakes have no control)
    verdicts = [detection.compare(r.detection["discriminator"], r.detection["mahalanobis"])
                for r in rows.values() if r.kind != "basis"]
    m = re.search(r'the discriminator detects <strong>(\d+)</strong> better, <strong>(\d+)</strong> as well '
                  r'\(overlapping intervals\) and <strong>(\d+)</strong> worse', html)
    assert m and [int(g) for g in m.groups()] == [verdicts.count(v) for v in ("better", "as well", "worse")]


def test_private_uploads_stay_off_the_benchmark_page(client) -> None:
    suite = _suite()
    upload = suite.uploads[0]
    Network.objects.filter(pk=upload.pk).update(name="secret-upload", is_public=False)
    html = client.get("/benchmark/").content.decode()
    assert "secret-upload" not in html
    data = client.get("/api/benchmarks/mnist-5k").json()
    assert upload.pk not in [s["network_id"] for s in data["analysis"]["sets"]]


def test_network_page_says_how_detectable_it_is(client) -> None:
    suite = _suite()
    net = suite.references[1]
    d = Analysis.objects.get(network=net).detection
    html = client.get(f"/networks/{net.pk}/").content.decode()
    line = re.search(r'<p class="detectable" id="detectable">(.*?)</p>', html, re.S).group(1)
    text = re.sub(r"<[^>]+>", "", line)
    assert f"AUC {d['discriminator']['auc']:.3f} [{d['discriminator']['low']:.3f}, " \
           f"{d['discriminator']['high']:.3f}]" in text
    assert f"{100 * d['discriminator']['rate']:.1f}% of this network's adversarial images caught" in text
    assert f"Mahalanobis baseline: AUC {d['mahalanobis']['auc']:.3f}" in text
    projection = _figure(html, "fig-net-projection")
    assert projection["layout"]["annotations"], "arrows for the gallery's images"
    attack, noise = _figure(html, "fig-net-energy")["data"]
    energy = Analysis.objects.get(network=net).vectorspace["energy"]
    assert attack["y"] == [e["adversarial"]["mean"] for e in energy]
    assert noise["y"] == [e["noise"]["mean"] for e in energy]


def test_projection_samples_are_disjoint_and_arrows_only_for_the_gallery(client) -> None:
    """SPEC §2 Secrecy: no adversarial point coloured by its target can be matched to the
    clean point it came from, except the gallery's images, whose targets the page shows."""
    from leaderboard import gallery

    suite = _suite()
    net = suite.references[0]
    row = Analysis.objects.get(network=net)
    basis = Analysis.objects.get(benchmark=suite.benchmark, kind="basis")
    html = client.get(f"/networks/{net.pk}/").content.decode()
    fig = _figure(html, "fig-net-projection")
    clean = np.load(storage.media_path(basis.file))["clean_projection"].round(3)
    adv = np.load(storage.media_path(row.file))["projection"].round(3)

    def indices(points: np.ndarray, traces: list[dict]) -> set[int]:
        found = set()
        for t in traces:
            for x, y in zip(t["x"], t["y"]):
                hit = np.flatnonzero((points[:, 0] == x) & (points[:, 1] == y))
                assert len(hit) >= 1
                found.update(int(i) for i in hit)
        return found

    shown_clean = indices(clean, [t for t in fig["data"] if t["name"].startswith("clean")])
    shown_adv = indices(adv, [t for t in fig["data"] if not t["name"].startswith("clean")])
    assert shown_clean and shown_adv and not shown_clean & shown_adv
    sample = gallery.gallery_sample(benchmark=suite.benchmark, adversarial=net.adversarial)
    arrows = {(round(a["ax"], 3), round(a["ay"], 3)) for a in fig["layout"]["annotations"]}
    raw = np.load(storage.media_path(basis.file))["clean_projection"]
    assert arrows == {(round(float(raw[i, 0]), 3), round(float(raw[i, 1]), 3)) for i in sample.indices}


def test_pages_say_how_to_get_what_is_missing(client) -> None:
    suite = fake_suite(references=2, uploads=0, name="bare")
    html = client.get("/benchmark/?benchmark=bare").content.decode()
    assert "python manage.py analyse_benchmark bare" in html
    assert "fig-roc" not in html
    page = client.get(f"/networks/{suite.references[0].pk}/").content.decode()
    assert "Detectable by the discriminator: not analysed yet." in page
    assert "python manage.py build_benchmark bare --rebuild gan-data" in page
    data = client.get("/api/benchmarks/bare").json()["analysis"]
    assert data["analysed"] is False and data["how_to_compute"] == "python manage.py analyse_benchmark bare"


def test_without_a_discriminator_the_page_names_the_rebuild(client) -> None:
    suite = _suite("older", discriminator=False)
    html = client.get("/benchmark/?benchmark=older").content.decode()
    assert "python manage.py build_benchmark older --rebuild gan-data" in html
    assert "Discriminator AUC" not in html and "Baseline AUC" in html
    page = client.get(f"/networks/{suite.references[0].pk}/").content.decode()
    # No gan-data reference in this suite: said so, not "kept no discriminator".
    assert "this build has no gan-data reference" in page and "--rebuild gan-data" in page
    assert "kept no discriminator" not in page and "kept no discriminator" not in html
    assert "This build has no gan-data reference, so only the baseline is measured" in html
    Network.objects.create(benchmark=suite.benchmark, name="gan-data", is_reference=True, recipe="gan-data",
                           report={})
    page = client.get(f"/networks/{suite.references[0].pk}/").content.decode()
    assert "this build&#x27;s gan-data reference kept no discriminator" in page  # the apostrophe escaped
    api = client.get("/api/benchmarks/older").json()["analysis"]
    assert api["discriminator_kept"] is False
    assert api["how_to_get_the_discriminator"] == "python manage.py build_benchmark older --rebuild gan-data"
    assert all("discriminator" not in s["detection"] for s in api["sets"])


def test_figures_of_a_rebuilt_control_are_not_shown(client) -> None:
    """Rows measured against another control (or discriminator) than the benchmark has
    now are out of date: the pages say so and show none of their numbers."""
    suite = _suite("stale")
    Network.objects.filter(pk=suite.references[0].pk).update(
        recipe="control", info={"signature": "serving_default", "model_dir": "none"},
        model_files={"saved_model.pb": "0" * 64})
    html = client.get("/benchmark/?benchmark=stale").content.decode()
    assert "Out of date: a reference these figures depend on" in html
    assert "fig-roc" not in html and "python manage.py analyse_benchmark stale" in html
    page = client.get(f"/networks/{suite.references[1].pk}/").content.decode()
    assert "Detectable by the discriminator: not analysed yet." in page
    assert client.get("/api/benchmarks/stale").json()["analysis"]["sets"] == []


def test_api_carries_the_stored_numbers(client) -> None:
    suite = _suite()
    data = client.get("/api/benchmarks/mnist-5k").json()
    assert data["benchmark"] == "mnist-5k" and data["attack"]["epsilon"] == suite.benchmark.epsilon
    sets = {s["network_id"]: s for s in data["analysis"]["sets"]}
    for row in Analysis.objects.filter(benchmark=suite.benchmark).exclude(kind="basis"):
        s = sets[row.network_id]
        assert s["detection"] == row.detection and s["vector_space"] == row.vectorspace
        assert s["discriminator_vs_baseline"] == detection.compare(row.detection["discriminator"],
                                                                   row.detection["mahalanobis"])
    net = suite.uploads[0]
    one = client.get(f"/api/networks/{net.pk}").json()
    row = Analysis.objects.get(network=net)
    assert one["detection"] == row.detection and one["vector_space"] == row.vectorspace
    assert client.get("/api/benchmarks/nope").status_code == 404


# --------------------------------------------------------------------------- in Chromium


from tests.test_browser import chrome, session  # noqa: E402,F401  (the browser fixtures)


def _drawn(page, selector: str, traces: str = ".scatterlayer .trace, .barlayer .trace") -> None:
    page.wait_for_selector(f"{selector} svg.main-svg", state="attached")
    assert page.locator(f"{selector} {traces}").count() > 0, selector


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_analysis_plots_draw_in_chromium(session) -> None:
    """Every new plot renders with the locally served Plotly, no console error, no
    request leaves the machine (the session fixture checks both); screenshots saved."""
    suite = _suite()
    session.go("/benchmark/")
    page = session.page
    for plot in ("#plot-roc", "#plot-norms", "#plot-energy", "#plot-projection-1"):
        page.locator(plot).scroll_into_view_if_needed()
        _drawn(page, plot)
    assert page.locator("table.detection tbody tr").count() == Analysis.objects.filter(
        benchmark=suite.benchmark).exclude(kind="basis").count()
    # Hiding a set in the ROC legend hides its curve in both panels.
    before = page.locator("#plot-roc .scatterlayer .trace").count()
    entry = page.locator("#plot-roc .legend .traces", has=page.locator(".legendtext", has_text="universal set"))
    entry.locator(".legendtoggle").click()
    page.wait_for_function("() => document.querySelectorAll('#plot-roc .scatterlayer .trace').length < %d" % before)
    page.locator("#detection").scroll_into_view_if_needed()
    session.shoot("benchmark-analysis")
    net = suite.references[0]
    session.go(f"/networks/{net.pk}/")
    for plot in ("#plot-net-norms", "#plot-net-energy", "#plot-net-projection"):
        page.locator(plot).scroll_into_view_if_needed()
        _drawn(page, plot)
    assert page.locator("#plot-net-projection .annotation").count() > 0  # the arrows
    assert "Detectable by the discriminator: AUC" in page.locator("#detectable").inner_text()
    session.shoot("network-analysis")


def test_analyse_command_explains_what_is_missing() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no benchmark 'nope'"):
        call_command("analyse_benchmark", "nope")
    fake_suite(references=2, name="no-control")  # references, but none is a control
    with pytest.raises(CommandError, match="the control reference is not built and validated yet; "
                                           "run `python manage.py build_benchmark no-control` first"):
        call_command("analyse_benchmark", "no-control")
