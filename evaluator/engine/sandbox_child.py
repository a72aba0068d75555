"""The sandboxed child: `python -m evaluator.engine.sandbox_child <box-dir> [--spare MODULES]`.

Started only by `sandbox.run_in_sandbox` or as a `sandbox.SpareChild` (which first
imports MODULES, then waits for "go" on stdin), already inside its limits, with
cwd = workdir.
Reads request.json, imports and calls the target, writes result.json, and exits with
os._exit so TensorFlow's thread pools and atexit hooks cannot hang or crash the exit
after the result is safely on disk. Imports nothing heavy itself: the target does.
"""

from __future__ import annotations

import faulthandler
import importlib
import inspect
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from evaluator.engine.errors import ContractError


def _progress_writer(path: Path) -> Callable[[float, str], None]:
    fh = open(path, "a", buffering=1, encoding="utf-8")  # line-buffered: parent sees it
    lock = threading.Lock()  # targets may report from worker threads

    def report(fraction: float, stage: str = "") -> None:
        line = json.dumps({"f": float(fraction), "s": str(stage)})
        with lock:
            fh.write(line + "\n")

    return report


def _jsonable(obj: Any) -> Any:
    # NumPy / TF scalars are fine (`.item()`); arrays are not: big data goes to files.
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):
        return obj.item()
    raise TypeError(
        f"the target returned a {type(obj).__name__}, which is not JSON-able; "
        "write arrays to files in the workdir and return their names"
    )


def _load(target: str) -> Callable[..., Any]:
    module_name, _, func_name = target.partition(":")
    return getattr(importlib.import_module(module_name), func_name)


def run(box: Path) -> dict[str, Any]:
    try:
        request = json.loads((box / "request.json").read_text())
        fn = _load(request["target"])
        kwargs = dict(request["kwargs"])
        if "progress" in inspect.signature(fn).parameters:
            kwargs["progress"] = _progress_writer(box / "progress.jsonl")
        value = fn(**kwargs)
        # Serialise here, not in the caller, so a bad return value is a clean 'error'.
        return {"status": "ok", "value": json.loads(json.dumps(value, default=_jsonable))}
    except ContractError as exc:
        # The upload is at fault: its message goes to the user as is, no traceback.
        return {"status": "rejected", "type": type(exc).__name__,
                "message": str(exc) or type(exc).__name__}
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a target is an error too
        return {
            "status": "error", "type": type(exc).__name__, "message": str(exc),
            "errno": getattr(exc, "errno", None), "traceback": traceback.format_exc(),
        }


def _wait_as_spare(box: Path, preload: str) -> bool:
    """Import the slow modules now, then block until the parent sends the request.

    False when stdin closes without one (the spare was discarded or its parent died).
    """
    for name in filter(None, preload.split(",")):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  the job itself will report the import error
            traceback.print_exc()
    (box / "ready").touch()
    return sys.stdin.buffer.readline().strip() == b"go"


# Modules that may not be imported in the child. Keras, which `import tensorflow` loads,
# imports them only for optional features (scikit-learn wrappers, pandas inputs,
# matplotlib image galleries) and skips those when the import fails; nothing run here
# uses them, and they were 1.1 s of a 3.3 s TensorFlow import (`python -X importtime`:
# 3.27 s → 2.15 s without them).
BLOCKED_MODULES = ("sklearn", "pandas", "matplotlib")


def main() -> None:
    faulthandler.enable()  # a segfault leaves the Python stack in the log
    for name in BLOCKED_MODULES:
        sys.modules.setdefault(name, None)  # `import name` now raises ImportError
    box = Path(sys.argv[1])
    if sys.argv[2:3] == ["--spare"] and not _wait_as_spare(box, sys.argv[3] if len(sys.argv) > 3 else ""):
        os._exit(0)
    result = run(box)
    tmp = box / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, box / "result.json")  # atomic: the parent never reads half a file
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
