"""Hostile form fields and names, through the real product path (tests/hostile_upload.py):
huge, blank or NUL-laden names and descriptions are refused with the limit named; script
in a name is stored as typed and escaped on every page; path-like names and file names
never reach the file system.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluator.services.pipeline import network_run_pipeline
from leaderboard.models import Network
from tests.hostile_archives import FAKE_MODEL, zip_bytes
from tests.hostile_upload import (  # noqa: F401 (fixtures)
    EVIL,
    S,
    assert_nothing_escaped,
    ctx,
    has,
    snapshot,
    upload,
    uploader,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


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
    assert has(words, error), error
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
    canary_before = snapshot(ctx.canary)
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
