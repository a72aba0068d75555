"""The per-deployment secret behind the attack targets and the universal perturbations
(SPEC §2 Secrecy, issue 12).

Everything the public can read (the code, the eval split, the seeds in fixtures/) is the
same for every deployment, so a target class or a universal perturbation drawn from a
public seed could be replayed by an uploader and memorised. Each deployment therefore
draws them from seeds derived from 32 random bytes made at its first build:

    seed(benchmark, purpose) = HMAC-SHA256(secret, "<purpose>:<benchmark>")[:8] as an int

Where it lives, and why: a file, MEDIA_ROOT/private/deployment-secret, mode 0600 in a
0700 folder, created on first use.
- MEDIA_ROOT is the one folder every machine of a deployment shares (README: web and
  worker machines mount the same media), so a rebuild run by any worker derives the same
  seeds; VAR_DIR is per machine and would give each worker its own secret.
- Nothing serves MEDIA_ROOT by path: every download is a view that opens one file named
  by a row (adversarial sets, universal perturbations, the dataset for the eval split),
  and no row names this file. A DB row would be one `dumpdata` or admin page away from
  being shown; a file outside the models is in no fixture, API answer or admin page.
- The sandbox child never sees it: jobs get only the derived integer seeds, and the
  child's mount namespace (engine.isolation) holds the runtime, the code and its own
  inputs, copied in one by one; MEDIA_ROOT is not in it. (With SANDBOX_ISOLATION=off,
  for development only, a child could read any file of the worker's user, this one too.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from django.conf import settings

SECRET_BYTES = 32
FILE_NAME = "deployment-secret"
PURPOSES = frozenset({"targets", "universal", "universal-own"})


def secret_path() -> Path:
    return Path(settings.MEDIA_ROOT) / "private" / FILE_NAME


def deployment_secret() -> bytes:
    """The deployment's secret, created on first use (concurrent first uses agree)."""
    path = secret_path()
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    # Written whole under a temporary name, then linked into place: os.link fails if the
    # file exists, so of two processes racing here one wins and both read its bytes, and
    # no reader ever sees a half-written secret.
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(SECRET_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != SECRET_BYTES:
        # Never silently replace it: the stored targets and perturbations were drawn with it.
        raise RuntimeError(f"{path} holds {len(data)} bytes, not a {SECRET_BYTES}-byte deployment secret")
    return data


def derive_seed(secret: bytes, benchmark: str, purpose: str) -> int:
    """A 63-bit seed for one purpose of one benchmark (fits every RNG and JSON reader).

    HMAC keeps the seeds of different benchmarks and purposes unrelated, and tells
    nothing about the secret to whoever learns one seed.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}")
    digest = hmac.new(secret, f"{purpose}:{benchmark}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def benchmark_seed(benchmark: str, purpose: str) -> int:
    """This deployment's seed for `purpose` ("targets", "universal") of `benchmark`."""
    return derive_seed(deployment_secret(), benchmark, purpose)
