"""Starting a sandbox child: its limits, environment and rlimits, the bubblewrap (or
`unshare --net`) prefix, and spare children started ahead of their job.

Stdlib only, like engine.sandbox (which runs the job and reads its results).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from evaluator.engine import isolation
from evaluator.engine.errors import SandboxError

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 1800
    # RSS ceiling of the whole child tree, polled from /proc. RLIMIT_AS is deliberately
    # not used: TensorFlow reserves huge virtual ranges and fails under it.
    memory_mb: int = 6144
    cpu_s: int | None = None  # RLIMIT_CPU per process; None = 2 * timeout_s
    file_mb: int = 2048  # RLIMIT_FSIZE: largest file the child may write
    open_files: int = 1024  # RLIMIT_NOFILE
    # RLIMIT_NPROC counts every task (thread) of the real uid on the whole machine, not
    # just this tree, and TF starts ~2-3 threads per core per process. 4096 leaves room
    # for several concurrent TF jobs on a 64-core host while still stopping a fork bomb.
    # The kernel ignores it for root (CAP_SYS_RESOURCE); the memory ceiling still applies.
    processes: int = 4096
    network: bool = False  # False: run in a fresh network namespace when possible
    # True: under bubblewrap (engine.isolation); run_in_sandbox raises SandboxUnavailable
    # when bubblewrap cannot run here. False: development only (SANDBOX_ISOLATION=off).
    isolation: bool = True

    @property
    def cpu_limit_s(self) -> int:
        return self.cpu_s if self.cpu_s is not None else max(1, int(2 * self.timeout_s))

class SandboxUnavailable(SandboxError):
    """Isolation was asked for and bubblewrap cannot run here; nothing was started."""

@functools.cache
def _unshare_prefix() -> tuple[str, ...] | None:
    """`unshare --net` if it exists and is permitted here; probed once per process."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    try:
        probe = subprocess.run(
            [exe, "--net", "--", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (exe, "--net", "--") if probe.returncode == 0 else None

def network_isolation_available() -> bool:
    return _unshare_prefix() is not None

def _set_limit(res: int, soft: int, hard: int | None = None) -> None:
    # Never ask for more than the current hard limit: unprivileged setrlimit would fail
    # and a failing preexec_fn aborts the whole spawn.
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(res)
    if cur_hard != resource.RLIM_INFINITY and os.geteuid() != 0:
        soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    resource.setrlimit(res, (soft, hard))

def _make_preexec(limits: SandboxLimits) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: no dlopen in the child
    cpu = limits.cpu_limit_s

    def preexec() -> None:
        # Dies with the worker even if the worker is SIGKILLed and no finally runs.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # Soft limit sends SIGXCPU; the hard one, a little later, SIGKILL for a child
        # that catches SIGXCPU.
        _set_limit(resource.RLIMIT_CPU, cpu, cpu + 5)
        _set_limit(resource.RLIMIT_FSIZE, limits.file_mb * 2**20)
        _set_limit(resource.RLIMIT_NOFILE, limits.open_files)
        _set_limit(resource.RLIMIT_NPROC, limits.processes)
        _set_limit(resource.RLIMIT_CORE, 0)  # no core dumps of crashing models

    return preexec

def _child_env(workdir: Path, extra: dict | None, isolated: bool) -> dict[str, str]:
    # Built from scratch: the worker's environment holds DATABASE_URL, broker
    # credentials and Django secrets that the untrusted child must not see.
    home = isolation.SCRATCH if isolated else str(workdir)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": home,
        "TMPDIR": f"{home}/.sandbox/tmp",
        "PYTHONPATH": str(isolation.PROJECT_ROOT),
        "PYTHONUNBUFFERED": "1",  # the log tail is complete even after a SIGKILL
        "PYTHONDONTWRITEBYTECODE": "1",  # the child never writes into the project tree
        "LANG": "C.UTF-8",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env

class SpareChild:
    """A sandbox child started ahead of its job: it imports `preload` (TensorFlow: ~3 s)
    while nothing is asked of it, then waits on its stdin for a request.

    It is started with the limits and the clean environment of any sandbox child, in
    its own `workdir`, and runs exactly one request (`run_in_sandbox(..., spare=it)`,
    whose workdir must be this one) before it exits, like any child: nothing of one
    upload outlives its job. Until then it holds no untrusted data.
    """

    def __init__(
        self, workdir: Path, *, limits: SandboxLimits = SandboxLimits(), env: dict | None = None,
        preload: tuple[str, ...] = ("tensorflow",),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.limits, self.env = limits, dict(env or {})
        self.box = self.workdir / ".sandbox"
        isolation.prepare_workdir(self.workdir)
        for stale in ("result.json", "progress.jsonl", "output.log", "ready"):
            (self.box / stale).unlink(missing_ok=True)
        self.proc = _spawn(self.workdir, limits, env, ["--spare", ",".join(preload)], stdin=subprocess.PIPE)

    def matches(self, limits: SandboxLimits, env: dict | None) -> bool:
        """Whether it can run a job with these limits. The wall-clock timeout is the
        parent's to enforce, so a spare serves a job with a shorter one (a peer's cell)
        as long as its CPU rlimit, fixed at its start, is no shorter."""
        same = dataclasses.replace(limits, timeout_s=self.limits.timeout_s, cpu_s=self.limits.cpu_s)
        return self.limits == same and self.limits.cpu_limit_s >= limits.cpu_limit_s and self.env == dict(env or {})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """True once the preload is imported (the request would start at once)."""
        return (self.box / "ready").exists()

    def discard(self) -> None:
        """Kill it unused (limits changed, or its owner is shutting down)."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        self.proc.wait()

def _spawn(
    workdir: Path, limits: SandboxLimits, env: dict | None, args: list[str], *, stdin: int
) -> subprocess.Popen:
    if limits.isolation:
        if problem := isolation.bwrap_problem():
            raise SandboxUnavailable(f"evaluation sandbox unavailable: {problem}; install bubblewrap")
        prefix: tuple[str, ...] = (*isolation.bwrap_argv(workdir, network=limits.network), "--")
    else:
        prefix = () if limits.network else (_unshare_prefix() or ())
    box = workdir / ".sandbox"
    isolation.prepare_workdir(workdir)
    # The box is named relative to the cwd, which is the workdir inside and outside bwrap.
    cmd = [*prefix, sys.executable, "-m", "evaluator.engine.sandbox_child", ".sandbox", *args]
    with open(box / "output.log", "wb") as out:
        return subprocess.Popen(
            cmd, cwd=workdir, env=_child_env(workdir, env, limits.isolation), stdin=stdin,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_make_preexec(limits), close_fds=True,
        )
