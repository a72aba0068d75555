"""What every hostile-upload test shares (tests/test_hostile_*.py): a case of the corpus,
the three ways in (HTTP API, upload form, upload service), the payloads' context and
the checks that nothing escaped.

Payloads aim at a unique `<uuid>-pwned` name: as absolute paths (/tmp, a canary
folder), as `../` escapes from the extraction folder, through links, and as the target
of file-writing TensorFlow ops. After each case none of those paths may exist and the
canary folder must be unchanged.
"""

from __future__ import annotations

import io
import os
import re
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
from tests.hostile_archives import Ctx

S = Network.Status
EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


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


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


# --------------------------------------------------------------------------- fixtures


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


# --------------------------------------------------------------------------- the ways in


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


# --------------------------------------------------------------------------- checks


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _must_not_exist(ctx: Ctx, network_pk: int | None) -> list[Path]:
    """Every place a hostile payload could have put its file."""
    places = [Path("/tmp"), Path("/"), ctx.canary, ctx.tmp, Path.cwd(), Path(django_settings.VAR_DIR)]
    if network_pk is not None:
        # Each ancestor of the extraction folder: where `../` escapes would land.
        places += list((storage.media_path(f"networks/{network_pk}") / "model" / "a").parents)
    return [place / ctx.pwn for place in places]


def has(word: str | tuple[str, ...], text: str) -> bool:
    """word (or any of a tuple of words) in text, raw or HTML-escaped."""
    words = word if isinstance(word, tuple) else (word,)
    return any(w in text or escape(w) in text for w in words)


def assert_nothing_escaped(ctx: Ctx, network_pk: int | None, canary_before: dict[str, bytes]) -> None:
    leaked = [p for p in _must_not_exist(ctx, network_pk) if os.path.lexists(p)]
    assert not leaked, f"hostile upload wrote outside the media folder: {leaked}"
    assert snapshot(ctx.canary) == canary_before


def assert_refused_with_a_reason(case: Case, ctx: Ctx, uploader: User, client, settings) -> None:
    """One case through the product path: refused at the door, or stored and then ended
    by the pipeline with a reason that names the problem; nothing escaped, nothing
    half-done left, and the reason shown escaped to its owner, never a 500."""
    for key, value in case.settings.items():
        setattr(settings, key, value)
    canary_before = snapshot(ctx.canary)
    data = case.build(ctx)
    status, error, pk = upload(client, uploader, via=case.via, data=data, filename=case.filename,
                               name=f"hostile {case.id}")
    if case.refused is not None:
        assert status == (200 if case.via == "form" else case.refused), (status, error)  # the form re-renders
        for word in case.words:
            assert has(word, error), (word, error)
        assert pk is None and not Network.objects.filter(owner=uploader).exists()
        assert_nothing_escaped(ctx, None, canary_before)
        return
    assert status == 202 and pk is not None, (status, error)
    net = Network.objects.get(pk=pk)
    assert net.archive in (f"networks/{pk}/upload.zip", f"networks/{pk}/upload.tar.gz")
    # A folder left by an earlier test's network of the same id (ids are reused after a
    # rollback) would make the "nothing extracted" check below meaningless.
    assert not storage.media_path(f"networks/{pk}/model").exists()

    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == case.status, (net.status, net.reason)
    print(f"{case.id}: {net.reason}")  # the corpus's reasons, for `pytest -s`
    for word in case.words:
        assert has(word, net.reason), (word, net.reason)
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


def sandbox_children() -> list[int]:
    """Live (non-zombie) sandbox children of this process, its waiting spares aside (each
    holds nothing until a job's request: services.spares)."""
    from evaluator.services import spares

    waiting = {spare.proc.pid for spare in spares.spares_waiting()}
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
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X") and b"sandbox_child" in cmdline \
                and int(entry.name) not in waiting:
            found.append(int(entry.name))
    return found
