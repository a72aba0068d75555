"""Hostile archives for tests/test_hostile_archives.py: builders of zip and tar payloads (bombs,
traversal, links, devices, truncation), and the context every payload aims from."""

from __future__ import annotations

import functools
import io
import stat
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from devkit import deployment

# --------------------------------------------------------------------------- context


@dataclass
class Ctx:
    tmp: Path
    pwn: str  # the file name every payload tries to create somewhere it must not
    canary: Path  # a folder outside the media root that payloads aim at
    tiny_cnn_dir: Path

    @property
    def tmp_target(self) -> str:
        return f"/tmp/{self.pwn}"

    @property
    def canary_target(self) -> str:
        return str(self.canary / self.pwn)



# --------------------------------------------------------------------------- archive builders


def zip_bytes(members: list[tuple[str | zipfile.ZipInfo, bytes]], *, level: int | None = None) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names warn
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def targz_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], *, fmt: int = tarfile.GNU_FORMAT,
                compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


# A fake model after the hostile member: if the hostile member were skipped instead of
# refused, the reason would be about this model instead, and the words would not match.
FAKE_MODEL = [("model/saved_model.pb", b"\x08\x01"), ("model/variables/variables.index", b"")]


def zip_folder(folder: Path, prefix: str = "model") -> bytes:
    """The folder as a plain upload (no nonce: the same files give the same archive)."""
    return deployment.zip_folder(folder, prefix, unique=False)


def targz_folder(folder: Path, prefix: str = "model") -> bytes:
    return targz_bytes([tar_file(f"{prefix}/{p.relative_to(folder).as_posix()}", p.read_bytes())
                        for p in sorted(folder.rglob("*")) if p.is_file()])



@functools.cache
def zip_bomb() -> bytes:
    """300 MB of zeros deflated to ~300 KB (ratio ~1000:1); built once, in ~2 s."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("model/saved_model.pb", b"\x08\x01")
        with zf.open("model/variables/variables.data-00000-of-00001", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(300):
                fh.write(block)
    return buf.getvalue()


@functools.cache
def targz_bomb() -> bytes:
    """A tar.gz holding 100 MB of zeros (the tar header declares the true size)."""

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    size = 100 << 20
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tf:
        info = tarfile.TarInfo("model/variables/variables.data-00000-of-00001")
        info.size = size
        tf.addfile(info, io.BufferedReader(Zeros(size)))
    return buf.getvalue()


def symlink_zip_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so the mode bits count
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def encrypted_zip() -> bytes:
    """A zip whose member claims to be encrypted (zipfile clears the flag when writing,
    so it is set afterwards in the local header and the central directory)."""
    data = bytearray(zip_bytes([("model/saved_model.pb", b"\x08\x01" * 100)]))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def pax_bomb() -> bytes:
    info, data = tar_file("model/saved_model.pb", b"\x08\x01")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    return targz_bytes([(info, data)], fmt=tarfile.PAX_FORMAT)


def file_head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]
