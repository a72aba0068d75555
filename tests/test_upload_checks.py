"""The checks an upload passes before anything is stored: extension and magic bytes,
server-generated storage names, one file per request, the hourly rate limit, the size
cap while streaming (tests.fakes: no TensorFlow; the `world` fixture of tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from leaderboard.models import Network
from leaderboard.services import token_create
from tests.fakes import World, stub_targz, stub_zip

pytestmark = pytest.mark.django_db


def _api_upload(client, w: World, data: bytes, filename: str, **extra):
    return client.post("/api/networks", {"file": SimpleUploadedFile(filename, data), "name": "n", **extra},
                       HTTP_AUTHORIZATION=f"Token {w.bob_token.key}")


@pytest.mark.parametrize(
    "filename, kind, status, words",
    [
        ("model.zip", "zip", 202, None),
        ("MODEL.ZIP", "zip", 202, None),
        ("model.tar.gz", "targz", 202, None),
        ("model.tgz", "targz", 202, None),
        ("model", "zip", 202, None),  # no extension at all: the bytes decide
        ("model.exe", "zip", 400, "not a .zip, .tar.gz or .tgz"),
        ("model.zip.exe", "zip", 400, "not a .zip, .tar.gz or .tgz"),
        ("model.tar", "zip", 400, "not a .zip, .tar.gz or .tgz"),
        ("model.pdf", "targz", 400, "not a .zip, .tar.gz or .tgz"),
        ("model.tar.gz", "zip", 400, "first bytes say it is a .zip"),
        ("model.zip", "targz", 400, "first bytes say it is a .tar.gz"),
        ("model.zip", "png", 400, "not a .zip or .tar.gz archive"),
        ("model.zip", "empty", 400, "not a .zip or .tar.gz archive"),
    ],
)
def test_upload_extension_and_magic_bytes(client, world, filename, kind, status, words) -> None:
    data = {"zip": stub_zip(), "targz": stub_targz(), "png": b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
            "empty": b""}[kind]
    response = _api_upload(client, world, data, filename)
    assert response.status_code == status, response.content
    if words:
        assert words in response.json()["error"]
        assert not Network.objects.filter(owner=world.bob).exists()
    else:
        net = Network.objects.get(pk=response.json()["id"])
        suffix = "zip" if kind == "zip" else "tar.gz"
        assert net.archive == f"networks/{net.pk}/upload.{suffix}"


def test_upload_form_shows_the_extension_error(client, world) -> None:
    client.force_login(world.bob)
    response = client.post("/networks/upload/", {
        "name": "n", "archive": SimpleUploadedFile("model.rar", stub_zip()), "benchmark": "mnist-5k",
    })
    assert response.status_code == 200
    assert "not a .zip, .tar.gz or .tgz" in response.content.decode()
    assert not Network.objects.filter(owner=world.bob).exists()


@pytest.mark.parametrize("filename", ["../../../../tmp/evil.zip", "/etc/cron.d/evil.zip", "..\\..\\evil.zip",
                                      "evil\x00.zip", "<script>.zip"])
def test_storage_name_is_server_generated(client, world, settings, filename) -> None:
    media = Path(settings.MEDIA_ROOT)
    top = {p.name for p in media.iterdir()}
    data = stub_zip()  # built once: a second build can differ in its zip timestamps
    response = _api_upload(client, world, data, filename)
    assert response.status_code == 202, response.content
    net = Network.objects.get(pk=response.json()["id"])
    assert net.archive == f"networks/{net.pk}/upload.zip"
    assert (media / net.archive).read_bytes() == data
    assert {p.name for p in media.iterdir()} == top
    assert not Path("/tmp/evil.zip").exists() and not Path("/etc/cron.d/evil.zip").exists()


def test_one_file_per_request(client, world) -> None:
    w = world
    auth = {"HTTP_AUTHORIZATION": f"Token {w.bob_token.key}"}
    two = [SimpleUploadedFile("a.zip", stub_zip()), SimpleUploadedFile("b.zip", stub_zip())]
    response = client.post("/api/networks", {"file": two, "name": "n"}, **auth)
    assert response.status_code == 400 and "one file" in response.json()["error"]
    response = client.post("/api/networks", {"file": SimpleUploadedFile("a.zip", stub_zip()),
                                             "other": SimpleUploadedFile("b.zip", stub_zip()),
                                             "name": "n"}, **auth)
    assert response.status_code == 400 and "one file" in response.json()["error"]
    client.force_login(w.bob)
    response = client.post("/networks/upload/", {"name": "n", "archive": two})
    assert response.status_code == 200 and "one file" in response.content.decode()
    assert not Network.objects.filter(owner=w.bob).exists()


def test_rate_limit_counts_deleted_uploads_and_spares_staff(client, world, settings) -> None:
    w = world
    settings.UPLOADS_PER_HOUR = 2
    codes = [_api_upload(client, w, stub_zip(), "m.zip").status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert "2 uploads per hour" in _api_upload(client, w, stub_zip(), "m.zip").json()["error"]
    # Deleting uploads does not give the quota back.
    for net in Network.objects.filter(owner=w.bob):
        assert client.delete(f"/api/networks/{net.pk}",
                             HTTP_AUTHORIZATION=f"Token {w.bob_token.key}").status_code == 200
    assert not Network.objects.filter(owner=w.bob).exists()
    assert _api_upload(client, w, stub_zip(), "m.zip").status_code == 429
    # The form says the same.
    client.force_login(w.bob)
    response = client.post("/networks/upload/", {"name": "n", "archive": SimpleUploadedFile("m.zip", stub_zip()),
                                                 "benchmark": "mnist-5k"})
    assert response.status_code == 200 and "upload limit reached" in response.content.decode()
    # Another user has a quota of their own; staff have none.
    carol = User.objects.create_user("carol", password="pw-carol-123")
    auth = {"HTTP_AUTHORIZATION": f"Token {token_create(user=carol).key}"}
    assert client.post("/api/networks", {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "a"},
                       **auth).status_code == 202
    auth = {"HTTP_AUTHORIZATION": f"Token {w.staff_token.key}"}
    for _ in range(3):
        assert client.post("/api/networks", {"file": SimpleUploadedFile("m.zip", stub_zip()), "name": "s"},
                           **auth).status_code == 202


def test_upload_size_cap_is_enforced_while_streaming(client, world, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 20_000
    big = stub_zip() + b"\0" * 50_000
    response = _api_upload(client, world, big, "m.zip")
    assert response.status_code == 413 and "limit" in response.json()["error"]
    client.force_login(world.bob)
    response = client.post("/networks/upload/", {"name": "n", "archive": SimpleUploadedFile("m.zip", big)})
    assert response.status_code == 200 and "larger than" in response.content.decode()
    assert not Network.objects.filter(owner=world.bob).exists()
