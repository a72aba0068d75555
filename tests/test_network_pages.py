"""The pages of one network over synthetic stored results (tests.fakes: no TensorFlow):
its page, owner actions, the upload form, badge and gallery images."""

from __future__ import annotations

import io
import re
from xml.etree import ElementTree

import numpy as np
import pytest
from django.contrib.auth.models import User
from PIL import Image

from evaluator.services import storage
from leaderboard import gallery, selectors
from leaderboard.models import Network
from tests.fakes import fake_suite, stub_zip

pytestmark = pytest.mark.django_db

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("root", password="pw-root-123", is_staff=True)


def _upload_file(data: bytes, name: str = "model.zip"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def _text(response) -> str:
    return response.content.decode()


# --------------------------------------------------------------------------- network page


def test_network_page_explains_level_and_shows_plots_and_gallery(client) -> None:
    suite = fake_suite(references=4, uploads=2)
    net = suite.uploads[1]
    net.refresh_from_db()
    response = client.get(f"/networks/{net.pk}/")
    assert response.status_code == 200
    html = _text(response)
    comparisons = selectors.reference_comparisons(network=net)
    deciding = next(c for c in comparisons if c.get("deciding"))
    verb = "More robust than" if deciding["wins"] else "Not more robust than"
    assert verb in html
    assert f"{deciding['ours'] * 100:.1f}%</strong> vs <strong>{deciding['theirs'] * 100:.1f}%" in html
    # The revised rule (issue 12): both networks on the same images, not "each other's attacks".
    assert "of the same images (both networks' adversarial sets)" in html
    assert "each other" not in html.split('class="level-why"')[1].split("</section>")[0]
    assert re.search(r"p (&lt;|<) 0\.001|p = \d\.\d{3}", html)
    # One row per reference, in ladder order: the revised counts, then the charter's numbers.
    table = html.split('class="comparisons"')[1].split("</table>")[0]
    assert [int(x) for x in re.findall(r"<td>R(\d+)</td>", table)] == list(range(1, 5))
    for ref in suite.references:
        assert ref.name in table
    assert "Charter rule (transfer only)" in table
    for c in comparisons:
        assert c["images"] == 2 * len(suite.labels)
        assert f"{c['ours_correct']}/{c['images']}" in table and f"{c['theirs_correct']}/{c['images']}" in table
        # Two columns, each saying whose network on whose adversarial images.
        assert f">{c['charter']['ours'] * 100:.1f}%</td>" in table and f">{c['charter']['theirs'] * 100:.1f}%, " in table
    assert f"{net.name}</span> on the reference's adversarial images" in table
    assert f"The reference on <span class=\"th-name\">{net.name}'s</span> adversarial images" in table
    note = html.split("</table>")[1]
    assert "no longer decides the level" in note and "two different image sets" in note
    # Heatmaps: clean, universal, own attack and a select for the others.
    for key in ("clean", "universal", "own", "other"):
        assert f'id="fig-{key}"' in html
    assert 'id="other-attack"' in html and html.count("<option value=") >= 4
    assert re.search(r"/static/vendor/plotly-cartesian\.min\.[0-9a-f]{12}\.js", html)  # fingerprinted
    # Gallery of 8 triples.
    assert len(re.findall(rf"/networks/{net.pk}/gallery/\d+\.png\?part=original", html)) == gallery.GALLERY_SIZE
    assert "target <strong>" in html and "predicted <strong" in html
    # Badge with its Markdown snippet.
    assert f"/networks/{net.pk}/badge.svg" in html and "[![robustness](http://testserver/networks/" in html


def test_network_page_json_is_valid_plotly(client) -> None:
    import json

    suite = fake_suite(references=3, uploads=1)
    html = _text(client.get(f"/networks/{suite.uploads[0].pk}/"))
    block = re.search(r'<script type="application/json" id="fig-clean">(.*?)</script>', html, re.S).group(1)
    fig = json.loads(block)
    assert fig["data"][0]["type"] == "heatmap"
    z = np.array(fig["data"][0]["z"])
    assert z.shape == (10, 10) and z.sum() == len(suite.labels)


def test_other_attacks_are_listed_by_name_and_fetched_one_at_a_time(client) -> None:
    """The page names every other network's attack but embeds one matrix (the first by
    name); picking another fetches its matrix, the stored one, from a small endpoint."""
    import json

    from evaluator.models import Evaluation

    suite = fake_suite(references=4, uploads=2)
    net = suite.uploads[0]
    html = _text(client.get(f"/networks/{net.pk}/"))
    picker = html.split('id="other-attack"')[1].split("</select>")[0]
    options = re.findall(r'<option value="(\d+)">([^<]+)</option>', picker)
    stored = {e.source_id: e for e in Evaluation.objects.filter(network=net, source__isnull=False)
              .select_related("source")}
    assert sorted(int(pk) for pk, _ in options) == sorted(stored)
    assert [name for _, name in options] == sorted((e.source.name for e in stored.values()), key=str.lower)
    assert f'data-url="/networks/{net.pk}/confusion/"' in picker
    first = stored[int(options[0][0])]
    fig = json.loads(re.search(r'id="fig-other">(.*?)</script>', html, re.S).group(1))
    assert fig["data"][0]["z"] == first.confusion
    assert "others-data" not in html  # no longer every matrix in the page
    for pk, name in options:
        data = client.get(f"/networks/{net.pk}/confusion/{pk}.json").json()
        assert data == {"id": int(pk), "name": name, "confusion": stored[int(pk)].confusion}
    # A network it was never evaluated against: 404, not an empty matrix.
    assert client.get(f"/networks/{net.pk}/confusion/{net.pk}.json").status_code == 404


def test_running_network_page_polls_the_api(client, alice) -> None:
    suite = fake_suite(references=2)
    net = Network.objects.create(benchmark=suite.benchmark, owner=alice, name="fresh",
                                 status=Network.Status.VALIDATING, progress=12, stage="validating")
    client.force_login(alice)
    html = _text(client.get(f"/networks/{net.pk}/"))
    assert f'data-poll="/api/networks/{net.pk}"' in html
    assert 'aria-valuenow="12"' in html and "Evaluation in progress" in html


def test_rejected_network_shows_reason_to_owner(client, alice) -> None:
    suite = fake_suite(references=2)
    net = Network.objects.create(benchmark=suite.benchmark, owner=alice, name="broken",
                                 status=Network.Status.REJECTED,
                                 reason="input shape (None, 32, 32, 3) does not match the benchmark's (28, 28, 1)")
    client.force_login(alice)
    html = _text(client.get(f"/networks/{net.pk}/"))
    assert "Rejected" in html
    assert "input shape (None, 32, 32, 3) does not match the benchmark&#x27;s (28, 28, 1)" in html
    # Hidden from the public leaderboard, listed for the owner.
    assert f'/networks/{net.pk}/"' in _text(client.get("/"))
    client.logout()
    assert f'/networks/{net.pk}/"' not in _text(client.get("/"))


def test_private_network_visible_only_to_owner_and_staff(client, alice, bob, staff) -> None:
    suite = fake_suite(references=2, uploads=1, owner=alice)
    net = suite.uploads[0]
    Network.objects.filter(pk=net.pk).update(is_public=False)
    urls = [f"/networks/{net.pk}/", f"/networks/{net.pk}/badge.svg", f"/networks/{net.pk}/gallery/0.png?part=original"]
    for url in urls:
        assert client.get(url).status_code == 404, url
    client.force_login(bob)
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert f'/networks/{net.pk}/"' not in _text(client.get("/"))
    for user in (alice, staff):
        client.force_login(user)
        for url in urls:
            assert client.get(url).status_code == 200, (user, url)
    client.force_login(alice)
    assert "private" in _text(client.get("/"))


def test_user_text_is_escaped_everywhere(client, alice) -> None:
    suite = fake_suite(references=2, uploads=1, owner=alice)
    net = suite.uploads[0]
    Network.objects.filter(pk=net.pk).update(name=EVIL, description=EVIL)
    client.force_login(alice)
    for url in ("/", f"/networks/{net.pk}/", "/matrix/", "/accounts/profile/",
                f"/networks/{suite.references[0].pk}/", f"/networks/{net.pk}/delete/"):
        html = _text(client.get(url))
        assert "<script>alert" not in html, url
        assert "<img src=x" not in html, url
        assert "&lt;script&gt;" in html or "\\u003Cscript\\u003E" in html, url
    svg = _text(client.get(f"/networks/{net.pk}/badge.svg"))
    assert "<script" not in svg and "&lt;script&gt;" in svg
    ElementTree.fromstring(svg)


# --------------------------------------------------------------------------- owner actions


def test_owner_can_toggle_visibility_and_others_cannot(client, alice, bob) -> None:
    suite = fake_suite(references=2, uploads=1, owner=alice)
    net = suite.uploads[0]
    url = f"/networks/{net.pk}/visibility/"
    client.force_login(bob)
    assert client.post(url, {"public": "0"}).status_code == 403
    client.force_login(alice)
    page = _text(client.get(f"/networks/{net.pk}/"))
    assert "Make private" in page and "csrfmiddlewaretoken" in page
    response = client.post(url, {"public": "0"})
    assert response.status_code == 302 and response["Location"] == f"/networks/{net.pk}/"
    net.refresh_from_db()
    assert not net.is_public
    client.post(url, {"public": "1"})
    net.refresh_from_db()
    assert net.is_public


def test_visibility_and_delete_require_csrf(alice) -> None:
    from django.test import Client

    suite = fake_suite(references=2, uploads=1, owner=alice)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(f"/networks/{suite.uploads[0].pk}/visibility/", {"public": "0"}).status_code == 403
    assert strict.post(f"/networks/{suite.uploads[0].pk}/delete/").status_code == 403
    assert Network.objects.filter(pk=suite.uploads[0].pk, is_public=True).exists()


def test_delete_by_owner_with_confirmation(client, alice, bob, django_capture_on_commit_callbacks,
                                          monkeypatch) -> None:
    suite = fake_suite(references=2, uploads=1, owner=alice)
    net = suite.uploads[0]
    url = f"/networks/{net.pk}/delete/"
    assert client.get(url).status_code == 302  # anonymous: to the login page
    client.force_login(bob)
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    Network.objects.filter(pk=net.pk).update(is_public=False)
    assert client.post(url).status_code == 404
    assert Network.objects.filter(pk=net.pk).exists()
    client.force_login(alice)
    confirm = _text(client.get(url))
    assert "cannot be undone" in confirm and 'id="confirm-delete"' in confirm
    ranked = []
    monkeypatch.setattr("evaluator.services.lifecycle._send",
                        lambda name, pk: ranked.append(pk) if name.endswith("benchmark_rank") else None)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302 and response["Location"] == "/accounts/profile/"
    assert not Network.objects.filter(pk=net.pk).exists()
    assert ranked == [suite.benchmark.pk]


# --------------------------------------------------------------------------- upload


def test_upload_requires_login(client) -> None:
    fake_suite(references=1)
    response = client.get("/networks/upload/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_upload_page_states_the_size_limit(client, alice, settings) -> None:
    fake_suite(references=1)
    settings.MAX_UPLOAD_BYTES = 50 * 1024 * 1024
    client.force_login(alice)
    html = _text(client.get("/networks/upload/"))
    assert "50 MB" in html and 'enctype="multipart/form-data"' in html
    assert 'name="archive"' in html and 'name="public"' in html and "checked" in html


def test_upload_junk_shows_inline_error(client, alice, monkeypatch) -> None:
    fake_suite(references=1)
    queued = []
    monkeypatch.setattr("evaluator.services.lifecycle.pipeline_enqueue", lambda n: queued.append(n.pk))
    client.force_login(alice)
    response = client.post("/networks/upload/", {"name": "junk", "description": "x",
                                                "archive": _upload_file(b"hello, not an archive", "junk.zip")})
    assert response.status_code == 200
    html = _text(response)
    assert "not a .zip or .tar.gz archive" in html and 'class="error"' in html
    assert 'value="junk"' in html  # the form keeps what was typed
    assert not Network.objects.filter(name="junk").exists() and queued == []


def test_upload_missing_name_shows_field_error(client, alice) -> None:
    suite = fake_suite(references=1)
    client.force_login(alice)
    response = client.post("/networks/upload/", {"name": "", "archive": _upload_file(stub_zip())})
    assert response.status_code == 200 and "This field is required" in _text(response)
    assert Network.objects.filter(benchmark=suite.benchmark).count() == 1


def test_upload_too_large_is_refused(client, alice, settings) -> None:
    fake_suite(references=1)
    settings.MAX_UPLOAD_BYTES = 1024
    client.force_login(alice)
    response = client.post("/networks/upload/", {"name": "big", "archive": _upload_file(b"PK\x03\x04" + b"0" * 5000)})
    assert response.status_code == 200 and "larger than" in _text(response)
    assert not Network.objects.filter(name="big").exists()


def test_upload_valid_archive_redirects_to_live_page(client, alice, monkeypatch,
                                                    django_capture_on_commit_callbacks) -> None:
    fake_suite(references=1)
    queued = []
    monkeypatch.setattr("evaluator.services.lifecycle.pipeline_enqueue", lambda n: queued.append(n.pk))
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/networks/upload/", {
            "name": "my net", "description": "a <b>net</b>", "archive": _upload_file(stub_zip()),
        })
    net = Network.objects.get(name="my net")
    assert response.status_code == 302 and response["Location"] == f"/networks/{net.pk}/"
    assert net.owner == alice and not net.is_public  # the checkbox was not sent
    assert net.archive.endswith("upload.zip") and storage.media_path(net.archive).is_file()
    assert queued == [net.pk]
    page = client.get(response["Location"])
    html = _text(page)
    assert "Evaluation in progress" in html and "queued for evaluation" in html
    assert "a &lt;b&gt;net&lt;/b&gt;" in html


# --------------------------------------------------------------------------- badge and images


def test_badge_svg(client) -> None:
    suite = fake_suite(references=3, uploads=1)
    net = suite.uploads[0]
    net.refresh_from_db()
    response = client.get(f"/networks/{net.pk}/badge.svg")
    assert response.status_code == 200 and response["Content-Type"].startswith("image/svg+xml")
    svg = _text(response)
    root = ElementTree.fromstring(svg)
    assert root.tag.endswith("svg")
    assert f"level {net.level}" in svg and "robustness" in svg
    pending = Network.objects.create(benchmark=suite.benchmark, name="a & b <c>", status=Network.Status.QUEUED)
    svg = _text(client.get(f"/networks/{pending.pk}/badge.svg"))
    ElementTree.fromstring(svg)
    assert "pending" in svg and "a &amp; b &lt;c&gt;" in svg
    assert client.get("/networks/999999/badge.svg").status_code == 404


def test_gallery_pngs_are_real_images_and_cached(client) -> None:
    suite = fake_suite(references=2, uploads=1)
    net = suite.uploads[0]
    html = _text(client.get(f"/networks/{net.pk}/"))
    index = int(re.search(rf"/networks/{net.pk}/gallery/(\d+)\.png", html).group(1))
    sizes = set()
    for part in ("original", "perturbation", "adversarial"):
        response = client.get(f"/networks/{net.pk}/gallery/{index}.png?part={part}")
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        img = Image.open(io.BytesIO(response.content))
        img.load()
        sizes.add(img.size)
    assert sizes == {(8 * 14, 8 * 14)}  # 8x8 images scaled 14x
    assert list(storage.media_path(f"cache/networks/{net.pk}").glob("gallery-*.png"))
    again = client.get(f"/networks/{net.pk}/gallery/{index}.png?part=original")
    assert again.content == client.get(f"/networks/{net.pk}/gallery/{index}.png?part=original").content
    assert client.get(f"/networks/{net.pk}/gallery/{index}.png?part=weird").status_code == 404
    assert client.get(f"/networks/{net.pk}/gallery/5000.png?part=original").status_code == 404


def test_gallery_original_matches_dataset(client) -> None:
    from evaluator.engine.datasets import load_dataset

    suite = fake_suite(references=1, uploads=1)
    net = suite.uploads[0]
    html = _text(client.get(f"/networks/{net.pk}/"))
    index = int(re.findall(rf"/networks/{net.pk}/gallery/(\d+)\.png", html)[-1])  # one the page shows
    response = client.get(f"/networks/{net.pk}/gallery/{index}.png?part=original")
    img = np.asarray(Image.open(io.BytesIO(response.content)))
    ds = load_dataset(storage.media_path(suite.benchmark.data_file))
    expected = (ds.x_eval[index, :, :, 0] * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(img[::14, ::14], expected)


def test_reference_page_own_rung_stops_its_climb(client) -> None:
    suite = fake_suite(references=3)
    top = Network.objects.get(pk=suite.benchmark.ladder[-1])
    html = _text(client.get(f"/networks/{top.pk}/"))
    assert "its own rung (no network is more robust than itself" in html and "reference" in html
    # The top reference beats the rungs below it; its own rung stops the climb and decides.
    assert top.level == 2 and top.deciding_rung == 3
    own_row = html.split('class="comparisons"')[1].split("</table>")[0].split("<tr")[-1]
    assert "R3" in own_row and "decides the level" in own_row
    assert f"Level {top.level} robustness" in html
    # The level card says so too (it showed no deciding sentence on reference pages).
    card = html.split('class="level-why"')[1].split("</section>")[0]
    assert "Its own rung, R3, stops its climb: no network is more robust than itself." in card
    assert "It beats R1 … R2, every rung below its own, so its level is 2." in card
    assert "reaches at most level k − 1" in card
    for stale in ("counts as beaten", "own rung left out", "each other"):
        assert stale not in card
    bottom = Network.objects.get(pk=suite.benchmark.ladder[0])
    card = _text(client.get(f"/networks/{bottom.pk}/")).split('class="level-why"')[1].split("</section>")[0]
    assert bottom.level == 0 and "Its own rung, R1, stops its climb" in card
    assert "It is R1, the least robust reference, so its level is 0." in card


def test_pairwise_rows_count_both_attacks_from_stored_predictions() -> None:
    """Each row's revised numbers from the stored rows directly (no engine): this network
    and the reference on adv(this) + adv(reference); the charter's, the two cross cells."""
    from evaluator.models import Evaluation

    suite = fake_suite(references=3, uploads=1)
    net = Network.objects.get(pk=suite.uploads[0].pk)
    labels = suite.labels
    for c in selectors.reference_comparisons(network=net):
        ref = c["reference"]
        mine = Evaluation.objects.get(network=net, source=ref).prediction_array() == labels
        theirs = Evaluation.objects.get(network=ref, source=net).prediction_array() == labels
        own = net.adversarial.prediction_array() == labels
        ref_own = ref.adversarial.prediction_array() == labels
        assert c["ours_correct"] == own.sum() + mine.sum()
        assert c["theirs_correct"] == theirs.sum() + ref_own.sum()
        assert c["wins"] == (c["ours_correct"] > c["theirs_correct"])
        assert c["tie"] == (c["ours_correct"] == c["theirs_correct"])
        assert c["ours"] == pytest.approx(c["ours_correct"] / (2 * len(labels)))
        assert c["charter"]["ours"] == pytest.approx(mine.mean())
        assert c["charter"]["theirs"] == pytest.approx(theirs.mean())
        assert c["charter"]["wins"] == (mine.sum() > theirs.sum())
        assert 0.0 <= c["p_value"] <= 1.0 and c["significant"] == (c["p_value"] < 0.05)

