"""The JSON API of SPEC §5 over synthetic stored results."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from leaderboard.models import ApiToken, Network
from leaderboard.services import token_create, token_revoke
from tests.fakes import fake_network, fake_suite

pytestmark = pytest.mark.django_db

ROW_KEYS = {"id", "name", "level", "score", "status", "clean_accuracy", "universal_accuracy",
            "universal_robustness", "universal_tier", "whitebox_accuracy", "is_reference", "flags"}




def _zip_bytes() -> bytes:
    """A distinct archive at every call: the same bytes twice are a duplicate (409)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/saved_model.pb", b"not really a graph")
        zf.writestr("model/assets/nonce.txt", os.urandom(8).hex())
    return buf.getvalue()


def _auth(user: User) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {token_create(user=user).key}"}


def test_leaderboard_rows_sorted_by_level_then_score(client) -> None:
    suite = fake_suite(references=4, uploads=3)
    data = client.get("/api/leaderboard").json()
    assert data["benchmark"] == "mnist-5k"
    rows = data["networks"]
    assert len(rows) == 7
    assert ROW_KEYS <= set(rows[0])
    keys = [(-(r["level"] or 0), -(r["score"] or 0)) for r in rows]
    assert keys == sorted(keys)
    refs = [r for r in rows if r["is_reference"]]
    assert {r["id"] for r in refs} == {n.pk for n in suite.references}
    first = Network.objects.get(pk=rows[0]["id"])
    assert rows[0]["clean_accuracy"]["value"] == pytest.approx(first.clean_accuracy)
    assert rows[0]["clean_accuracy"]["low"] < rows[0]["clean_accuracy"]["value"] < rows[0]["clean_accuracy"]["high"]
    assert rows[0]["universal_robustness"] == pytest.approx(first.universal_accuracy / first.clean_accuracy)


def test_unknown_benchmark_is_404(client) -> None:
    fake_suite(references=2)
    assert client.get("/api/leaderboard?benchmark=nope").status_code == 404


def test_network_detail_has_confusions_and_pairwise(client) -> None:
    suite = fake_suite(references=3, uploads=1)
    up = suite.uploads[0]
    data = client.get(f"/api/networks/{up.pk}").json()
    assert data["id"] == up.pk and data["progress"] == 100
    clean = np.array(data["confusion_matrices"]["clean"])
    assert clean.shape == (10, 10) and clean.sum() == len(suite.labels)
    assert len(data["pairwise"]) == 3
    for item in data["pairwise"]:
        assert 0.0 <= item["p_value"] <= 1.0
        assert item["wins"] == (item["ours"] > item["theirs"])
    assert "model_dir" not in data["info"]


def test_matrix_is_square_and_matches_detail(client) -> None:
    suite = fake_suite(references=3, uploads=2)
    data = client.get("/api/matrix").json()
    n = len(data["networks"])
    assert n == 5 and np.array(data["matrix"]).shape == (n, n)
    ids = [x["id"] for x in data["networks"]]
    # Ordered by the ladder: references first, least robust first.
    assert ids[:3] == suite.benchmark.ladder


def test_private_network_invisible_to_others(client, alice, bob) -> None:
    suite = fake_suite(references=2)
    secret = fake_network(suite.benchmark, suite.labels, name="secret", strength=0.5, owner=alice,
                          is_public=False, peers=suite.references, seed=5)
    assert client.get(f"/api/networks/{secret.pk}").status_code == 404
    assert client.get(f"/api/networks/{secret.pk}", **_auth(bob)).status_code == 404
    assert client.get(f"/api/networks/{secret.pk}", **_auth(alice)).status_code == 200
    ids = [r["id"] for r in client.get("/api/leaderboard").json()["networks"]]
    assert secret.pk not in ids
    matrix_ids = [x["id"] for x in client.get("/api/matrix").json()["networks"]]
    assert secret.pk not in matrix_ids
    assert client.get(f"/api/networks/{secret.pk}/adversarial.npz").status_code == 404


def test_upload_requires_valid_token(client, alice) -> None:
    fake_suite(references=2)
    archive = io.BytesIO(_zip_bytes())
    assert client.post("/api/networks", {"file": archive, "name": "x"}).status_code == 401
    token = token_create(user=alice)
    token_revoke(token=token)
    archive.seek(0)
    resp = client.post("/api/networks", {"file": archive, "name": "x"},
                       HTTP_AUTHORIZATION=f"Token {token.key}")
    assert resp.status_code == 401


def test_upload_accepted_returns_202_and_queues(client, alice, django_capture_on_commit_callbacks, queued) -> None:
    fake_suite(references=2)
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/api/networks", {"file": io.BytesIO(_zip_bytes()), "name": "mine",
                                             "description": "<b>hi</b>"}, **_auth(alice))
    assert resp.status_code == 202
    body = resp.json()
    net = Network.objects.get(pk=body["id"])
    assert body["status"] == "queued" and body["url"].endswith(f"/api/networks/{net.pk}")
    assert net.owner == alice and net.archive.endswith("upload.zip")
    assert queued == [("network_evaluate", (net.pk,))]


@pytest.mark.parametrize(
    "payload, status, words",
    [
        ({"file": b"\x00junk bytes here", "name": "junk"}, 400, "not a .zip or .tar.gz"),
        ({"file": "ZIP", "name": ""}, 400, "name is required"),
        ({"file": "ZIP", "name": "n" * 101}, 400, "longer than 100"),
        ({"name": "nofile"}, 400, "exactly one file"),
    ],
)
def test_upload_rejections(client, alice, payload, status, words) -> None:
    fake_suite(references=2)
    data = dict(payload)
    if data.get("file") == "ZIP":
        data["file"] = io.BytesIO(_zip_bytes())
    elif "file" in data:
        data["file"] = io.BytesIO(data["file"])
    resp = client.post("/api/networks", data, **_auth(alice))
    assert resp.status_code == status
    assert words in resp.json()["error"]
    assert Network.objects.filter(is_reference=False).count() == 0


def test_upload_over_size_cap_is_413(client, alice, settings) -> None:
    fake_suite(references=2)
    settings.MAX_UPLOAD_BYTES = 10_000
    big = io.BytesIO(b"PK\x03\x04" + b"\x00" * 50_000)
    resp = client.post("/api/networks", {"file": big, "name": "big"}, **_auth(alice))
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]


def test_upload_rate_limit(client, alice, settings, monkeypatch) -> None:
    fake_suite(references=2)
    settings.UPLOADS_PER_HOUR = 2
    monkeypatch.setattr("evaluator.services.lifecycle._send", lambda name, *args: None)
    headers = _auth(alice)
    codes = [client.post("/api/networks", {"file": io.BytesIO(_zip_bytes()), "name": f"n{i}"},
                         **headers).status_code for i in range(3)]
    assert codes == [202, 202, 429]


def test_delete_own_network_only(client, alice, bob, monkeypatch) -> None:
    suite = fake_suite(references=2)
    mine = fake_network(suite.benchmark, suite.labels, name="mine", strength=0.5, owner=alice,
                        peers=suite.references, seed=3)
    monkeypatch.setattr("evaluator.services.lifecycle._send", lambda name, *args: None)
    assert client.delete(f"/api/networks/{mine.pk}", **_auth(bob)).status_code == 403
    assert client.delete(f"/api/networks/{mine.pk}", **_auth(alice)).status_code == 200
    assert not Network.objects.filter(pk=mine.pk).exists()


def test_downloads_are_npz(client) -> None:
    """Staff download references' sets and universal perturbations (SPEC §2 Secrecy;
    who else may is tests/test_permissions.py)."""
    suite = fake_suite(references=2)
    ref = suite.references[0]
    staff = User.objects.create_user("root", is_staff=True)
    resp = client.get(f"/api/networks/{ref.pk}/adversarial.npz", **_auth(staff))
    assert resp.status_code == 200
    data = np.load(io.BytesIO(b"".join(resp.streaming_content)))
    assert data["adversarial"].shape[0] == len(suite.labels)
    resp = client.get("/api/benchmarks/mnist-5k/universal.npz", **_auth(staff))
    assert resp.status_code == 200
    data = np.load(io.BytesIO(b"".join(resp.streaming_content)))
    assert data["perturbations"].shape[0] == 6


def test_create_token_command(alice, capsys) -> None:
    call_command("create_token", "alice")
    key = capsys.readouterr().out.strip()
    assert ApiToken.objects.get(key=key).user == alice


# --------------------------------------------------------------------------- errors are JSON (issue 14)


def _json_error(response, status: int) -> str:
    """Every /api/ error: JSON with an `error` message and the status asked for."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    assert b"<html" not in response.content.lower()
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


def test_unknown_network_ids_are_json_404(client, alice) -> None:
    suite = fake_suite(references=2)
    for url in ("/api/networks/999999", "/api/networks/999999/adversarial.npz",
                "/api/networks/99999999999999999999999999"):
        assert "no such network" in _json_error(client.get(url), 404), url
    assert "no such network" in _json_error(client.delete("/api/networks/999999", **_auth(alice)), 404)
    # A network of someone else's that is private reads the same as one that never existed.
    secret = fake_network(suite.benchmark, suite.labels, name="secret", strength=0.5, owner=alice,
                          is_public=False, peers=suite.references, seed=5)
    assert "no such network" in _json_error(client.get(f"/api/networks/{secret.pk}"), 404)


@pytest.mark.parametrize("url", ["/api/leaderboard?benchmark=nope", "/api/matrix?benchmark=nope",
                                 "/api/benchmarks/nope/universal.npz", "/api/benchmarks/nope/eval-split.json",
                                 "/api/benchmarks/nope/eval-split.csv"])
def test_unknown_benchmark_is_json_404_on_every_get_endpoint(client, url) -> None:
    fake_suite(references=2)
    staff = User.objects.create_user("root", is_staff=True)
    for headers in ({}, _auth(staff)):
        assert "nope" in _json_error(client.get(url, **headers), 404)


def test_bad_uploads_are_json_400(client, alice, settings) -> None:
    fake_suite(references=2)
    headers = _auth(alice)
    assert "exactly one file" in _json_error(client.post("/api/networks", {"name": "x"}, **headers), 400)
    assert "exactly one file" in _json_error(client.post("/api/networks", {}, **headers), 400)
    # An unknown benchmark in the upload's fields is bad input, not a missing page.
    data = {"file": io.BytesIO(_zip_bytes()), "name": "x", "benchmark": "nope"}
    assert "nope" in _json_error(client.post("/api/networks", data, **headers), 400)
    # A request Django itself refuses (a Host it does not serve) is JSON too.
    settings.ALLOWED_HOSTS = ["testserver"]
    _json_error(client.get("/api/leaderboard", HTTP_HOST="evil.example"), 400)
    assert Network.objects.filter(is_reference=False).count() == 0


def test_refusals_are_json_401_and_403(client, alice, bob) -> None:
    suite = fake_suite(references=2)
    mine = fake_network(suite.benchmark, suite.labels, name="mine", strength=0.5, owner=alice,
                        peers=suite.references, seed=3)
    assert "token" in _json_error(client.post("/api/networks", {"file": io.BytesIO(_zip_bytes())}), 401)
    assert "token" in _json_error(client.delete(f"/api/networks/{mine.pk}"), 401)
    assert "owner" in _json_error(client.delete(f"/api/networks/{mine.pk}", **_auth(bob)), 403)
    assert "secret" in _json_error(client.get(f"/api/networks/{mine.pk}/adversarial.npz", **_auth(bob)), 403)


@pytest.mark.parametrize("method, url, allowed", [
    ("post", "/api/leaderboard", "GET"), ("delete", "/api/matrix", "GET"), ("get", "/api/networks", "POST"),
    ("put", "/api/networks/{pk}", "GET, DELETE"), ("post", "/api/networks/{pk}/adversarial.npz", "GET"),
    ("patch", "/api/benchmarks/mnist-5k/universal.npz", "GET"),
    ("post", "/api/benchmarks/mnist-5k/eval-split.json", "GET"),
])
def test_wrong_method_is_json_405(alice, method, url, allowed) -> None:
    from django.test import Client

    suite = fake_suite(references=2)
    # With the session and CSRF checks on, as from a browser: the answer is still the 405.
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = getattr(client, method)(url.format(pk=suite.references[0].pk))
    assert method.upper() in _json_error(response, 405)
    assert response["Allow"] == allowed


@pytest.mark.parametrize("url", ["/api/nope", "/api/", "/api/networks/abc", "/api/leaderboard/",
                                 "/api/networks/1/gallery/0.png"])
def test_unknown_api_url_is_json_404(client, url) -> None:
    assert "no such API endpoint" in _json_error(client.get(url), 404)


def test_a_crash_is_json_500_without_details(monkeypatch) -> None:
    from django.test import Client

    fake_suite(references=2)

    def boom(**kwargs):
        raise RuntimeError("secret internals /var/lib/ladder")

    monkeypatch.setattr("leaderboard.selectors.matrix_for", boom)
    response = Client(raise_request_exception=False).get("/api/matrix")
    assert "internal server error" in _json_error(response, 500)
    assert b"secret internals" not in response.content and b"Traceback" not in response.content


def test_pages_outside_the_api_keep_their_html_errors(client) -> None:
    fake_suite(references=2)
    for url in ("/nope/", "/networks/999999/", "/apiary", "/benchmark/?benchmark=nope"):
        response = client.get(url)
        assert response.status_code == 404 and response["Content-Type"].startswith("text/html"), url
        assert "Not found" in response.content.decode()
    response = client.post("/matrix/")
    assert response.status_code in (403, 405) and not response["Content-Type"].startswith("application/json")
