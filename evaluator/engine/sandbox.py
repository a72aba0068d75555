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
import errno
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from evaluator.engine import isolation, proctree
from evaluator.engine.errors import ContractError, SandboxError
from evaluator.engine.sandbox_process import (  # noqa: F401  (the sandbox's public names, in one place)
    SandboxLimits,
    SandboxUnavailable,
    SpareChild,
    _spawn,
    _unshare_prefix,
    network_isolation_available,
)

POLL_S = 0.2
LOG_TAIL_BYTES = 20_000


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
    on_tick: Callable[[], None] | None = None,
) -> SandboxResult:
    """Call `target` (a function, or "package.module:function") with `kwargs` in a
    limited child process whose cwd is `workdir`. `inputs` {name: host path} are copied
    to `in/<name>` first (read-only for the child; folders named in `manifests` are
    verified against their hashes: isolation.IntegrityError); the child writes its
    results under `out/` (isolation.output_path). If the function has a `progress`
    parameter it gets `progress(fraction, stage)`, forwarded to `on_progress` (latest
    report per poll); `on_tick()` is called at every poll, whatever the child does (the
    caller's heartbeat; an exception from either stops the child). With `spare` (started in this workdir with these limits), that
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
            if on_tick is not None:
                on_tick()
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
