"""The sandbox child under bubblewrap sees nothing but its runtime, code, inputs and scratch.

Each test runs a real child (targets in tests/sandbox_targets.py) and checks from the
outside what it could do; the product-path attacks through real models are in
tests/test_hostile_models.py and tests/test_hostile_isolation.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from django.conf import settings

from evaluator.engine import isolation
from evaluator.engine.sandbox import SandboxLimits, SandboxUnavailable, run_in_sandbox

T = "tests.sandbox_targets:"

pytestmark = pytest.mark.skipif(
    bool(isolation.bwrap_problem()) and os.environ.get("CI") != "true",
    reason=f"bubblewrap unavailable here: {isolation.bwrap_problem()}",
)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_child_sees_no_media_no_database_no_host_tmp_and_no_network(tmp_path, settings):
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True, exist_ok=True)
    (media / "secret-weights.bin").write_bytes(b"private")
    host_tmp_file = Path("/tmp") / f"host-tmp-{os.getpid()}"
    host_tmp_file.write_text("host")
    # The SQLite file's folder when the database is a file (tests may run in memory; the
    # default deployment keeps it in <project>/var).
    name = Path(str(settings.DATABASES["default"]["NAME"]))
    db_dir = str(name.parent if name.is_absolute() else Path(settings.BASE_DIR) / "var")
    outside = tmp_path.parent / f"outside-{os.getpid()}.txt"
    work = tmp_path / "work"
    try:
        r = run_in_sandbox(
            T + "probe_world",
            {"paths": [str(media), db_dir, str(settings.VAR_DIR), "/tmp", "/root", "/home", "/etc"],
             "writes": [str(outside), str(media / "planted"), "/usr/planted", "/planted",
                        f"{isolation.PROJECT_ROOT}/evaluator/planted", "/job/ok.txt", "in/planted"],
             "ports": [5432, 6379]},
            workdir=work, env={"SANDBOX_TEST_SECRET": "x"},
        )
        assert r.ok and r.isolated, r
        seen, wrote = r.value["seen"], r.value["wrote"]
        assert seen[str(media)] == "missing" and seen[db_dir] == "missing" and seen[str(settings.VAR_DIR)] == "missing"
        # /tmp is the job's own: the host's files are not there (a checkout or runtime
        # under /tmp shows only as the folders leading to its read-only code).
        assert seen["/tmp"].startswith("listed") and host_tmp_file.name not in seen["/tmp"]
        assert seen["/home"] == "missing" and seen["/root"] in ("missing", "listed .pyenv")
        # /etc holds only the dynamic linker's cache: no passwd, no credentials.
        assert set(seen["/etc"].removeprefix("listed ").split(",")) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d"}
        assert wrote["/job/ok.txt"] == "written" and (work / "ok.txt").read_text() == "pwned"
        for path in (str(outside), str(media / "planted"), "/usr/planted", "/planted",
                     f"{isolation.PROJECT_ROOT}/evaluator/planted", "in/planted"):
            assert wrote[path].startswith("refused"), (path, wrote[path])
        assert not outside.exists() and not (media / "planted").exists()
        assert not (isolation.PROJECT_ROOT / "evaluator" / "planted").exists()
        assert r.value["uid"] == isolation.NOBODY
        assert "SANDBOX_TEST_SECRET" in r.value["env"] and "DATABASE_URL" not in r.value["env"]
        for port in ("5432", "6379"):
            assert r.value["connected"][port].startswith("refused")
    finally:
        host_tmp_file.unlink(missing_ok=True)


@pytest.mark.skipif(not _port_open(5432) and os.environ.get("CI") != "true", reason="PostgreSQL is not running here")
def test_postgres_is_reachable_from_the_host_but_not_from_the_child(tmp_path):
    # The refusal above means something only if the port is open out here.
    assert _port_open(5432)
    r = run_in_sandbox(T + "probe_world", {"paths": [], "writes": [], "ports": [5432]}, workdir=tmp_path)
    assert r.value["connected"]["5432"].startswith("refused")


def test_inputs_are_read_only_copies_and_models_are_verified(tmp_path):
    model = tmp_path / "stored-model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "v.index").write_bytes(b"weights")
    manifest = isolation.folder_manifest(model)
    work = tmp_path / "work"
    r = run_in_sandbox(T + "probe_world", {"paths": ["in/model", "in/model/variables"],
                                           "writes": ["in/model/saved_model.pb", "in/data.txt"], "ports": []},
                       workdir=work, inputs={"model": model, "data.txt": model / "saved_model.pb"},
                       manifests={"model": manifest})
    assert r.value["seen"] == {"in/model": "listed saved_model.pb,variables", "in/model/variables": "listed v.index"}
    assert all(v.startswith("refused") for v in r.value["wrote"].values()), r.value["wrote"]
    assert (model / "saved_model.pb").read_bytes() == b"graph"
    # A stored file changed after acceptance: the job never starts.
    (model / "variables" / "v.index").write_bytes(b"tampered")
    with pytest.raises(isolation.IntegrityError, match="variables/v.index differs"):
        run_in_sandbox(T + "add", {"a": 1, "b": 1}, workdir=tmp_path / "again",
                       inputs={"model": model}, manifests={"model": manifest})
    (model / "variables" / "extra").write_bytes(b"")
    with pytest.raises(isolation.IntegrityError, match="added|differs"):
        isolation.copy_verified(model, tmp_path / "copy", manifest)


def test_isolation_required_but_unavailable_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable, match="install bubblewrap"):
        run_in_sandbox(T + "add", {"a": 1, "b": 1}, workdir=tmp_path)
    # Development mode runs it without bubblewrap.
    r = run_in_sandbox(T + "add", {"a": 1, "b": 1}, workdir=tmp_path, limits=SandboxLimits(isolation=False))
    assert r.ok and not r.isolated and r.value["cwd"] == str(tmp_path.resolve())
