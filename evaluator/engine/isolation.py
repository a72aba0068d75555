"""The filesystem and namespaces a sandbox child lives in (bubblewrap), and its inputs.

Every sandbox child runs under bubblewrap (`bwrap`, the Debian package Flatpak uses):
new user, mount, PID, IPC, UTS, cgroup and network namespaces, uid/gid 65534, its own
session, killed with its parent. Its filesystem holds only

  /usr (+ the /bin, /lib... links)   the system's programs and libraries, read-only
  the Python runtime and venv          read-only
  CODE_DIRS of the project             read-only (the engine; no settings, no media)
  /job                                 the job's scratch folder, writable, its cwd
  /job/in                              its inputs, read-only, put there by the parent
  /tmp                                 a private 64 MiB tmpfs (TMPDIR is /job/.sandbox/tmp)

so MEDIA_ROOT, the database, other networks' files, the host's /tmp and every
environment secret are simply not there. Paths the job uses are relative to its cwd
(`in/model`, `out/adversarial.npz`), so the same kwargs work with isolation off
(SANDBOX_ISOLATION=off, development only), where the cwd is the host folder itself.

Inputs are copied, not linked: a model's files are hashed while they are copied and
compared with the manifest recorded when the network was accepted, so what the child
loads is exactly what was accepted even if the stored copy changes afterwards.
Stdlib only: the Celery worker imports this and must never import TensorFlow.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The code a child may import: the engine, and the targets tests and benches run.
CODE_DIRS = ("evaluator", "tests", "bench")
SCRATCH = "/job"
INPUTS = "in"  # relative to the child's cwd
OUTPUTS = "out"
NOBODY = 65534
TMP_BYTES = 64 * 2**20
_CHUNK = 1 << 20


class IntegrityError(Exception):
    """A stored model file no longer matches the hash recorded when it was accepted."""


def input_path(name: str) -> str:
    """How the child names input `name` (relative to its cwd, isolated or not)."""
    return f"{INPUTS}/{name}"


def output_path(name: str) -> str:
    return f"{OUTPUTS}/{name}"


def _runtime_roots() -> list[str]:
    """The Python installation and the virtual environment, outside /usr."""
    roots = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix)}
    roots |= {os.path.abspath(p) for p in (sys.prefix, sys.exec_prefix)}  # a venv reached by a link
    return sorted(r for r in roots if not r.startswith("/usr/") and r != "/usr")


def bwrap_argv(workdir: Path, *, network: bool = False) -> list[str]:
    """The bubblewrap command line that confines a child to `workdir` (see module doc)."""
    exe = shutil.which("bwrap") or "bwrap"
    argv = [
        exe, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
        "--unshare-cgroup-try", "--uid", str(NOBODY), "--gid", str(NOBODY),
        "--hostname", "sandbox", "--die-with-parent", "--new-session",
        "--proc", "/proc", "--dev", "/dev",
        # First, so that a runtime or a checkout under /tmp is bound inside it. Small: a
        # tmpfs is memory the RSS watch does not see (TMPDIR points into the scratch).
        "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
        "--ro-bind", "/usr", "/usr",
    ]
    if not network:
        argv.append("--unshare-net")
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    # The dynamic linker's cache: without it libraries under /usr/lib/<triplet> are not found.
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"):
        argv += ["--ro-bind-try", etc, etc]
    for root in _runtime_roots():
        argv += ["--ro-bind", root, root]
    for name in CODE_DIRS:
        if (PROJECT_ROOT / name).is_dir():
            argv += ["--ro-bind", str(PROJECT_ROOT / name), str(PROJECT_ROOT / name)]
    work = Path(workdir).resolve()
    argv += [
        "--bind", str(work), SCRATCH,
        "--ro-bind", str(work / INPUTS), f"{SCRATCH}/{INPUTS}",
        "--chdir", SCRATCH,
        # Last: the root bwrap built (a tmpfs) becomes read-only; the mounts on it keep
        # their own modes (/job and /tmp writable, the rest read-only).
        "--remount-ro", "/",
    ]
    return argv


def prepare_workdir(workdir: Path) -> None:
    """The folders every child expects (the mount points must exist before bwrap runs)."""
    for sub in (INPUTS, OUTPUTS, ".sandbox/tmp"):
        (Path(workdir) / sub).mkdir(parents=True, exist_ok=True)


@functools.cache
def bwrap_problem() -> str:
    """Why bubblewrap cannot confine a child here ('' when it can); probed once.

    The probe runs the real command line around `python -c` in a throwaway folder, so
    a missing binary, disabled user namespaces or a runtime outside the binds all show.
    """
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bwrap-probe-") as tmp:
        prepare_workdir(Path(tmp))
        cmd = [*bwrap_argv(Path(tmp)), "--", sys.executable, "-c", "import os; print(os.getuid())"]
        try:
            probe = subprocess.run(cmd, capture_output=True, timeout=30, check=False, env={"PATH": os.defpath})
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bubblewrap could not start: {exc}"
    if probe.returncode != 0 or probe.stdout.strip() != str(NOBODY).encode():
        detail = (probe.stderr or probe.stdout).decode(errors="replace").strip().splitlines()
        return "bubblewrap cannot create the sandbox here: " + (detail[-1] if detail else f"exit {probe.returncode}")
    return ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_manifest(folder: Path) -> dict[str, str]:
    """{path inside `folder`: sha256} of every regular file (links are refused)."""
    folder = Path(folder)
    manifest: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise IntegrityError(f"stored model changed: {path.relative_to(folder)} is not a regular file")
        if path.is_file():
            manifest[str(path.relative_to(folder))] = file_sha256(path)
    return manifest


def _copy_hashed(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()


def copy_verified(src: Path, dst: Path, manifest: Mapping[str, str]) -> None:
    """Copy folder `src` to `dst`, checking every file against `manifest` as it goes.

    Raises IntegrityError naming the first file that was added, removed or changed.
    """
    src, dst = Path(src), Path(dst)
    seen: set[str] = set()
    for path in sorted(src.rglob("*")):
        rel = str(path.relative_to(src))
        if path.is_symlink():
            raise IntegrityError(f"stored model changed: {rel} became a link")
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
            continue
        if rel not in manifest:
            raise IntegrityError(f"stored model changed: {rel} was added")
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if _copy_hashed(path, dst / rel) != manifest[rel]:
            raise IntegrityError(f"stored model changed: {rel} differs from the accepted file")
        seen.add(rel)
    if missing := sorted(set(manifest) - seen):
        raise IntegrityError(f"stored model changed: {missing[0]} is missing")


def stage_inputs(
    workdir: Path, inputs: Mapping[str, Path], manifests: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    """Copy each input (a file or a folder) to `workdir/in/<name>`; folders named in
    `manifests` are verified file by file (IntegrityError on any difference)."""
    manifests = manifests or {}
    target = Path(workdir) / INPUTS
    target.mkdir(parents=True, exist_ok=True)
    for name, src in inputs.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"input names are plain file names, got {name!r}")
        src, dst = Path(src), target / name
        if name in manifests:
            dst.mkdir()
            copy_verified(src, dst, manifests[name])
        elif src.is_dir():
            shutil.copytree(src, dst, symlinks=False)
        else:
            shutil.copyfile(src, dst)
