"""Model cards (issue 14): what an uploader says about a network, given on upload (form
and API), shown on the network page, on the leaderboard (hover / focus) and in the JSON
API, and edited later by the owner only. Every value is hostile input.

`world` (tests/conftest.py): alice owns a public and a private upload, bob is the other
user, root is staff; nothing reaches a broker.
"""

from __future__ import annotations

import html as htmlib
import math
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from leaderboard import model_cards
from leaderboard.model_cards import CardError, card_clean, description_clean
from leaderboard.models import Network
from tests.fakes import stub_zip

pytestmark = pytest.mark.django_db

CARD = {
    "paper_url": "https://arxiv.org/abs/1706.06083?x=1&y=<2>",
    "training_data": "MNIST train <b>60k</b> & \"augmented\"",
    "architecture": "Keras 3 · 2 conv + 2 dense <script>alert(1)</script>",
    "threat_norm": "linf",
    "threat_epsilon": "0.3",
}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("url", ["https://example.org/paper.pdf", "http://github.com/a/b#readme",
                                 "https://arxiv.org/abs/1706.06083v4"])
def test_http_and_https_links_are_kept_exactly(url) -> None:
    assert card_clean(paper_url=url).paper_url == url


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>x</b>",
                                 "ftp://example.org/model", "//example.org/x", "/networks/1/", "example.org",
                                 "https://", "https://exa mple.org", "vbscript:msgbox(1)",
                                 "https://example.org/" + "a" * 500])
def test_other_links_are_refused(url) -> None:
    with pytest.raises(CardError) as info:
        card_clean(paper_url=url)
    assert info.value.field == "paper_url"


@pytest.mark.parametrize("field", ["training_data", "architecture"])
@pytest.mark.parametrize("bad", ["a\x00b", "right\u202eevil", "zero\u200bwidth", "bell\x07", "x" * 301])
def test_short_fields_refuse_hidden_characters_and_long_text(field, bad) -> None:
    with pytest.raises(CardError) as info:
        card_clean(**{field: bad})
    assert info.value.field == field


def test_short_fields_become_one_line() -> None:
    card = card_clean(training_data="  MNIST\n train\t split  ", architecture="CNN\r\n(2 layers)")
    assert card.training_data == "MNIST train split" and card.architecture == "CNN (2 layers)"


@pytest.mark.parametrize("norm, expected", [("linf", "linf"), ("L∞", "linf"), ("Linf", "linf"), ("L2", "l2"),
                                            ("l1", "l1"), ("", "")])
def test_norms_are_normalised(norm, expected) -> None:
    assert card_clean(threat_norm=norm).threat_norm == expected


@pytest.mark.parametrize("eps", ["abc", "nan", "inf", "-0.1", "0", "1e5", "0x10"])
def test_bad_epsilons_are_refused(eps) -> None:
    with pytest.raises(CardError) as info:
        card_clean(threat_norm="linf", threat_epsilon=eps)
    assert info.value.field == "threat_epsilon"


def test_epsilon_needs_a_norm_and_reads_as_a_claim() -> None:
    with pytest.raises(CardError) as info:
        card_clean(threat_epsilon="0.3")
    assert info.value.field == "threat_norm"
    card = card_clean(threat_norm="l2", threat_epsilon="1.5")
    assert card.threat_epsilon == 1.5 and not math.isnan(card.threat_epsilon)
    assert model_cards.threat_text(card.threat_norm, card.threat_epsilon) == "L2, ε = 1.5"
    assert model_cards.threat_text("linf", None) == "L∞"
    with pytest.raises(CardError):
        card_clean(threat_norm="l7")


def test_description_keeps_lines_but_not_overrides() -> None:
    assert description_clean("line one\nline two\ttab") == "line one\nline two\ttab"
    for bad in ("a\u202eb", "a\x00b", "a\x1bb", "x" * 5001):
        with pytest.raises(CardError) as info:
            description_clean(bad)
        assert info.value.field == "description"


# --------------------------------------------------------------------------- round trip


def _form_upload(client, user, name: str, **card: str):
    client.force_login(user)
    return client.post("/networks/upload/", {
        "name": name, "archive": SimpleUploadedFile("m.zip", stub_zip()), "public": "on",
        "benchmark": "mnist-5k", "description": "line 1\nline <2>", **card,
    })


def test_card_given_on_the_form_is_stored_and_shown_escaped(client, world) -> None:
    response = _form_upload(client, world.bob, "carded", **CARD)
    assert response.status_code == 302, response.content.decode()[:2000]
    net = Network.objects.get(name="carded")
    assert (net.paper_url, net.training_data, net.architecture) == (
        CARD["paper_url"], CARD["training_data"], CARD["architecture"])
    assert (net.threat_norm, net.threat_epsilon) == ("linf", 0.3)
    page = client.get(f"/networks/{net.pk}/").content.decode()
    section = page[page.index('id="model-card"'):]
    section = section[:section.index("</section>")]
    # The link: the exact URL, escaped, nofollow noopener; the text fields escaped.
    link = re.search(r'<a href="([^"]+)" rel="([^"]+)"[^>]*class="card-link">', section)
    assert link and htmlib.unescape(link.group(1)) == CARD["paper_url"]
    assert link.group(2) == "nofollow noopener"
    assert htmlib.escape(CARD["training_data"], quote=True) in section
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "L∞, ε = 0.3" in section
    assert "line &lt;2&gt;" in page and "<2>" not in page.replace(CARD["paper_url"], "")


def test_form_refuses_a_bad_card_and_creates_nothing(client, world) -> None:
    response = _form_upload(client, world.bob, "bad card", paper_url="javascript:alert(1)")
    assert response.status_code == 200
    html = response.content.decode()
    assert "http:// or https://" in html and 'value="bad card"' in html
    assert not Network.objects.filter(name="bad card").exists()


def test_card_through_the_api_and_in_its_rows(client, world) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Token {world.bob_token.key}"}
    response = client.post("/api/networks", {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "api-card",
                                             "description": "free text", **CARD}, **auth)
    assert response.status_code == 202, response.content
    pk = response.json()["id"]
    row = next(r for r in client.get("/api/leaderboard", **auth).json()["networks"] if r["id"] == pk)
    assert row["model_card"] == {
        "paper_url": CARD["paper_url"], "training_data": CARD["training_data"],
        "architecture": CARD["architecture"],
        "threat_model": {"norm": "linf", "epsilon": 0.3, "text": "L∞, ε = 0.3"},
    }
    assert row["owner"] == "bob"
    detail = client.get(f"/api/networks/{pk}", **auth).json()
    assert detail["model_card"] == row["model_card"] and detail["description"] == "free text"
    # A network without a card answers nulls, never missing keys.
    empty = next(r for r in client.get("/api/leaderboard").json()["networks"] if r["id"] == world.pub.pk)
    assert empty["model_card"]["paper_url"] is None and empty["model_card"]["threat_model"]["norm"] is None


@pytest.mark.parametrize("field, value", [("paper_url", "ftp://x.org/a"), ("threat_epsilon", "lots"),
                                          ("training_data", "a\u202eb"), ("description", "x" * 5001)])
def test_api_refuses_a_bad_card_with_the_field_named(client, world, field, value) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Token {world.bob_token.key}"}
    data = {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "bad", "threat_norm": "linf", field: value}
    response = client.post("/api/networks", data, **auth)
    assert response.status_code == 400 and response.json()["field"] == field
    assert not Network.objects.filter(name="bad").exists()


def test_leaderboard_row_carries_the_card_for_hover_and_focus(client, world) -> None:
    model_cards.network_card_update(network=world.pub, card=card_clean(**CARD), description="short note")
    html = client.get("/").content.decode()
    row = re.search(rf'<tr class="[^"]*" data-id="{world.pub.pk}">(.*?)</tr>', html, flags=re.S).group(1)
    button = re.search(r'<button type="button" class="card-btn"([^>]*)>', row)
    assert button and f'aria-controls="card-{world.pub.pk}"' in button.group(1)
    assert f'aria-describedby="card-{world.pub.pk}"' in button.group(1) and 'aria-expanded="false"' in button.group(1)
    pop = row[row.index(f'id="card-{world.pub.pk}"'):]
    assert "L∞, ε = 0.3" in pop and "short note" in pop and 'rel="nofollow noopener"' in pop
    assert "<script>alert" not in row
    # No card, no button.
    other = re.search(rf'data-id="{world.ref.pk}">(.*?)</tr>', html, flags=re.S).group(1)
    assert "card-btn" not in other


# --------------------------------------------------------------------------- the owner edits it


def test_owner_edits_the_card_later(client, world) -> None:
    client.force_login(world.alice)
    page = client.get(f"/networks/{world.pub.pk}/").content.decode()
    assert f'href="/networks/{world.pub.pk}/card/"' in page
    form = client.get(f"/networks/{world.pub.pk}/card/")
    assert form.status_code == 200 and 'id="id_paper_url"' in form.content.decode()
    response = client.post(f"/networks/{world.pub.pk}/card/", {**CARD, "description": "new text"})
    assert response.status_code == 302 and response["Location"] == f"/networks/{world.pub.pk}/#model-card"
    world.pub.refresh_from_db()
    assert world.pub.paper_url == CARD["paper_url"] and world.pub.description == "new text"
    # A bad value: the form again, the error beside its field, nothing changed.
    response = client.post(f"/networks/{world.pub.pk}/card/", {**CARD, "paper_url": "data:x", "description": "z"})
    assert response.status_code == 200 and "http:// or https://" in response.content.decode()
    world.pub.refresh_from_db()
    assert world.pub.paper_url == CARD["paper_url"] and world.pub.description == "new text"
    # Clearing every field is allowed.
    client.post(f"/networks/{world.pub.pk}/card/", {"paper_url": "", "description": ""})
    world.pub.refresh_from_db()
    assert model_cards.card_of(world.pub).is_empty and world.pub.description == ""


@pytest.mark.parametrize("role, network, expected", [
    ("anon", "pub", "login"), ("other", "pub", 403), ("other", "priv", 404), ("staff", "priv", 200),
    ("owner", "priv", 200), ("other", "ref", 403),
])
def test_only_owner_and_staff_may_edit(client, world, role, network, expected) -> None:
    net = getattr(world, network)
    before = (net.paper_url, net.description)
    if world.user(role):
        client.force_login(world.user(role))
    url = f"/networks/{net.pk}/card/"
    get, post = client.get(url), client.post(url, {"paper_url": "https://evil.example/", "description": "x"})
    if expected == "login":
        assert get.status_code == 302 and get["Location"].startswith("/accounts/login/")
        assert post.status_code == 302 and post["Location"].startswith("/accounts/login/")
    else:
        assert get.status_code == expected
        assert post.status_code == (302 if expected == 200 else expected)
    net.refresh_from_db()
    changed = (net.paper_url, net.description) != before
    assert changed == (expected == 200)
    page = client.get(f"/networks/{net.pk}/").content.decode() if expected != 404 else ""
    assert ('id="edit-card"' in page) == (expected == 200)


def test_card_form_needs_the_csrf_token(world) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world.alice)
    url = f"/networks/{world.pub.pk}/card/"
    assert strict.post(url, {"paper_url": "https://a.example/"}).status_code == 403
    world.pub.refresh_from_db()
    assert world.pub.paper_url == ""
    strict.get(url)
    token = strict.cookies["csrftoken"].value
    assert strict.post(url, {"paper_url": "https://a.example/", "csrfmiddlewaretoken": token}).status_code == 302
    world.pub.refresh_from_db()
    assert world.pub.paper_url == "https://a.example/"
