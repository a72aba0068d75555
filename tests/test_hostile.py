"""A hostile-input corpus, every case through the real product path.

Each case is generated here (no fixture files), uploaded the way a user would (HTTP POST
to /api/networks, the upload form, or the upload service), then run through the real
pipeline in-process on the session's `mini` benchmark (engine work in real sandboxed
children). Each must end `rejected` (or `failed`) with a reason that names the problem,
or be refused at the door with a 4xx and a message; never an HTTP 500, never a file
outside the media folder, and afterwards the same process still ranks a good model.

Payloads aim at a unique `<uuid>-pwned` name: as absolute paths (/tmp, a canary
folder), as `../` escapes from the extraction folder, through links, and as the target
of file-writing TensorFlow ops. After each case none of those paths may exist and the
canary folder must be unchanged.

Notes on the "network and process op" cases: core TensorFlow has no socket or
subprocess op. The ways a graph reaches the network are its file-system ops on remote
schemes (ReadFile/WriteFile/MatchingFiles on gs://, s3://, http paths), DecodeProto with
a `file://` descriptor source, and PrintV2's `file://` output stream; code execution is
PyFunc/EagerPyFunc (tf.py_function). All of them are covered below.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import sys
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape

from evaluator.models import Evaluation, Job
from evaluator.services import storage
from evaluator.services.pipeline import network_run_pipeline
from leaderboard import services
from leaderboard.models import Network
from leaderboard.services import token_create
from tests.hostile_archives import (
    Ctx,
    FAKE_MODEL,
    encrypted_zip,
    file_head,
    pax_bomb,
    symlink_zip_member,
    tar_file,
    tar_special,
    targz_bomb,
    targz_bytes,
    targz_folder,
    truncated,
    zip_bomb,
    zip_bytes,
    zip_folder,
)
from tests.hostile_models import (
    m_decode_proto_file_descriptor,
    m_fails_at_inference,
    m_five_classes,
    m_garbage_graph,
    m_infinite_loop,
    m_int_input,
    m_matching_files,
    m_memory_hog,
    m_missing_variables,
    m_nan,
    m_no_signatures,
    m_print_to_file,
    m_py_function,
    m_rank3_output,
    m_read_file,
    m_read_in_cond_branch,
    m_remote_filesystem,
    m_two_inputs,
    m_two_outputs,
    m_write_file,
    m_write_in_nested_function,
    m_write_in_unused_method,
    m_write_in_while_body,
    m_wrong_shape,
    model_zip,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

S = Network.Status
EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'



def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _must_not_exist(ctx: Ctx, network_pk: int | None) -> list[Path]:
    """Every place a hostile payload could have put its file."""
    places = [Path("/tmp"), Path("/"), ctx.canary, ctx.tmp, Path.cwd(), Path(django_settings.VAR_DIR)]
    if network_pk is not None:
        # Each ancestor of the extraction folder: where `../` escapes would land.
        places += list((storage.media_path(f"networks/{network_pk}") / "model" / "a").parents)
    return [place / ctx.pwn for place in places]


def _has(word: str | tuple[str, ...], text: str) -> bool:
    """word (or any of a tuple of words) in text, raw or HTML-escaped."""
    words = word if isinstance(word, tuple) else (word,)
    return any(w in text or escape(w) in text for w in words)


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], bytes]
    # Every entry must be in the reason (or the HTTP error); a tuple entry: any one of it.
    words: tuple[str | tuple[str, ...], ...]
    via: str = "api"  # api | form | service
    filename: str = "model.zip"
    refused: int | None = None  # refused at the door with this HTTP status: no network row
    settings: dict[str, Any] = field(default_factory=dict)
    status: str = S.REJECTED


CASES = [
    # --- archives: refused by the extractor, before TensorFlow is imported
    Case("zip-slip", lambda c: zip_bytes([(f"model/../../../../../{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("escapes the archive folder",)),
    Case("zip-absolute-path", lambda c: zip_bytes([(c.tmp_target, b"pwned"), *FAKE_MODEL]),
         ("absolute path",)),
    Case("zip-backslash-traversal", lambda c: zip_bytes([(f"..\\..\\..\\{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("backslashes",)),
    Case("zip-drive-letter", lambda c: zip_bytes([(f"C:/Windows/{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("absolute path",)),
    Case("zip-symlink", lambda c: zip_bytes([(symlink_zip_member("model/link", str(c.canary)), str(c.canary).encode()),
                                             (f"model/link/{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("symbolic link", "links are not allowed")),
    Case("zip-encrypted", lambda c: encrypted_zip(),
         ("encrypted",)),
    Case("zip-duplicate-member", lambda c: zip_bytes([*FAKE_MODEL, ("model/saved_model.pb", b"\x08\x02")]),
         ("appears more than once",), via="service"),
    Case("zip-bomb-300MB", lambda c: zip_bomb(), ("expands more than 200 times",)),
    Case("zip-too-many-members", lambda c: zip_bytes([(f"model/f{i}", b"") for i in range(2001)]),
         ("more than 2000 members",)),
    Case("zip-long-member-name", lambda c: zip_bytes([("model/" + "a/" * 600 + "x", b"x")]),
         ("over 1024 bytes",)),
    Case("zip-truncated", lambda c: truncated(zip_folder(c.tiny_cnn_dir)), ("truncated or corrupt",)),
    Case("zip-nested-archive", lambda c: zip_bytes([("upload/model.zip", zip_folder(c.tiny_cnn_dir))]),
         ("no saved_model.pb", "nested archives are not unpacked")),
    Case("zip-empty", lambda c: b"PK\x05\x06" + bytes(18), ("no saved_model.pb",)),
    Case("zip-pbtxt-only", lambda c: zip_bytes([("model/saved_model.pbtxt", b"meta_graphs {}")]),
         ("only a binary saved_model.pb is accepted",)),
    Case("zip-two-models", lambda c: zip_bytes([("a/saved_model.pb", b"\x08\x01"), ("b/saved_model.pb", b"\x08\x01")]),
         ("several SavedModels",)),
    Case("zip-html-in-member-name",
         lambda c: zip_bytes([('<script>alert("x")</script>/../../' + c.pwn, b"pwned"), *FAKE_MODEL]),
         ("escapes the archive folder",), via="form"),
    Case("tar-absolute-path", lambda c: targz_bytes([tar_file(c.canary_target, b"pwned")]),
         ("absolute path",), filename="model.tar.gz"),
    Case("tar-traversal", lambda c: targz_bytes([tar_file(f"model/../../../../{c.pwn}", b"pwned")]),
         ("escapes the archive folder",), filename="model.tar.gz"),
    Case("tar-symlink", lambda c: targz_bytes([tar_special("model/link", tarfile.SYMTYPE, str(c.canary)),
                                               tar_file(f"model/link/{c.pwn}", b"pwned")]),
         ("symbolic link", "links are not allowed"), filename="model.tgz"),
    Case("tar-hardlink", lambda c: targz_bytes([tar_special("model/saved_model.pb", tarfile.LNKTYPE, "/etc/passwd")]),
         ("hard link",), filename="model.tar.gz"),
    Case("tar-char-device", lambda c: targz_bytes([tar_special("model/null", tarfile.CHRTYPE)]),
         ("device, fifo or other special file",), filename="model.tar.gz", via="form"),
    Case("tar-fifo", lambda c: targz_bytes([tar_special("model/fifo", tarfile.FIFOTYPE)]),
         ("device, fifo or other special file",), filename="model.tar.gz", via="service"),
    Case("tar-oversized-pax-header", lambda c: pax_bomb(), ("oversized tar metadata header",),
         filename="model.tar.gz"),
    Case("targz-bomb-100MB", lambda c: targz_bomb(), ("compression bomb",), filename="model.tar.gz"),
    Case("targz-truncated", lambda c: truncated(targz_folder(c.tiny_cnn_dir)), ("truncated or corrupt",),
         filename="model.tgz"),
    Case("gzip-but-not-tar", lambda c: gzip.compress(b"hello world " * 100), ("truncated or corrupt",),
         filename="model.tar.gz"),
    Case("targz-empty", lambda c: targz_bytes([]), ("no saved_model.pb",), filename="model.tar.gz"),
    # --- refused at the door: nothing stored, no pipeline
    Case("wrong-magic-png", lambda c: b"\x89PNG\r\n\x1a\n" + bytes(200), ("not a .zip or .tar.gz archive",),
         refused=400),
    Case("wrong-magic-elf", lambda c: file_head(Path(sys.executable).resolve()),
         ("not a .zip or .tar.gz archive",), refused=400, via="form"),
    Case("uncompressed-tar", lambda c: targz_bytes(_fake_model_tar(), compress=False),
         ("not a .zip or .tar.gz archive",), refused=400, filename="model.tar"),
    Case("zip-named-exe", lambda c: zip_bytes(FAKE_MODEL), ("not a .zip, .tar.gz or .tgz",), refused=400,
         filename="model.exe"),
    Case("zip-named-tar-gz", lambda c: zip_bytes(FAKE_MODEL), ("first bytes say it is a .zip",), refused=400,
         filename="model.tar.gz", via="form"),
    Case("empty-file", lambda c: b"", ("not a .zip or .tar.gz archive",), refused=400),
    # --- malicious models: refused by the op scan, before anything loads them
    Case("op-read-file", model_zip(m_read_file), ("disallowed TensorFlow op", "ReadFile"), via="form"),
    Case("op-write-file", model_zip(m_write_file), ("WriteFile",), via="form"),
    Case("op-write-file-in-while-body", model_zip(m_write_in_while_body), ("WriteFile", "while_body"), via="form"),
    Case("op-read-file-in-cond-branch", model_zip(m_read_in_cond_branch), ("ReadFile", "cond_true"), via="form"),
    Case("op-write-file-in-nested-function", model_zip(m_write_in_nested_function), ("WriteFile", "inner"),
         via="form"),
    Case("op-write-file-in-unused-method", model_zip(m_write_in_unused_method), ("WriteFile", "evil"), via="form"),
    Case("op-matching-files", model_zip(m_matching_files), ("MatchingFiles",), via="form"),
    Case("op-py-function", model_zip(m_py_function), ("EagerPyFunc",), via="form"),
    Case("op-print-to-file", model_zip(m_print_to_file), ("PrintV2",), via="form"),
    Case("op-decode-proto-file-descriptor", model_zip(m_decode_proto_file_descriptor), ("DecodeProtoV2",),
         via="api"),
    Case("op-remote-filesystem-gs", model_zip(m_remote_filesystem), ("ReadFile",), via="api"),
    # --- broken models: refused by the loader's contract checks
    Case("garbage-saved-model-pb", model_zip(m_garbage_graph), ("not a valid SavedModel protobuf",)),
    Case("missing-variables", model_zip(m_missing_variables), ("could not be loaded",), via="form"),
    Case("no-signatures", model_zip(m_no_signatures), ("no signatures",), via="form"),
    Case("wrong-input-shape", model_zip(m_wrong_shape), ("input shape (None, 32, 32, 3)", "(28, 28, 1)"),
         via="form"),
    Case("int-input-dtype", model_zip(m_int_input), ("input dtype int32", "float32"), via="form"),
    Case("five-class-output", model_zip(m_five_classes), ("output has 5 classes", "10"), via="form"),
    Case("two-inputs", model_zip(m_two_inputs), ("takes 2 inputs",), via="form"),
    Case("two-outputs", model_zip(m_two_outputs), ("2 outputs",), via="form"),
    Case("rank-3-output", model_zip(m_rank3_output), ("not [batch, classes]",), via="form"),
    Case("nan-outputs", model_zip(m_nan), ("NaN or Inf",), via="form"),
    Case("fails-at-inference", model_zip(m_fails_at_inference), ("fails on the probe images",), via="form"),
    # --- resource exhaustion: stopped by the sandbox, with low limits for speed
    # The sandbox's RSS ceiling kills it, or TensorFlow's allocator refuses first (OOM).
    Case("memory-hog-3GiB", model_zip(m_memory_hog), (("memory ceiling", "OOM"),), via="form",
         settings={"SANDBOX_MEMORY_MB": 1500}),
    Case("infinite-loop", model_zip(m_infinite_loop), ("ran longer than 20 s",), via="form",
         settings={"SANDBOX_TIMEOUT_S": 20}),
]


def _fake_model_tar() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_file(name, data) for name, data in FAKE_MODEL]


def test_corpus_is_big_and_unique() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- running a case


@pytest.fixture
def ctx(tmp_path, tiny_cnn_dir) -> Ctx:
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("do not touch")
    work = tmp_path / "work"
    work.mkdir()
    return Ctx(tmp=work, pwn=f"rl-{uuid.uuid4().hex[:12]}-pwned", canary=canary, tiny_cnn_dir=tiny_cnn_dir)


@pytest.fixture
def uploader(django_user_model, settings) -> User:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return django_user_model.objects.create_user(f"mallory-{uuid.uuid4().hex[:6]}", password="pw-mallory-1")


def upload(client, user: User, *, via: str, data: bytes, filename: str, name: str,
           description: str = "", bench_name: str = "mini") -> tuple[int, str, int | None]:
    """(HTTP status, error text, network id) of one upload through the chosen path."""
    if via == "service":
        from leaderboard.models import Benchmark

        try:
            net = services.network_upload(benchmark=Benchmark.objects.get(name=bench_name), owner=user, name=name,
                                          description=description, archive=io.BytesIO(data), filename=filename,
                                          enqueue=False)
        except services.UploadError as exc:
            return 400, str(exc), None
        return 202, "", net.pk
    if via == "api":
        response = client.post("/api/networks", {
            "file": SimpleUploadedFile(filename, data), "name": name, "description": description,
            "benchmark": bench_name,
        }, HTTP_AUTHORIZATION=f"Token {token_create(user=user).key}")
        assert response["Content-Type"] == "application/json"
        body = response.json()
        return response.status_code, body.get("error", ""), body.get("id")
    client.force_login(user)
    response = client.post("/networks/upload/", {
        "name": name, "description": description, "archive": SimpleUploadedFile(filename, data),
        "public": "on", "benchmark": bench_name,
    })
    if response.status_code == 302:
        match = re.fullmatch(r"/networks/(\d+)/", response["Location"])
        assert match, response["Location"]
        return 202, "", int(match.group(1))
    html = response.content.decode()
    errors = " ".join(re.findall(r'class="error[^"]*"[^>]*>(.*?)<', html, flags=re.S))
    return response.status_code, errors or html, None


def assert_nothing_escaped(ctx: Ctx, network_pk: int | None, canary_before: dict[str, bytes]) -> None:
    leaked = [p for p in _must_not_exist(ctx, network_pk) if os.path.lexists(p)]
    assert not leaked, f"hostile upload wrote outside the media folder: {leaked}"
    assert _snapshot(ctx.canary) == canary_before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upload_is_refused_with_a_reason(case: Case, ctx, uploader, client, settings,
                                                 mini_benchmark) -> None:
    for key, value in case.settings.items():
        setattr(settings, key, value)
    canary_before = _snapshot(ctx.canary)
    data = case.build(ctx)
    status, error, pk = upload(client, uploader, via=case.via, data=data, filename=case.filename,
                               name=f"hostile {case.id}")
    if case.refused is not None:
        assert status == (200 if case.via == "form" else case.refused), (status, error)  # the form re-renders
        for word in case.words:
            assert _has(word, error), (word, error)
        assert pk is None and not Network.objects.filter(owner=uploader).exists()
        assert_nothing_escaped(ctx, None, canary_before)
        return
    assert status == 202 and pk is not None, (status, error)
    net = Network.objects.get(pk=pk)
    assert net.archive in (f"networks/{pk}/upload.zip", f"networks/{pk}/upload.tar.gz")

    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == case.status, (net.status, net.reason)
    print(f"{case.id}: {net.reason}")  # the corpus's reasons, for `pytest -s`
    for word in case.words:
        assert _has(word, net.reason), (word, net.reason)
    assert "Traceback" not in net.reason and len(net.reason) < 2000
    # Nothing half-done is left: no results, no extracted model, no running job.
    assert not Evaluation.objects.filter(network=net).exists()
    assert not storage.media_path(f"networks/{pk}/model").exists()
    assert not Job.objects.filter(network=net, state__in=[Job.State.QUEUED, Job.State.RUNNING]).exists()
    if case.status == S.REJECTED:  # the upload's own fault: never retried
        # Archives are refused by the worker before any child starts (no job at all);
        # models by their one sandbox job, never retried.
        assert list(Job.objects.filter(network=net).values_list("attempts", flat=True)) in ([], [1])
    assert_nothing_escaped(ctx, pk, canary_before)
    # The owner sees the reason, escaped, on the page and in the API; nobody gets a 500.
    client.force_login(uploader)
    page = client.get(f"/networks/{pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert escape(net.reason) in html
    assert "<script>alert" not in html
    api = client.get(f"/api/networks/{pk}")
    assert api.status_code == 200 and api.json()["reason"] == net.reason
    assert client.get("/accounts/profile/").status_code == 200


# --------------------------------------------------------------------------- hostile form fields


@pytest.mark.parametrize("via", ["api", "form", "service"])
@pytest.mark.parametrize(
    "name, description, words",
    [
        ("n" * 10_000, "", "100 characters"),
        ("", "", "required"),
        ("   ", "", "required"),
        ("ok", "d" * 6000, "5000 characters"),
        ("nul\x00byte", "", ("NUL character", "Null characters")),
    ],
    ids=["huge-name", "empty-name", "blank-name", "huge-description", "nul-in-name"],
)
def test_hostile_form_fields_are_refused(client, uploader, mini_benchmark, via, name, description, words) -> None:
    status, error, pk = upload(client, uploader, via=via, data=zip_bytes(FAKE_MODEL), filename="m.zip",
                               name=name, description=description)
    assert status in (200, 400), status  # the form re-renders (200) with the error; the API says 400
    assert _has(words, error), error
    assert pk is None and not Network.objects.filter(owner=uploader).exists()


@pytest.mark.parametrize("via", ["api", "form"])
def test_script_in_name_and_description_is_stored_but_escaped(client, uploader, mini_benchmark, via) -> None:
    status, _, pk = upload(client, uploader, via=via, data=zip_bytes([("model/readme.txt", b"no model")]),
                           filename="m.zip", name=EVIL[:100], description=EVIL * 3)
    assert status == 202
    net = Network.objects.get(pk=pk)
    assert net.name == EVIL[:100] and net.description == EVIL * 3  # stored as typed
    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED and "no saved_model.pb" in net.reason
    client.force_login(uploader)  # the owner sees a rejected network in these lists
    for url in ("/?benchmark=mini", f"/networks/{pk}/", "/accounts/profile/", f"/networks/{pk}/delete/"):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
        assert "&lt;script&gt;alert" in html, url
    svg = client.get(f"/networks/{pk}/badge.svg").content.decode()
    assert "<script" not in svg


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini",
                                  "networks/1/upload.zip", "%2e%2e%2fetc"])
def test_path_like_names_never_reach_the_file_system(client, uploader, mini_benchmark, ctx, name) -> None:
    canary_before = _snapshot(ctx.canary)
    status, _, pk = upload(client, uploader, via="api", data=zip_bytes([("model/readme.txt", b"x")]),
                           filename=f"../../../../tmp/{ctx.pwn}.zip", name=name)
    assert status == 202
    net = Network.objects.get(pk=pk)
    assert net.name == name
    assert net.archive == f"networks/{pk}/upload.zip"  # server-generated, whatever the client said
    assert not Path(f"/tmp/{ctx.pwn}.zip").exists()
    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED
    assert_nothing_escaped(ctx, pk, canary_before)
    assert Path("/etc/passwd").read_text().startswith("root:")


# --------------------------------------------------------------------------- the next job


def _sandbox_children() -> list[int]:
    """Live (non-zombie) sandbox children of this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X") and b"sandbox_child" in cmdline:
            found.append(int(entry.name))
    return found


def test_after_the_corpus_the_worker_still_ranks_a_good_model(client, uploader, mini_benchmark, tiny_cnn_dir) -> None:
    """Runs last in this file: the same process that just went through every hostile case
    (memory blow-up and endless loop included) ranks the next upload normally, and the
    hostile name it carries is escaped on every public page."""
    assert _sandbox_children() == []
    status, error, pk = upload(client, uploader, via="api", data=zip_folder(tiny_cnn_dir), filename="good.zip",
                               name=EVIL[:100], description=EVIL)
    assert status == 202, error
    net = Network.objects.get(pk=pk)
    assert network_run_pipeline(network=net) is True
    net.refresh_from_db()
    assert net.status == S.RANKED and net.level is not None and net.reason == ""
    assert _sandbox_children() == []
    client.logout()
    for url in ("/?benchmark=mini", f"/networks/{pk}/", "/matrix/?benchmark=mini", "/benchmark/?benchmark=mini"):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
    assert pk in {row["id"] for row in client.get("/api/leaderboard?benchmark=mini").json()["networks"]}
    svg = client.get(f"/networks/{pk}/badge.svg").content.decode()
    assert "<script" not in svg
