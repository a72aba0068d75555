"""The sandbox with real child processes (targets live in tests/sandbox_targets.py)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from evaluator.engine.errors import ContractError, SandboxError
from evaluator.engine.sandbox import SandboxLimits, SpareChild, network_isolation_available, run_in_sandbox

T = "tests.sandbox_targets:"


def _marked(marker: str) -> list[int]:
    """Host pids of processes whose environment carries `marker`. The child lives in its
    own PID namespace, so the pids it reports itself mean nothing out here."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"SANDBOX_TEST_MARK={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    with open(entry / "stat") as fh:
                        if fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                            found.append(int(entry.name))
            except OSError:
                continue
    return found


def sleeper_marker() -> str:
    """A unique `sleep` argument (targets' `marker=`): 1000.<random> seconds."""
    return f"1000.{int.from_bytes(os.urandom(4), 'big')}"


def sleeper_dead(marker: str, timeout: float = 2.0) -> bool:
    """No live `sleep <marker>` on the host (the sandbox tree was killed as a whole)."""
    end = time.monotonic() + timeout
    while True:
        alive = False
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                    with open(entry / "stat") as fh:
                        alive = alive or fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
            except OSError:
                continue
        if not alive:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def _all_dead(marker: str, timeout: float = 2.0) -> bool:
    """No live process carries `marker` (zombies waiting for this container's PID 1 count
    as dead)."""
    end = time.monotonic() + timeout
    while _marked(marker):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_returns_value_progress_cwd_and_clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "postgres://user:pw@db/x")
    reports: list[tuple[float, str]] = []
    r = run_in_sandbox(T + "add", {"a": 2, "b": 3}, workdir=tmp_path,
                       env={"EXTRA": "1"}, on_progress=lambda f, s: reports.append((f, s)))
    assert r.ok and r.outcome == "ok", r
    assert r.value["sum"] == 5
    assert r.value["cwd"] == "/job" == r.value["home"]  # the scratch, under bubblewrap
    assert r.isolated
    assert r.value["secret"] is None  # the worker's environment does not leak
    assert r.value["extra"] == "1"
    assert reports and reports[-1] == (1.0, "done")
    assert r.peak_rss_mb > 0 and r.seconds < 10
    assert r.unwrap() == r.value


def test_contract_error_is_rejected_with_its_message(tmp_path):
    r = run_in_sandbox(T + "reject", {}, workdir=tmp_path)
    assert r.outcome == "rejected" and not r.ok
    assert r.message == "input shape (None, 32, 32, 3) does not match the benchmark's (28, 28, 1)"
    assert r.error_type == "BadShape"
    assert "Traceback" not in r.message
    with pytest.raises(ContractError, match="does not match"):
        r.unwrap()


def test_other_exception_is_error_with_traceback(tmp_path):
    r = run_in_sandbox(T + "fail", {}, workdir=tmp_path)
    assert r.outcome == "error"
    assert r.message == "internal error: ValueError: boom in the engine"
    assert "Traceback (most recent call last)" in r.log and "sandbox_targets.py" in r.log
    with pytest.raises(SandboxError):
        r.unwrap()


def test_non_json_return_value_is_an_error(tmp_path):
    r = run_in_sandbox(T + "returns_array", {}, workdir=tmp_path)
    assert r.outcome == "error" and "not JSON-able" in r.message


def test_timeout_kills_the_whole_tree(tmp_path):
    pid_file = tmp_path / "pids"
    mark = os.urandom(6).hex()
    start = time.monotonic()
    r = run_in_sandbox(T + "hang", {"pid_file": "pids"}, workdir=tmp_path,
                       limits=SandboxLimits(timeout_s=2), env={"SANDBOX_TEST_MARK": mark})
    assert time.monotonic() - start < 4
    assert r.outcome == "timeout"
    assert r.message == "the job ran longer than 2 s and was stopped"
    assert len(pid_file.read_text().split()) == 2  # the child and its grandchild ran
    assert _all_dead(mark)


def test_exception_in_parent_still_kills_the_child(tmp_path):
    pid_file = tmp_path / "pid"
    mark = os.urandom(6).hex()

    def explode(fraction: float, stage: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_sandbox(T + "hang_after_progress", {"pid_file": "pid"},
                       workdir=tmp_path, limits=SandboxLimits(timeout_s=20),
                       on_progress=explode, env={"SANDBOX_TEST_MARK": mark})
    assert pid_file.read_text()  # it was running
    assert _all_dead(mark)


def test_cpu_limit(tmp_path):
    r = run_in_sandbox(T + "spin", {}, workdir=tmp_path,
                       limits=SandboxLimits(timeout_s=20, cpu_s=1))
    assert r.outcome == "timeout" and "CPU time" in r.message


def test_memory_ceiling_kills_the_child(tmp_path):
    r = run_in_sandbox(T + "hog", {"total_mb": 2048, "step_mb": 100}, workdir=tmp_path,
                       limits=SandboxLimits(timeout_s=30, memory_mb=300))
    assert r.outcome == "memory", r
    assert r.message == "the model exceeded the 300 MB memory ceiling"
    assert 300 < r.peak_rss_mb < 2048
    # The parent is fine and the next job runs normally.
    assert run_in_sandbox(T + "add", {"a": 1, "b": 1}, workdir=tmp_path).value["sum"] == 2


def test_segfault_is_a_crash(tmp_path):
    r = run_in_sandbox(T + "segfault", {}, workdir=tmp_path)
    assert r.outcome == "crash"
    assert r.message == "the evaluation process crashed (signal SIGSEGV)"
    assert "Segmentation fault" in r.log  # faulthandler's stack dump


def test_file_size_limit(tmp_path):
    r = run_in_sandbox(T + "big_file", {"mb": 3}, workdir=tmp_path,
                       limits=SandboxLimits(file_mb=1))
    assert r.outcome in ("error", "crash")
    assert "file size limit" in r.message or "SIGXFSZ" in r.message
    assert (tmp_path / "big.bin").stat().st_size <= 2**20


def test_output_flood_does_not_hang_and_log_is_a_tail(tmp_path):
    r = run_in_sandbox(T + "flood", {"mb": 20}, workdir=tmp_path)
    assert r.value == "flooded"
    assert r.log.endswith("last words\n") and len(r.log) <= 20_000


@pytest.fixture()
def listener():
    """A local TCP server, so the test does not depend on PostgreSQL running."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    yield srv.getsockname()[1]
    srv.close()


def test_network_isolation(tmp_path, listener):
    if not network_isolation_available():
        pytest.skip("`unshare --net` is missing or not permitted here: no network isolation")
    r = run_in_sandbox(T + "connect", {"port": listener}, workdir=tmp_path)
    assert r.isolated_network is True
    assert r.value.startswith("failed"), r.value
    # Control: with network allowed the same connection works.
    r = run_in_sandbox(T + "connect", {"port": listener}, workdir=tmp_path,
                       limits=SandboxLimits(network=True))
    assert r.isolated_network is False and r.value == "connected"


def test_tensorflow_runs_under_default_limits(tmp_path):
    r = run_in_sandbox(T + "tf_matmul", {}, workdir=tmp_path)
    assert r.ok, (r.message, r.log)
    assert isinstance(r.value, float)


def test_tensorflow_imports_in_the_child_without_optional_modules(tmp_path):
    """The child blocks what Keras imports only for optional features (a third of
    TensorFlow's import time); TensorFlow and Keras still load."""
    r = run_in_sandbox(T + "tf_import_leaves_optional_modules_out", {}, workdir=tmp_path)
    assert r.ok, (r.message, r.log)
    assert r.value == {"blocked": ["sklearn", "pandas", "matplotlib"], "keras_loaded": True}


def test_sandbox_module_imports_no_tensorflow():
    import subprocess

    code = ("import sys, evaluator.engine.sandbox as s; "
            "assert 'tensorflow' not in sys.modules and 'django' not in sys.modules")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                   env={**os.environ, "PYTHONPATH": str(root)})


# -- spare children: started ahead, the slow import done before the request arrives ----

SLOW = ("tests.slow_import",)  # sleeps 1.5 s at import, like TensorFlow's ~3 s


def _wait_ready(spare: SpareChild, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not spare.ready():
        assert time.monotonic() < end and spare.alive(), "the spare never became ready"
        time.sleep(0.05)


def test_spare_runs_the_request_without_paying_the_import(tmp_path):
    spare = SpareChild(tmp_path, preload=SLOW)
    _wait_ready(spare)
    r = run_in_sandbox(T + "preloaded", {"name": SLOW[0]}, workdir=tmp_path, spare=spare)
    assert r.ok, r
    assert r.value["loaded"] is True and r.value["cwd"] == "/job"
    assert r.seconds < 1.0  # the 1.5 s import happened before the request
    assert not spare.alive()  # one request per child: nothing of one job outlives it
    cold = run_in_sandbox(T + "preloaded", {"name": SLOW[0]}, workdir=tmp_path)
    assert cold.value["loaded"] is False


def test_spare_limits_apply_and_the_timeout_counts_from_the_request(tmp_path):
    limits = SandboxLimits(timeout_s=2.5, memory_mb=300)
    spare = SpareChild(tmp_path, limits=limits, preload=SLOW)
    _wait_ready(spare)
    time.sleep(1.5)  # idle time is not job time: 1.5 + 1.5 s import > the 2.5 s timeout
    assert run_in_sandbox(T + "add", {"a": 1, "b": 2}, workdir=tmp_path, limits=limits, spare=spare).value["sum"] == 3
    # The memory ceiling holds for a spare too (a longer timeout: bubblewrap's start
    # and the import must not decide this one).
    limits = SandboxLimits(timeout_s=30, memory_mb=300)
    spare = SpareChild(tmp_path, limits=limits, preload=SLOW)
    r = run_in_sandbox(T + "hog", {"total_mb": 2048, "step_mb": 100}, workdir=tmp_path, limits=limits, spare=spare)
    assert r.outcome == "memory", r


def test_a_dead_spare_is_replaced_by_a_fresh_child(tmp_path):
    spare = SpareChild(tmp_path, preload=SLOW)
    spare.discard()
    assert not spare.alive()
    r = run_in_sandbox(T + "add", {"a": 2, "b": 2}, workdir=tmp_path, spare=spare)
    assert r.ok and r.value["sum"] == 4


def test_a_discarded_or_orphaned_spare_exits(tmp_path):
    spare = SpareChild(tmp_path, preload=())
    _wait_ready(spare)
    spare.proc.stdin.close()  # what the parent's death does to the pipe
    assert spare.proc.wait(timeout=5) == 0
    other = SpareChild(tmp_path, preload=())
    try:
        with pytest.raises(ValueError, match="another workdir"):
            run_in_sandbox(T + "add", {"a": 1, "b": 1}, workdir=tmp_path / "elsewhere", spare=other)
    finally:
        other.discard()
