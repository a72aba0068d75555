"""Who may do what: the permission matrix, CSRF on every form, API tokens, private data
(tests.fakes: no TensorFlow; the `world` fixture of tests/conftest.py). Downloads of
adversarial sets and perturbations: tests/test_downloads.py.

The matrix is one table: every page, API endpoint and action, each with the status code
expected for an anonymous visitor, the network's owner, another signed-in user and staff.
`alice` owns one public and one private upload; `bob` is the other user; `root` is staff
(a superuser: the operator of the admin site).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from evaluator.models import AdversarialDataset
from leaderboard import gallery
from leaderboard.models import ApiToken, Network
from leaderboard.services import token_create
from tests.fakes import EVAL, World, stub_zip

pytestmark = pytest.mark.django_db

ROLES = ("anon", "owner", "other", "staff")
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


# --------------------------------------------------------------------------- the matrix

# (method, url, auth, data, {role: expected}); auth "session" logs the role in, "token"
# sends its API token. Expected is a status code, or "302>PREFIX" for a redirect whose
# Location starts with PREFIX. In urls, {pub} {priv} {ref} {alice_token} are ids.
OWN_OR_STAFF = {"anon": 404, "owner": 200, "other": 404, "staff": 200}
EVERYONE = {"anon": 200, "owner": 200, "other": 200, "staff": 200}
SIGNED_IN = {"anon": f"302>{LOGIN}", "owner": 200, "other": 200, "staff": 200}
STAFF_ONLY = {"anon": f"302>{ADMIN_LOGIN}", "owner": f"302>{ADMIN_LOGIN}",
              "other": f"302>{ADMIN_LOGIN}", "staff": 200}
STAFF_ACTION = {**STAFF_ONLY, "staff": "302>/admin/"}
OWNER_DOWNLOAD = {"anon": 401, "owner": 200, "other": 403, "staff": 200}
STAFF_IMAGE = {"anon": 404, "owner": 404, "other": 404, "staff": 200}
STAFF_DOWNLOAD = {"anon": 401, "owner": 403, "other": 403, "staff": 200}

MATRIX: list[tuple[str, str, str, dict | None, dict[str, int | str]]] = [
    # Pages
    ("GET", "/", "session", None, EVERYONE),
    ("GET", "/networks/{pub}/", "session", None, EVERYONE),
    ("GET", "/networks/{ref}/", "session", None, EVERYONE),
    ("GET", "/networks/{priv}/", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/upload/", "session", None, SIGNED_IN),
    ("GET", "/matrix/", "session", None, EVERYONE),
    ("GET", "/benchmark/", "session", None, EVERYONE),
    ("GET", "/benchmark/samples.png", "session", None, EVERYONE),
    # Gallery images (SPEC §2 Secrecy): the sample the page shows to whoever sees the
    # page; any other index only to those who may download the set ({*_hidden}: not shown).
    ("GET", "/networks/{pub}/gallery/{pub_sample}.png?part=original", "session", None, EVERYONE),
    ("GET", "/networks/{pub}/gallery/{pub_sample}.png?part=adversarial", "session", None, EVERYONE),
    ("GET", "/networks/{pub}/gallery/{pub_hidden}.png?part=adversarial", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{pub}/gallery/{pub_hidden}.png?part=perturbation", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{ref}/gallery/{ref_sample}.png?part=adversarial", "session", None, EVERYONE),
    ("GET", "/networks/{ref}/gallery/{ref_hidden}.png?part=adversarial", "session", None, STAFF_IMAGE),
    ("GET", "/networks/{ref}/gallery/{ref_hidden}.png?part=original", "session", None, STAFF_IMAGE),
    ("GET", "/benchmark/universal.png", "session", None, {"anon": 403, "owner": 403, "other": 403, "staff": 200}),
    ("GET", "/networks/{priv}/gallery/0.png?part=original", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{priv}/gallery/0.png?part=perturbation", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{priv}/gallery/0.png?part=adversarial", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{pub}/confusion/{ref}.json", "session", None, EVERYONE),
    ("GET", "/networks/{pub}/confusion/{priv}.json", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{priv}/confusion/{ref}.json", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{pub}/badge.svg", "session", None, EVERYONE),
    ("GET", "/networks/{priv}/badge.svg", "session", None, OWN_OR_STAFF),
    ("GET", "/networks/{pub}/delete/", "session", None,
     {"anon": f"302>{LOGIN}", "owner": 200, "other": 403, "staff": 200}),
    ("GET", "/networks/{priv}/delete/", "session", None,
     {"anon": f"302>{LOGIN}", "owner": 200, "other": 404, "staff": 200}),
    ("GET", "/accounts/profile/", "session", None, SIGNED_IN),
    ("GET", "/accounts/signup/", "session", None,
     {"anon": 200, "owner": "302>/accounts/profile/", "other": "302>/accounts/profile/",
      "staff": "302>/accounts/profile/"}),
    ("GET", "/admin/", "session", None, STAFF_ONLY),
    ("GET", "/admin/leaderboard/network/", "session", None, STAFF_ONLY),
    ("GET", "/admin/leaderboard/network/{priv}/change/", "session", None, STAFF_ONLY),
    ("GET", "/admin/leaderboard/apitoken/", "session", None, STAFF_ONLY),
    ("GET", "/admin/evaluator/job/", "session", None, STAFF_ONLY),
    ("GET", "/admin/auth/user/", "session", None, STAFF_ONLY),
    # JSON API (token auth; anonymous sends no header)
    ("GET", "/api/leaderboard", "token", None, EVERYONE),
    ("GET", "/api/matrix", "token", None, EVERYONE),
    ("GET", "/api/networks/{pub}", "token", None, EVERYONE),
    ("GET", "/api/networks/{priv}", "token", None, OWN_OR_STAFF),
    ("GET", "/api/networks/{priv}", "session", None, OWN_OR_STAFF),
    # Downloads (SPEC §2 Secrecy): a network's adversarial set to its owner and staff,
    # references' sets and universal perturbations to staff; the eval split to everyone.
    # 401 asks an anonymous caller to authenticate; 404 where the network is not visible.
    ("GET", "/api/networks/{pub}/adversarial.npz", "token", None, OWNER_DOWNLOAD),
    ("GET", "/api/networks/{pub}/adversarial.npz", "session", None, OWNER_DOWNLOAD),
    ("GET", "/api/networks/{priv}/adversarial.npz", "token", None, OWN_OR_STAFF),
    ("GET", "/api/networks/{priv}/adversarial.npz", "session", None, OWN_OR_STAFF),
    ("GET", "/api/networks/{ref}/adversarial.npz", "token", None, STAFF_DOWNLOAD),
    ("GET", "/api/networks/{ref}/adversarial.npz", "session", None, STAFF_DOWNLOAD),
    ("GET", "/api/benchmarks/mnist-5k/universal.npz", "token", None, STAFF_DOWNLOAD),
    ("GET", "/api/benchmarks/mnist-5k/universal.npz", "session", None, STAFF_DOWNLOAD),
    ("GET", "/api/benchmarks/mnist-5k/eval-split.json", "token", None, EVERYONE),
    ("GET", "/api/benchmarks/mnist-5k/eval-split.csv", "session", None, EVERYONE),
    ("POST", "/api/networks", "token", {"upload": "model.zip"},
     {"anon": 401, "owner": 202, "other": 202, "staff": 202}),
    # A session alone does not authorise an API upload (the endpoint is CSRF-exempt).
    ("POST", "/api/networks", "session", {"upload": "model.zip"},
     {"anon": 401, "owner": 401, "other": 401, "staff": 401}),
    ("DELETE", "/api/networks/{pub}", "token", None,
     {"anon": 401, "owner": 200, "other": 403, "staff": 200}),
    ("DELETE", "/api/networks/{priv}", "token", None, OWN_OR_STAFF),
    ("DELETE", "/api/networks/{ref}", "token", None,
     {"anon": 401, "owner": 403, "other": 403, "staff": 200}),
    # Actions (forms; the CSRF token is checked separately below)
    ("POST", "/networks/upload/", "session", {"upload": "model.zip", "name": "via-form"},
     {"anon": f"302>{LOGIN}", "owner": "302>/networks/", "other": "302>/networks/",
      "staff": "302>/networks/"}),
    ("POST", "/networks/{pub}/visibility/", "session", {"public": "0"},
     {"anon": f"302>{LOGIN}", "owner": "302>/networks/", "other": 403, "staff": "302>/networks/"}),
    ("POST", "/networks/{priv}/visibility/", "session", {"public": "1"},
     {"anon": f"302>{LOGIN}", "owner": "302>/networks/", "other": 404, "staff": "302>/networks/"}),
    ("POST", "/networks/{pub}/delete/", "session", None,
     {"anon": f"302>{LOGIN}", "owner": "302>/accounts/profile/", "other": 403,
      "staff": "302>/accounts/profile/"}),
    ("POST", "/networks/{priv}/delete/", "session", None,
     {"anon": f"302>{LOGIN}", "owner": "302>/accounts/profile/", "other": 404,
      "staff": "302>/accounts/profile/"}),
    ("POST", "/accounts/tokens/", "session", {"label": "x"},
     {"anon": f"302>{LOGIN}", "owner": "302>/accounts/profile/", "other": "302>/accounts/profile/",
      "staff": "302>/accounts/profile/"}),
    # Revoking alice's token: only alice herself (staff revoke through the admin action).
    ("POST", "/accounts/tokens/{alice_token}/revoke/", "session", None,
     {"anon": f"302>{LOGIN}", "owner": "302>/accounts/profile/", "other": 404, "staff": 404}),
    ("POST", "/admin/leaderboard/network/", "session",
     {"action": "rerun", "_selected_action": "{pub}"}, STAFF_ACTION),
    ("POST", "/admin/leaderboard/apitoken/", "session",
     {"action": "revoke", "_selected_action": "{alice_token}"}, STAFF_ACTION),
    ("POST", "/admin/evaluator/job/", "session",
     {"action": "cancel", "_selected_action": "0"}, STAFF_ACTION),
    ("POST", "/admin/leaderboard/network/{pub}/delete/", "session", {"post": "yes"}, STAFF_ACTION),
]


def _sample(net: Network) -> list[int]:
    """The eval indices of the gallery a network's page shows."""
    adv = AdversarialDataset.objects.get(network=net)
    return gallery.gallery_sample(benchmark=net.benchmark, adversarial=adv).indices


def _fill(text: str, w: World) -> str:
    if "_sample}" in text or "_hidden}" in text:
        pub, ref = _sample(w.pub), _sample(w.ref)
        hidden = {k: next(i for i in range(EVAL) if i not in s) for k, s in (("pub", pub), ("ref", ref))}
        text = text.format_map({"pub_sample": pub[-1], "ref_sample": ref[-1], "pub_hidden": hidden["pub"],
                                "ref_hidden": hidden["ref"], "pub": "{pub}", "ref": "{ref}"})
    return text.format(pub=w.pub.pk, priv=w.priv.pk, ref=w.ref.pk, alice_token=w.alice_token.pk)


def _request(client: Client, w: World, role: str, method: str, url: str, auth: str, data: dict | None):
    headers = {}
    if role != "anon":
        if auth == "session":
            client.force_login(w.user(role))
        else:
            headers["HTTP_AUTHORIZATION"] = f"Token {w.token(role).key}"
    url = _fill(url, w)
    if method == "GET":
        return client.get(url, **headers)
    if method == "DELETE":
        return client.delete(url, **headers)
    payload = {k: _fill(v, w) for k, v in (data or {}).items()}
    if "upload" in payload:
        filename = payload.pop("upload")
        field = "file" if url.startswith("/api/") else "archive"
        payload[field] = SimpleUploadedFile(filename, stub_zip(), "application/zip")
        payload.setdefault("name", "via-api")
        payload.setdefault("public", "on")
    return client.post(url, payload, **headers)


def _cases():
    for method, url, auth, data, expected in MATRIX:
        for role in ROLES:
            yield pytest.param(method, url, auth, data, role, expected[role],
                               id=f"{method} {url} [{auth}] as {role}")


@pytest.mark.parametrize("method, url, auth, data, role, expected", list(_cases()))
def test_permission_matrix(client, world, method, url, auth, data, role, expected) -> None:
    response = _request(client, world, role, method, url, auth, data)
    if isinstance(expected, str):
        status, _, prefix = expected.partition(">")
        assert response.status_code == int(status), (response.status_code, response.get("Location"))
        assert response["Location"].startswith(prefix), response["Location"]
    else:
        assert response.status_code == expected, (
            response.status_code, response.get("Location"), response.content[:300]
        )


@pytest.mark.parametrize("role, allowed", [("anon", False), ("other", False), ("owner", True), ("staff", True)])
def test_denied_actions_change_nothing_and_allowed_ones_do(client, world, role, allowed) -> None:
    """The matrix checks codes; this checks the effect behind them."""
    w = world
    _request(client, w, role, "POST", "/networks/{pub}/visibility/", "session", {"public": "0"})
    _request(client, w, role, "POST", "/networks/{priv}/delete/", "session", None)
    w.pub.refresh_from_db()
    assert w.pub.is_public is not allowed
    assert Network.objects.filter(pk=w.priv.pk).exists() is not allowed
    client.logout()
    _request(client, w, role, "DELETE", "/api/networks/{pub}", "token", None)
    assert Network.objects.filter(pk=w.pub.pk).exists() is not allowed
    if role != "owner":
        _request(client, w, role, "POST", "/accounts/tokens/{alice_token}/revoke/", "session", None)
        w.alice_token.refresh_from_db()
        assert w.alice_token.revoked_at is None


# --------------------------------------------------------------------------- private data


def _ids(rows) -> set[int]:
    return {r["id"] for r in rows}


@pytest.mark.parametrize("role, sees", [("anon", False), ("other", False), ("owner", True), ("staff", True)])
def test_private_network_absent_from_leaderboard_matrix_and_api_for_others(client, world, role, sees) -> None:
    w = world
    if role != "anon":
        client.force_login(w.user(role))
    link = f'/networks/{w.priv.pk}/"'
    for page in ("/", "/?kind=uploads", "/matrix/", f"/networks/{w.pub.pk}/"):
        html = client.get(page).content.decode()
        assert (link in html or "alice-secret" in html) is sees, page
    if not sees:  # the benchmark page lists references only, for everyone
        html = client.get("/benchmark/").content.decode()
        assert link not in html and "alice-secret" not in html
    # The API, through the session and through a token.
    for headers in ({}, {"HTTP_AUTHORIZATION": f"Token {w.token(role).key}"} if role != "anon" else {}):
        board = client.get("/api/leaderboard", **headers).json()
        matrix = client.get("/api/matrix", **headers).json()
        assert (w.priv.pk in _ids(board["networks"])) is sees
        assert (w.priv.pk in _ids(matrix["networks"])) is sees
        # The detail of alice's *public* network must not name her private one among
        # the attacks it was evaluated on.
        detail = client.get(f"/api/networks/{w.pub.pk}", **headers).json()
        others = {o["id"] for o in detail["confusion_matrices"]["others"]}
        assert (w.priv.pk in others) is sees
        assert ("alice-secret" in str(detail)) is sees


def test_private_gallery_images_404_for_others_but_not_owner(client, world) -> None:
    w = world
    urls = [f"/networks/{w.priv.pk}/gallery/{i}.png?part={part}"
            for i in (0, 1) for part in ("original", "perturbation", "adversarial")]
    for user in (None, w.bob):
        if user:
            client.force_login(user)
        for url in urls:
            assert client.get(url).status_code == 404, (user, url)
    client.force_login(w.alice)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png", url


@pytest.mark.parametrize("role", ROLES)
def test_gallery_images_beyond_the_shown_sample_only_to_those_who_may_download(client, world, role) -> None:
    """SPEC §2 Secrecy: walking /gallery/<i>.png over every index must not rebuild a set
    the viewer may not download: only the images the page itself shows are served."""
    w = world
    if role != "anon":
        client.force_login(w.user(role))
    for net, whole in ((w.pub, role in ("owner", "staff")), (w.ref, role == "staff")):
        html = client.get(f"/networks/{net.pk}/").content.decode()
        shown = {int(i) for i in re.findall(rf"/networks/{net.pk}/gallery/(\d+)\.png\?part=adversarial", html)}
        assert len(shown) == gallery.GALLERY_SIZE and shown == set(_sample(net))
        # Every index of the adversarial images where they are refused; a spread where not.
        for part, indices in (("adversarial", range(0, EVAL, 5 if whole else 1)),
                              ("perturbation", range(0, EVAL, 23)), ("original", range(1, EVAL, 23))):
            asked = shown | set(indices)
            served = set()
            for i in asked:
                response = client.get(f"/networks/{net.pk}/gallery/{i}.png?part={part}")
                assert response.status_code in (200, 404), (part, i, response.status_code)
                if response.status_code == 200:
                    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
                    assert "private" in response["Cache-Control"]
                    served.add(i)
            assert served == (asked if whole else shown), (net.name, role, part)
        assert client.get(f"/networks/{net.pk}/gallery/{EVAL}.png").status_code == 404


def test_making_a_network_private_hides_it_at_once(client, world) -> None:
    w = world
    client.force_login(w.alice)
    client.post(f"/networks/{w.pub.pk}/visibility/", {"public": "0"})
    client.logout()
    for url in (f"/networks/{w.pub.pk}/", f"/api/networks/{w.pub.pk}",
                f"/networks/{w.pub.pk}/gallery/0.png?part=original", f"/networks/{w.pub.pk}/badge.svg",
                f"/api/networks/{w.pub.pk}/adversarial.npz"):
        assert client.get(url).status_code == 404, url
    assert w.pub.pk not in _ids(client.get("/api/leaderboard").json()["networks"])


# --------------------------------------------------------------------------- API tokens


def test_revoked_token_stops_working_everywhere(client, world) -> None:
    w = world
    auth = {"HTTP_AUTHORIZATION": f"Token {w.alice_token.key}"}

    def upload():
        return client.post("/api/networks", {"file": SimpleUploadedFile("m.zip", stub_zip()),
                                             "name": "t"}, **auth)

    assert upload().status_code == 202
    assert client.get(f"/api/networks/{w.priv.pk}", **auth).status_code == 200
    client.force_login(w.alice)
    assert client.post(f"/accounts/tokens/{w.alice_token.pk}/revoke/").status_code == 302
    client.logout()
    assert upload().status_code == 401
    assert client.get(f"/api/networks/{w.priv.pk}", **auth).status_code == 404
    assert client.delete(f"/api/networks/{w.pub.pk}", **auth).status_code == 401
    assert w.priv.pk not in _ids(client.get("/api/leaderboard", **auth).json()["networks"])
    # A revoked token never comes back, and a new one works.
    client.force_login(w.alice)
    client.post(f"/accounts/tokens/{w.alice_token.pk}/revoke/")
    w.alice_token.refresh_from_db()
    assert w.alice_token.revoked_at is not None
    fresh = token_create(user=w.alice)
    auth = {"HTTP_AUTHORIZATION": f"Token {fresh.key}"}
    client.logout()
    assert upload().status_code == 202


def test_admin_revoke_and_inactive_user_stop_tokens(client, world) -> None:
    w = world
    auth = {"HTTP_AUTHORIZATION": f"Token {w.bob_token.key}"}
    assert client.get("/api/leaderboard", **auth).status_code == 200
    client.force_login(w.staff)
    client.post("/admin/leaderboard/apitoken/", {"action": "revoke", "_selected_action": [w.bob_token.pk]})
    client.logout()
    w.bob_token.refresh_from_db()
    assert w.bob_token.revoked_at is not None
    files = {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "t"}
    assert client.post("/api/networks", files, **auth).status_code == 401
    # A deactivated account's tokens stop too.
    User.objects.filter(pk=w.alice.pk).update(is_active=False)
    files = {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "t"}
    assert client.post("/api/networks", files,
                       HTTP_AUTHORIZATION=f"Token {w.alice_token.key}").status_code == 401


@pytest.mark.parametrize("header", ["Token", "Token ", "Bearer {key}", "Token {key}x", "token  nope",
                                    "Basic YWxpY2U6cHc="])
def test_malformed_or_wrong_tokens_are_anonymous(client, world, header) -> None:
    w = world
    value = header.format(key=w.alice_token.key)
    assert client.get(f"/api/networks/{w.priv.pk}", HTTP_AUTHORIZATION=value).status_code == 404
    files = {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "t"}
    assert client.post("/api/networks", files, HTTP_AUTHORIZATION=value).status_code == 401


def test_token_key_is_shown_once_and_only_to_its_owner(client, world) -> None:
    w = world
    client.force_login(w.alice)
    client.post("/accounts/tokens/", {"label": "laptop"})
    key = ApiToken.objects.filter(user=w.alice, label="laptop").get().key
    assert key in client.get("/accounts/profile/").content.decode()
    assert key not in client.get("/accounts/profile/").content.decode()
    client.force_login(w.bob)
    html = client.get("/accounts/profile/").content.decode()
    assert key not in html and w.alice_token.key not in html


# --------------------------------------------------------------------------- CSRF

FORMS = [
    ("/networks/upload/", {"name": "csrf", "upload": "model.zip"}, "owner"),
    ("/networks/{pub}/visibility/", {"public": "0"}, "owner"),
    ("/networks/{pub}/delete/", {}, "owner"),
    ("/accounts/tokens/", {"label": "x"}, "owner"),
    ("/accounts/tokens/{alice_token}/revoke/", {}, "owner"),
    ("/accounts/signup/", {"username": "eve", "password1": "pw-eve-12345!", "password2": "pw-eve-12345!"}, "anon"),
    (LOGIN, {"username": "alice", "password": "pw-alice-123"}, "anon"),
    ("/accounts/logout/", {}, "owner"),
    ("/admin/leaderboard/network/", {"action": "rerun", "_selected_action": "{pub}"}, "staff"),
    (ADMIN_LOGIN, {"username": "root", "password": "pw-root-123"}, "anon"),
]


def _strict_post(w: World, url: str, data: dict, role: str, *, with_token: bool):
    client = Client(enforce_csrf_checks=True)
    if role != "anon":
        client.force_login(w.user(role))
    payload = {k: _fill(v, w) for k, v in data.items()}
    if "upload" in payload:
        payload["archive"] = SimpleUploadedFile(payload.pop("upload"), stub_zip())
        payload["benchmark"] = "mnist-5k"
    if with_token:
        client.get(LOGIN if role == "anon" else "/accounts/profile/")  # sets the csrftoken cookie
        payload["csrfmiddlewaretoken"] = client.cookies["csrftoken"].value
    return client.post(_fill(url, w), payload)


@pytest.mark.parametrize("url, data, role", FORMS, ids=[f[0] for f in FORMS])
def test_every_form_needs_the_csrf_token(world, url, data, role) -> None:
    w = world
    before = (Network.objects.count(), ApiToken.objects.count(), User.objects.count(),
              ApiToken.objects.filter(revoked_at__isnull=False).count(),
              Network.objects.filter(is_public=True).count())
    response = _strict_post(w, url, data, role, with_token=False)
    assert response.status_code == 403, response.status_code
    assert "CSRF" in response.content.decode()
    after = (Network.objects.count(), ApiToken.objects.count(), User.objects.count(),
             ApiToken.objects.filter(revoked_at__isnull=False).count(),
             Network.objects.filter(is_public=True).count())
    assert before == after
    # Control: the same request with the token goes through (it was the token, not the rest).
    assert _strict_post(w, url, data, role, with_token=True).status_code in (200, 302)


def test_api_delete_on_a_session_needs_csrf_but_a_token_does_not(world) -> None:
    w = world
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(w.alice)
    response = strict.delete(f"/api/networks/{w.pub.pk}")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert Network.objects.filter(pk=w.pub.pk).exists()
    strict.get("/accounts/profile/")
    response = strict.delete(f"/api/networks/{w.pub.pk}", HTTP_X_CSRFTOKEN=strict.cookies["csrftoken"].value)
    assert response.status_code == 200
    plain = Client(enforce_csrf_checks=True)
    response = plain.delete(f"/api/networks/{w.priv.pk}", HTTP_AUTHORIZATION=f"Token {w.alice_token.key}")
    assert response.status_code == 200


