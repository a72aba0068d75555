"""Run engine work in a resource-limited child process (the sandbox).

Uploaded SavedModels are untrusted: they are loaded and run only in a child process
started here, never in the Celery worker itself. The worker's main process must never
import TensorFlow (it is not fork-safe), so this module is stdlib only; the child
(`evaluator.engine.sandbox_child`) imports whatever the target needs.

Protocol, all through files in `<workdir>/.sandbox/`:
  request.json   written by the parent: {"target": "pkg.mod:fn", "kwargs": {...}}
  progress.jsonl appended by the child: one {"f": fraction, "s": stage} per report
  result.json    written by the child: {"status": "ok" | "rejected" | "error", ...}
  output.log     the child's stdout and stderr (a file, so a flooding child never blocks)

Return values and kwargs must be JSON-able. Big arrays are not returned: the target writes
them into files in its workdir (its cwd, e.g. `np.save("adv.npy", x)`) and returns the
file names; the caller reads them after `run_in_sandbox` returns.

Isolation (engine.isolation): the child runs under bubblewrap as uid 65534 in its own
user, mount, PID, IPC, UTS and network namespaces and sees only the runtime, the engine's
code, its inputs (read-only, `in/`) and its scratch folder (the workdir). The parent puts
the inputs there (`inputs=`), verifying model files against their accepted hashes.
`SandboxLimits(isolation=False)` runs it without bubblewrap (development only, and the
trusted reference build where bubblewrap is missing): then only the network is isolated
(`unshare --net`) and the child sees the whole filesystem as the worker's user.

Limits on top, either way: the wall-clock timeout and an RSS ceiling over the whole
process tree are enforced by the parent polling /proc; CPU time, file size, open files
and process count by rlimits.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from evaluator.engine import isolation, proctree
from evaluator.engine.errors import ContractError, SandboxError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.2
LOG_TAIL_BYTES = 20_000
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


Target = Union[str, Callable[..., Any]]


def target_name(target: Target) -> str:
    """'package.module:function' for a function (so callers can pass the function itself)."""
    if isinstance(target, str):
        return target
    return f"{target.__module__}:{target.__qualname__}"


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    value: Any
    outcome: str  # 'ok' | 'rejected' | 'error' | 'timeout' | 'memory' | 'crash'
    message: str  # user-readable; for 'rejected' the ContractError's own message
    log: str  # tail of the child's output (+ traceback for 'error')
    seconds: float
    peak_rss_mb: float
    isolated_network: bool
    error_type: str = ""
    isolated: bool = False  # ran under bubblewrap  # exception class name for 'rejected' / 'error'

    def unwrap(self) -> Any:
        """The value, or ContractError ('rejected') / SandboxError (anything else)."""
        if self.ok:
            return self.value
        if self.outcome == "rejected":
            raise ContractError(self.message)
        raise SandboxError(self.message)


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
        "PYTHONPATH": str(PROJECT_ROOT),
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


class _ProgressReader:
    """Reads complete lines appended to progress.jsonl since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def latest(self) -> tuple[float, str] | None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(1 << 20)
        except OSError:
            return None
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in reversed(lines):  # progress is a level, not a log: the last one wins
            try:
                item = json.loads(line)
                return min(1.0, max(0.0, float(item["f"]))), str(item["s"])[:200]
            except (ValueError, KeyError, TypeError):
                continue  # the child is untrusted: skip garbage
        return None


def _tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _wait_exit(pid: int, pidfd: int | None, timeout: float) -> bool:
    """True once the child has exited; it is left unreaped (WNOWAIT) so its pid and
    process group id stay reserved until we have killed what is left of the tree."""
    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
        return True
    if pidfd is not None:
        select.select([pidfd], [], [], max(0.0, timeout))  # wakes up at exit
    else:
        time.sleep(max(0.0, timeout))
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def run_in_sandbox(
    target: Target,
    kwargs: dict,
    *,
    workdir: Path,
    limits: SandboxLimits = SandboxLimits(),
    env: dict | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    spare: SpareChild | None = None,
    inputs: dict[str, Path] | None = None,
    manifests: dict[str, dict[str, str]] | None = None,
) -> SandboxResult:
    """Call `target` (a function, or "package.module:function") with `kwargs` in a
    limited child process whose cwd is `workdir`. `inputs` {name: host path} are copied
    to `in/<name>` first (read-only for the child; folders named in `manifests` are
    verified against their hashes: isolation.IntegrityError); the child writes its
    results under `out/` (isolation.output_path). If the function has a `progress`
    parameter it gets `progress(fraction, stage)`, forwarded to `on_progress` (latest
    report per poll). With `spare` (started in this workdir with these limits), that
    child runs it; one that died meanwhile is replaced by a fresh child. The timeout
    counts from here. Never raises for what the child does; raises ValueError/TypeError
    for bad arguments, SandboxUnavailable when isolation is asked for and impossible.
    """
    target = target_name(target)
    module, _, func = target.partition(":")
    if not module or not func.isidentifier():
        raise ValueError(f"target must be 'package.module:function', got {target!r}")
    workdir = Path(workdir).resolve()
    if spare is not None and (spare.workdir != workdir or not spare.matches(limits, env)):
        raise ValueError("the spare child was started for another workdir, limits or environment")
    box = workdir / ".sandbox"
    box.mkdir(parents=True, exist_ok=True)
    warm = spare is not None and spare.alive()
    # A waiting spare has its output.log open: keep that one.
    for stale in ("result.json", "progress.jsonl") if warm else ("result.json", "progress.jsonl", "output.log"):
        (box / stale).unlink(missing_ok=True)
    isolation.prepare_workdir(workdir)
    isolation.stage_inputs(workdir, inputs or {}, manifests)
    (box / "request.json").write_text(json.dumps({"target": target, "kwargs": kwargs}))

    isolated = not limits.network and (limits.isolation or _unshare_prefix() is not None)
    progress = _ProgressReader(box / "progress.jsonl")
    ceiling = limits.memory_mb * 2**20
    seen: dict[int, int] = {}  # pid -> start time of every tree member ever observed
    peak = 0
    killed: str | None = None
    started = time.monotonic()

    if warm:
        proc = spare.proc
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        except OSError:  # it died between the check and now
            warm = False
            spare.discard()
    if not warm:
        (box / "output.log").unlink(missing_ok=True)
        proc = _spawn(workdir, limits, env, [], stdin=subprocess.DEVNULL)
    pid, pidfd = proc.pid, None
    try:
        with contextlib.suppress(AttributeError, OSError):  # Linux < 5.3: plain sleeps
            pidfd = os.pidfd_open(pid)
        deadline = started + limits.timeout_s
        while not _wait_exit(pid, pidfd, min(POLL_S, deadline - time.monotonic())):
            table = proctree.scan()
            members = proctree.tree(table, pid, seen)
            seen.update({m: table[m].start for m in members if m in table})
            rss = sum(table[m].rss for m in members if m in table)
            peak = max(peak, rss)
            if on_progress is not None and (report := progress.latest()) is not None:
                on_progress(*report)
            if rss > ceiling:
                killed = "memory"
                break
            if time.monotonic() >= deadline:
                killed = "timeout"
                break
    finally:
        # Always, also on KeyboardInterrupt or an exception from on_progress: kill
        # leftovers (background grandchildren too) and then reap the child.
        proctree.kill_tree(pid, seen)
        _, status, rusage = os.wait4(pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        if pidfd is not None:
            os.close(pidfd)

    seconds = time.monotonic() - started
    if on_progress is not None and killed is None and (report := progress.latest()):
        on_progress(*report)
    peak = max(peak, rusage.ru_maxrss * 1024)  # catches peaks between polls
    log = _tail(box / "output.log")
    code = proc.returncode
    if limits.isolation and code > 128:
        code = 128 - code  # bubblewrap exits 128 + n when the child died of signal n
    outcome, value, message, error_type = _classify(killed, code, rusage, box / "result.json", limits)
    if outcome == "error" and isinstance(value, str):  # value carries the traceback
        log, value = f"{log}\n{value}".strip(), None
    return SandboxResult(
        ok=outcome == "ok", value=value if outcome == "ok" else None, outcome=outcome,
        message=message, log=log, error_type=error_type, seconds=round(seconds, 3),
        peak_rss_mb=round(peak / 2**20, 1), isolated_network=isolated,
        isolated=limits.isolation,
    )


def _classify(
    killed: str | None, code: int, rusage: Any, result_path: Path, limits: SandboxLimits
) -> tuple[str, Any, str, str]:
    """(outcome, value-or-traceback, message, error_type) from how the child ended."""
    timeout_msg = f"the job ran longer than {limits.timeout_s:g} s and was stopped"
    memory_msg = f"the model exceeded the {limits.memory_mb} MB memory ceiling"
    cpu_msg = f"the job used more than {limits.cpu_limit_s} s of CPU time and was stopped"
    if killed == "timeout":
        return "timeout", None, timeout_msg, ""
    if killed == "memory":
        return "memory", None, memory_msg, ""
    try:
        result = json.loads(result_path.read_text())
        status = result["status"]
    except (OSError, ValueError, KeyError, TypeError):
        result, status = None, None
    if status == "ok" and code == 0:
        return "ok", result.get("value"), "", ""
    if status == "rejected":
        return "rejected", None, str(result.get("message", "")), str(result.get("type", ""))
    if status == "error":
        etype, msg = str(result.get("type", "")), str(result.get("message", ""))
        trace = str(result.get("traceback", ""))
        if etype == "MemoryError":
            return "memory", None, memory_msg, etype
        if result.get("errno") == errno.EFBIG:
            return "error", trace, (
                f"the job tried to write a file larger than the {limits.file_mb} MB "
                f"file size limit (EFBIG/SIGXFSZ)"
            ), etype
        return "error", trace, f"internal error: {etype}: {msg}", etype
    if code < 0:
        sig = -code
        cpu_used = rusage.ru_utime + rusage.ru_stime
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= limits.cpu_limit_s):
            return "timeout", None, cpu_msg, ""
        if sig == signal.SIGXFSZ:  # Python ignores it, but native code may restore it
            return "crash", None, (
                f"the evaluation process crashed (signal SIGXFSZ: it wrote a file larger "
                f"than the {limits.file_mb} MB limit)"
            ), ""
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        hint = " (possibly the system's out-of-memory killer)" if sig == signal.SIGKILL else ""
        return "crash", None, f"the evaluation process crashed (signal {name}){hint}", ""
    why = f"exited with status {code}" if code else "exited without a result"
    return "error", None, f"internal error: the evaluation process {why}", ""
