"""Safe extraction of untrusted .zip / .tar.gz uploads and location of the SavedModel.

Everything here treats the archive as hostile: the format is detected from its leading
bytes (never the extension), member names are validated before anything is created, only
regular files and folders are ever written (no links, devices or fifos), and sizes are
enforced on the bytes actually written while streaming, because header sizes are
attacker-controlled. Any failure raises ArchiveError and removes the destination, so a
rejected upload leaves nothing behind.

This module must stay importable by the web process: it uses only the standard library.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from evaluator.engine.errors import ArchiveError

MiB = 1024 * 1024

# Small members legitimately compress far beyond any sane ratio (a 100 KiB block of zero
# padding deflates ~1000:1), so ratios are only enforced once this much has been written.
_RATIO_GRACE_BYTES = 1 * MiB
_CHUNK = 64 * 1024  # small chunks so the limits trip soon after they are crossed
_MAX_NAME_BYTES = 1024
_MAX_PART_BYTES = 255
# Tar metadata blocks (pax / GNU long-name headers) are read into memory whole by tarfile.
_MAX_TAR_METADATA_BYTES = 1 * MiB
_DRIVE = re.compile(r"^[A-Za-z]:")
_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    NotImplementedError,  # zip compression method the stdlib cannot read
)


@dataclass(frozen=True)
class ArchiveLimits:
    """What an upload may expand to; ratios apply to each member and to the whole."""

    max_total_bytes: int = 512 * MiB
    max_member_bytes: int = 512 * MiB
    max_members: int = 2000
    max_ratio: float = 200.0


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Extract `archive` into `dest` (empty or absent) or raise ArchiveError, leaving no `dest`."""
    archive, dest = Path(archive), Path(dest)
    kind = _sniff(archive)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"extraction target {dest} is not empty")  # caller bug, not the user's
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        with _CountingReader(archive) as raw:
            writer = _Writer(dest, limits, raw)
            if kind == "zip":
                _extract_zip(raw, writer)
            else:
                _extract_tar(raw, writer, compressed=kind == "gzip")
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except _CORRUPT as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"truncated or corrupt archive: {exc}") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def find_saved_model(root: Path) -> Path:
    """The one folder under `root` (at any depth) that holds a binary saved_model.pb."""
    root = Path(root)
    found = sorted(p.parent for p in _regular_files(root, "saved_model.pb"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(_display(root, p) for p in found)
        raise ArchiveError(f"the archive holds several SavedModels ({names}); upload exactly one")
    text_forms = ("saved_model.pbtxt", "saved_model.cpb")
    others = sorted(p for n in text_forms for p in _regular_files(root, n))
    if others:
        raise ArchiveError(
            f"found {_display(root, others[0])}, but only a binary saved_model.pb is accepted "
            "(export with tf.saved_model.save or model.export)"
        )
    raise ArchiveError("no saved_model.pb found in the archive (nested archives are not unpacked)")


def unpack_upload(archive: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Extract an uploaded archive into `dest` and return its SavedModel folder."""
    extract_archive(archive, dest, limits)
    try:
        return find_saved_model(dest)
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def pack_folder(folder: Path, target: Path | BinaryIO, *, prefix: str = "model",
                extra: dict[str, str] | None = None) -> None:
    """A SavedModel folder as the .zip unpack_upload accepts: every file, in sorted order,
    one folder deep under `prefix`, deflated; `extra` {relative name: text} adds members
    (the tools' per-call nonce). The one way the project zips a model folder."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                zf.write(path, Path(prefix) / path.relative_to(folder))
        for name, text in (extra or {}).items():
            zf.writestr(str(Path(prefix) / name), text)


# --- format detection ---------------------------------------------------------------


def _sniff(archive: Path) -> str:
    try:
        with archive.open("rb") as fh:
            head = fh.read(262)
    except OSError as exc:
        raise ArchiveError(f"cannot read the uploaded file: {exc.strerror}") from exc
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # local header, or an empty zip
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError("not a .zip or .tar.gz archive (unrecognised leading bytes)")


# --- writing ------------------------------------------------------------------------


class _CountingReader:
    """The archive file, counting the compressed bytes consumed so far.

    The whole-archive ratio is checked against what has been *read*, so a bomb is caught
    after a few MiB of output instead of after the total limit has been written.
    """

    def __init__(self, path: Path) -> None:
        self._fh: BinaryIO = path.open("rb")
        self.size = os.fstat(self._fh.fileno()).st_size
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        # A running sum, not the position: zip readers jump to the central directory at
        # the end first, which must not count as having consumed the whole file.
        self.consumed += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


class _Writer:
    """Creates validated members under `dest` and enforces the limits while copying."""

    def __init__(self, dest: Path, limits: ArchiveLimits, raw: _CountingReader) -> None:
        self.dest = dest
        self.real_dest = dest.resolve()
        self.limits = limits
        self.raw = raw
        self.members = 0
        self.total = 0
        self.seen: set[PurePosixPath] = set()

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f"archive has more than {self.limits.max_members} members")

    def target(self, name: str) -> Path | None:
        """The path a member may be written to; None for the archive root ('./')."""
        rel = _safe_relpath(name)
        if rel is None:
            return None
        if rel in self.seen:
            raise ArchiveError(f"member '{name}' appears more than once")
        self.seen.add(rel)
        path = self.dest.joinpath(*rel.parts)
        # Defence in depth: nothing we create is a link, so this only trips on a bug.
        if not path.parent.resolve().is_relative_to(self.real_dest):
            raise ArchiveError(f"member '{name}' escapes the archive folder")
        return path

    def make_dir(self, name: str) -> None:
        path = self.target(name)
        if path is not None:
            self._mkdirs(path, name)

    def write_file(self, name: str, stream: BinaryIO, compressed_size: int | None) -> None:
        path = self.target(name)
        if path is None:
            raise ArchiveError(f"member '{name}' is a file without a name")
        self._mkdirs(path.parent, name)
        try:
            # O_EXCL + O_NOFOLLOW: never overwrite, never write through a link.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            raise ArchiveError(f"member '{name}' clashes with another member") from exc
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, 0o644)  # whatever the umask, and never the member's own bits
            written = 0
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                self._check(name, written, compressed_size)
                out.write(chunk)

    def _check(self, name: str, written: int, compressed_size: int | None) -> None:
        lim = self.limits
        if written > lim.max_member_bytes:
            raise ArchiveError(f"member '{name}' expands beyond {_human(lim.max_member_bytes)}")
        if self.total > lim.max_total_bytes:
            raise ArchiveError(f"archive expands beyond {_human(lim.max_total_bytes)}")
        if compressed_size is not None and written > max(
            _RATIO_GRACE_BYTES, lim.max_ratio * compressed_size
        ):
            raise ArchiveError(
                f"member '{name}' expands more than {lim.max_ratio:g} times its compressed size"
            )
        if self.total > max(_RATIO_GRACE_BYTES, lim.max_ratio * self.raw.consumed):
            raise ArchiveError(
                f"archive expands more than {lim.max_ratio:g} times its size (compression bomb)"
            )

    def _mkdirs(self, path: Path, name: str) -> None:
        try:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ArchiveError(f"member '{name}' clashes with another member") from exc


def _safe_relpath(name: str) -> PurePosixPath | None:
    """Validate a member name and return it relative to the archive root (None for the root)."""
    if "\x00" in name:
        raise ArchiveError(f"member {name!r} has a NUL byte in its name")
    if "\\" in name:
        raise ArchiveError(f"member '{name}' uses backslashes in its path")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveError(f"member '{name}' has an absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise ArchiveError(f"member '{name[:80]}...' has a name over {_MAX_NAME_BYTES} bytes")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"member '{name}' escapes the archive folder")
    if any(len(p.encode("utf-8", "surrogateescape")) > _MAX_PART_BYTES for p in parts):
        raise ArchiveError(f"member '{name[:80]}' has a path part over {_MAX_PART_BYTES} bytes")
    return PurePosixPath(*parts) if parts else None


# --- formats ------------------------------------------------------------------------


def _extract_zip(raw: _CountingReader, writer: _Writer) -> None:
    with zipfile.ZipFile(raw) as zf:  # type: ignore[arg-type]  # duck-typed file object
        infos = zf.infolist()
        if len(infos) > writer.limits.max_members:
            raise ArchiveError(f"archive has more than {writer.limits.max_members} members")
        for info in infos:
            writer.count_member()
            mode = info.external_attr >> 16  # Unix mode bits, when made on Unix
            if stat.S_ISLNK(mode):
                raise ArchiveError(
                    f"member '{info.filename}' is a symbolic link; links are not allowed"
                )
            # Type bits are often absent (0) in zips; only set-and-special is refused.
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(f"member '{info.filename}' is not a regular file or folder")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member '{info.filename}' is encrypted")
            if info.is_dir():
                writer.make_dir(info.filename)
                continue
            with zf.open(info) as stream:
                writer.write_file(info.filename, stream, info.compress_size)


class _SafeTarInfo(tarfile.TarInfo):
    """TarInfo that refuses huge metadata blocks, which tarfile would read into memory."""

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        self._check_metadata_size()
        return super()._proc_gnulong(tarfile_)  # type: ignore[misc]

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        self._check_metadata_size()
        return super()._proc_pax(tarfile_)  # type: ignore[misc]

    def _check_metadata_size(self) -> None:
        if self.size > _MAX_TAR_METADATA_BYTES:
            raise ArchiveError("archive has an oversized tar metadata header")


def _extract_tar(raw: _CountingReader, writer: _Writer, *, compressed: bool) -> None:
    # Stream mode ("r|"): members are read once, in order, with no index built up front.
    source = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    with tarfile.open(fileobj=source, mode="r|", tarinfo=_SafeTarInfo) as tf:
        for member in _tar_members(tf, writer):
            if member.isdir():
                writer.make_dir(member.name)
                continue
            stream = tf.extractfile(member)
            if stream is None:  # cannot happen for regular files; be explicit anyway
                raise ArchiveError(f"member '{member.name}' cannot be read")
            # Per-member compressed size is unknown inside a gzip stream: the
            # whole-archive ratio (against bytes consumed) covers tar.gz bombs.
            writer.write_file(member.name, stream, None)


def _tar_members(tf: tarfile.TarFile, writer: _Writer) -> Iterator[tarfile.TarInfo]:
    for member in tf:
        writer.count_member()
        if member.issym() or member.islnk():
            kind = "symbolic link" if member.issym() else "hard link"
            raise ArchiveError(f"member '{member.name}' is a {kind}; links are not allowed")
        if member.issparse():
            raise ArchiveError(f"member '{member.name}' is a sparse file; not supported")
        if not (member.isreg() or member.isdir()):
            raise ArchiveError(
                f"member '{member.name}' is a device, fifo or other special file; not allowed"
            )
        yield member


# --- helpers ------------------------------------------------------------------------


def _regular_files(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob(name) if p.is_file() and not p.is_symlink()]


def _display(root: Path, folder: Path) -> str:
    rel = folder.relative_to(root).as_posix()
    return "the archive root" if rel == "." else f"'{rel}'"


def _human(n: int) -> str:
    for unit, size in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
