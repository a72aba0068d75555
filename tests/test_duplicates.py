"""Duplicate uploads (issue 14): the same model uploaded again is answered with a link to
the network already on the board instead of a new row: by its archive's bytes at upload
(form and API), and by the sha256 manifest of its model files once the worker has
unpacked it (leaderboard.duplicates.network_duplicate_of, for the pipeline).

`world` (tests/conftest.py): alice owns a public and a private upload, bob is the other
user, root is staff; nothing reaches a broker.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evaluator.services import pipeline, storage
from leaderboard import services
from leaderboard.duplicates import network_duplicate_of, network_find_duplicate
from leaderboard.models import Network
from tests.fakes import stub_zip

pytestmark = pytest.mark.django_db

S = Network.Status


def _api(client, token, data: bytes, name: str, filename: str = "m.zip"):
    return client.post("/api/networks", {"file": SimpleUploadedFile(filename, data), "name": name},
                       HTTP_AUTHORIZATION=f"Token {token.key}")


def _stored_copies(data: bytes) -> list[Path]:
    """Stored archives holding exactly these bytes (the media folder is the session's)."""
    root = storage.media_path("networks")
    return [p for p in root.glob("*/upload.*") if p.read_bytes() == data]


def test_same_zip_twice_through_the_api_is_a_409_with_the_first(client, world) -> None:
    data = stub_zip()
    first = _api(client, world.bob_token, data, "first")
    assert first.status_code == 202
    rows = Network.objects.count()
    assert _stored_copies(data) == [storage.media_path(Network.objects.get(name="first").archive)]
    second = _api(client, world.bob_token, data, "second", filename="renamed.zip")
    assert second.status_code == 409
    body = second.json()
    assert body["id"] == first.json()["id"]
    assert body["url"] == f"http://testserver/api/networks/{body['id']}" == first.json()["url"]
    assert body["page"] == f"http://testserver/networks/{body['id']}/"
    assert "first" in body["error"] and f"network {body['id']}" in body["error"]
    # No new row, no file left behind.
    assert Network.objects.count() == rows
    assert _stored_copies(data) == [storage.media_path(Network.objects.get(name="first").archive)]
    assert not Network.objects.filter(name="second").exists()
    # Different bytes are a new network.
    assert _api(client, world.bob_token, stub_zip(), "third").status_code == 202


def test_same_zip_twice_through_the_form_links_the_first(client, world) -> None:
    data = stub_zip()
    client.force_login(world.bob)

    def post(name: str):
        return client.post("/networks/upload/", {"name": name, "archive": SimpleUploadedFile("m.zip", data),
                                                 "public": "on", "benchmark": "mnist-5k"})

    first = post("mine <b>")
    assert first.status_code == 302
    pk = Network.objects.get(name="mine <b>").pk
    second = post("again")
    assert second.status_code == 200
    html = second.content.decode()
    assert f'<a href="/networks/{pk}/" id="duplicate-link">mine &lt;b&gt;</a>' in html  # the name escaped
    assert 'class="error"' in html and not Network.objects.filter(name="again").exists()


def test_the_same_bytes_of_someone_else(client, world) -> None:
    data = stub_zip()
    assert _api(client, world.alice_token, data, "alice-copy").status_code == 202
    # Public: bob is told where it is.
    response = _api(client, world.bob_token, data, "bob-copy")
    assert response.status_code == 409 and response.json()["id"] == Network.objects.get(name="alice-copy").pk
    # Private: bob may not learn it exists, so his upload goes through as a new network.
    Network.objects.filter(name="alice-copy").update(is_public=False)
    assert _api(client, world.bob_token, data, "bob-copy").status_code == 202
    # Staff see everything, so staff are answered with the oldest.
    response = _api(client, world.staff_token, data, "staff-copy")
    assert response.status_code == 409 and response.json()["id"] == Network.objects.get(name="alice-copy").pk


def test_rejected_or_failed_networks_do_not_block_a_retry(client, world) -> None:
    data = stub_zip()
    pk = _api(client, world.bob_token, data, "v1").json()["id"]
    for status in (S.REJECTED, S.FAILED):
        Network.objects.filter(pk=pk).update(status=status)
        response = _api(client, world.bob_token, data, f"retry-{status}")
        assert response.status_code == 202
        Network.objects.filter(pk=response.json()["id"]).update(status=S.REJECTED)


def test_other_benchmarks_are_not_compared(client, world) -> None:
    from tests.fakes import fake_suite

    fake_suite(references=1, name="second-bench")
    data = stub_zip()
    assert _api(client, world.bob_token, data, "on-default").status_code == 202
    response = client.post("/api/networks", {"file": SimpleUploadedFile("m.zip", data), "name": "on-second",
                                             "benchmark": "second-bench"},
                           HTTP_AUTHORIZATION=f"Token {world.bob_token.key}")
    assert response.status_code == 202


def test_register_path_allows_a_deliberate_rerun(world, tmp_path) -> None:
    archive = tmp_path / "m.zip"
    archive.write_bytes(stub_zip())
    bench = world.pub.benchmark
    one = services.network_register_path(benchmark=bench, path=archive, name="rank-1", enqueue=False)
    two = services.network_register_path(benchmark=bench, path=archive, name="rank-2", enqueue=False)
    assert one.archive_sha256 == two.archive_sha256 and one.allow_duplicate and two.allow_duplicate
    # Networks registered on purpose again are never what an upload is matched against.
    assert network_find_duplicate(benchmark=bench, archive_sha256=one.archive_sha256) is None
    # Asked to check, it does: the third is new, the fourth is the third again.
    three = services.network_register_path(benchmark=bench, path=archive, name="rank-3", enqueue=False,
                                           allow_duplicate=False)
    with pytest.raises(services.DuplicateUpload) as info:
        services.network_register_path(benchmark=bench, path=archive, name="rank-4", enqueue=False,
                                       allow_duplicate=False)
    assert info.value.existing == three


# --------------------------------------------------------------------------- model files (worker side)


FILES = {"saved_model.pb": b"\x08\x01graph bytes", "variables/variables.index": b"index",
         "variables/variables.data-00000-of-00001": b"\x00" * 64, "fingerprint.pb": b"fp"}


def _zip(prefix: str, files: dict[str, bytes], method: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in sorted(files.items(), reverse=method == zipfile.ZIP_STORED):
            zf.writestr(f"{prefix}/{name}" if prefix else name, data)
    return buf.getvalue()


def _targz(prefix: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size, info.mtime = len(data), 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _accept(client, token, data: bytes, name: str, filename: str = "m.zip") -> Network:
    response = _api(client, token, data, name, filename)
    assert response.status_code == 202, response.content
    net = Network.objects.get(pk=response.json()["id"])
    assert pipeline.network_accept(network=net)  # what the worker does first: unpack and hash
    net.refresh_from_db()
    assert net.model_files and set(net.model_files) == set(FILES)
    return net


def _refused_as_copy_of(client, token, data: bytes, name: str, first: Network, filename: str = "m.zip") -> Network:
    """The worker unpacks and hashes, finds `first`'s files, and rejects with a link."""
    response = _api(client, token, data, name, filename)
    assert response.status_code == 202, response.content  # other bytes: the upload check passes
    net = Network.objects.get(pk=response.json()["id"])
    assert pipeline.network_accept(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED and f"/networks/{first.pk}/" in net.reason
    assert net.model_files == {} and not storage.media_path(f"networks/{net.pk}/model").exists()
    return net


def test_a_rezipped_identical_folder_is_found_by_its_model_files(client, world) -> None:
    first = _accept(client, world.bob_token, _zip("model", FILES, zipfile.ZIP_DEFLATED), "original")
    # The same files: another folder name, stored not deflated, other order; and as a .tar.gz.
    again = _refused_as_copy_of(client, world.bob_token, _zip("export/v2", FILES, zipfile.ZIP_STORED),
                                "rezipped", first)
    as_tar = _refused_as_copy_of(client, world.bob_token, _targz("m", FILES), "tarred", first, filename="m.tar.gz")
    assert len({first.archive_sha256, again.archive_sha256, as_tar.archive_sha256}) == 3  # bytes differ
    assert network_find_duplicate(benchmark=first.benchmark, manifest=first.model_files) == first
    assert network_find_duplicate(benchmark=first.benchmark, manifest=first.model_files, exclude_pk=first.pk) is None
    # One changed byte in one file: not a duplicate.
    changed = dict(FILES, **{"variables/variables.index": b"indey"})
    other = _accept(client, world.bob_token, _zip("model", changed, zipfile.ZIP_DEFLATED), "changed")
    assert network_duplicate_of(network=other) is None
    # An extra file: not a duplicate either.
    response = _api(client, world.bob_token, _zip("model", dict(FILES, **{"assets/vocab.txt": b"v"}),
                                                  zipfile.ZIP_DEFLATED), "extra")
    extra = Network.objects.get(pk=response.json()["id"])
    assert pipeline.network_accept(network=extra)
    extra.refresh_from_db()
    assert network_duplicate_of(network=extra) is None


def test_manifest_match_respects_visibility_liveness_and_references(client, world) -> None:
    first = _accept(client, world.alice_token, _zip("model", FILES, zipfile.ZIP_DEFLATED), "alice-original")
    Network.objects.filter(pk=first.pk).update(is_public=False)
    # Alice's private network stays invisible to bob: his copy is accepted.
    copy = _accept(client, world.bob_token, _zip("other", FILES, zipfile.ZIP_STORED), "bob-copy")
    assert network_duplicate_of(network=copy) is None
    Network.objects.filter(pk=first.pk).update(is_public=True)
    assert network_duplicate_of(network=copy) == first
    Network.objects.filter(pk=first.pk).update(is_public=True, status=S.REJECTED)
    assert network_duplicate_of(network=copy) is None  # a rejected network is not "on the board"
    Network.objects.filter(pk=first.pk).update(status=S.RANKED)
    Network.objects.filter(pk=copy.pk).update(is_reference=True)
    copy.refresh_from_db()
    assert network_duplicate_of(network=copy) is None  # references are never turned away
    Network.objects.filter(pk=copy.pk).update(is_reference=False)
    Network.objects.filter(pk=first.pk).update(is_reference=True)
    copy.refresh_from_db()
    assert network_duplicate_of(network=copy) is None  # an upload of a reference's files is ranked
    assert network_find_duplicate(benchmark=first.benchmark) is None  # nothing to compare


def test_duplicate_reason_names_and_links_the_existing_network(world) -> None:
    from leaderboard.duplicates import duplicate_reason

    text = duplicate_reason(world.pub)
    assert f"“{world.pub.name}”" in text and f"network {world.pub.pk}" in text
    assert f"/networks/{world.pub.pk}/" in text
    assert Path(storage.media_path("networks")).exists()
