"""Small targets that tests/test_sandbox.py runs inside the sandbox child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from evaluator.engine.errors import ContractError


class BadShape(ContractError):
    pass


def add(a: int, b: int, progress) -> dict:
    progress(0.5, "adding")
    progress(1.0, "done")
    return {"sum": a + b, "cwd": os.getcwd(), "home": os.environ.get("HOME"),
            "secret": os.environ.get("SANDBOX_TEST_SECRET"), "extra": os.environ.get("EXTRA")}


def reject() -> None:
    raise BadShape("input shape (None, 32, 32, 3) does not match the benchmark's (28, 28, 1)")


def fail() -> None:
    raise ValueError("boom in the engine")


def hang(pid_file: str) -> None:
    # A hung job with a grandchild that must die with it.
    sleeper = subprocess.Popen(["sleep", "1000"])
    with open(pid_file, "w") as fh:
        fh.write(f"{os.getpid()} {sleeper.pid}")
    while True:
        time.sleep(0.05)


def _sleeper(marker: str | None) -> None:
    """A grandchild `sleep <marker>` the test can look for from the host: the child's own
    pid means nothing outside its PID namespace, and the tree dies as one."""
    if marker:
        subprocess.Popen(["sleep", marker])


def hang_after_progress(pid_file: str, progress, marker: str | None = None) -> None:
    _sleeper(marker)
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    progress(0.1, "started")
    while True:
        time.sleep(0.05)


def spin() -> None:
    while True:  # burns CPU until RLIMIT_CPU stops it
        pass


def hog(total_mb: int = 2048, step_mb: int = 100) -> int:
    import numpy as np

    blocks = []
    for _ in range(total_mb // step_mb):
        blocks.append(np.ones(step_mb * 2**20, dtype=np.uint8))  # ones: pages touched
        time.sleep(0.02)
    return len(blocks)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def big_file(mb: int) -> None:
    chunk = b"x" * 2**20
    with open("big.bin", "wb") as fh:
        for _ in range(mb):
            fh.write(chunk)


def flood(mb: int) -> str:
    line = "y" * 1023 + "\n"
    for _ in range(mb * 1024):
        sys.stdout.write(line)
    sys.stderr.write("last words\n")
    return "flooded"


def connect(port: int) -> str:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        return f"failed: {exc}"
    return "connected"


def tf_matmul() -> float:
    import tensorflow as tf

    a = tf.random.stateless_normal((256, 256), seed=(1, 2))
    return float(tf.reduce_sum(tf.matmul(a, a, transpose_b=True)).numpy())


def returns_array():
    import numpy as np

    return np.zeros(3)


def two_phases(progress) -> dict:
    # Two reports inside one second (the worker's write throttle), then silence.
    progress(0.1, "first phase")
    time.sleep(0.5)
    progress(0.9, "second phase")
    time.sleep(0.6)
    return {"done": True}


def preloaded(name: str) -> dict:
    import sys

    return {"loaded": name in sys.modules, "pid": os.getpid(), "cwd": os.getcwd()}


def tf_import_leaves_optional_modules_out() -> dict:
    import importlib
    import sys

    import tensorflow as tf  # noqa: F401

    blocked = []
    for name in ("sklearn", "pandas", "matplotlib"):
        try:
            importlib.import_module(name)
        except ImportError:
            blocked.append(name)
    return {"blocked": blocked, "keras_loaded": "keras" in sys.modules}


def tick_forever(pid_file: str, progress, marker: str | None = None) -> None:
    # A long job that keeps reporting progress (like an attack, step after step).
    _sleeper(marker)
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    step = 0
    while True:
        step += 1
        progress(min(0.99, step / 1000), f"step {step}")
        time.sleep(0.1)


def probe_world(paths: list[str], writes: list[str], ports: list[int]) -> dict:
    """What a hostile child could reach: listing folders, writing files, connecting."""
    seen: dict[str, str] = {}
    for path in paths:
        try:
            seen[path] = "listed " + ",".join(sorted(os.listdir(path)))
        except FileNotFoundError:
            seen[path] = "missing"
        except OSError as exc:
            seen[path] = f"refused {exc.errno}"
    wrote: dict[str, str] = {}
    for path in writes:
        try:
            with open(path, "w") as fh:
                fh.write("pwned")
            wrote[path] = "written"
        except OSError as exc:
            wrote[path] = f"refused {exc.errno}"
    connected: dict[str, str] = {}
    for port in ports:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            connected[str(port)] = "connected"
        except OSError as exc:
            connected[str(port)] = f"refused {exc.errno}"
    return {"seen": seen, "wrote": wrote, "connected": connected, "uid": os.getuid(),
            "env": sorted(os.environ)}


def call_unscanned(model_dir: str) -> dict:
    """Load and call a SavedModel with NO op scan (the second layer's test: whatever the
    graph does, it does inside the sandbox)."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures["serving_default"]
    out = fn(tf.constant(np.zeros((2, 28, 28, 1), np.float32)))
    return {"outputs": float(next(iter(out.values())).numpy().sum())}


def silent(seconds: float) -> dict:
    # A long phase that reports nothing (a big model's load, a long predict).
    time.sleep(seconds)
    return {"slept": seconds}
