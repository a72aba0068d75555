"""Safe extraction of hostile uploads (evaluator.engine.archive).

Every rejection test checks three things: the reason names the problem, the destination
is gone, and nothing was written next to it (the parent folder holds only what the test
put there).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import uuid
import warnings
import zipfile
from pathlib import Path

import pytest

from evaluator.engine.archive import (
    ArchiveLimits,
    extract_archive,
    find_saved_model,
    pack_folder,
    unpack_upload,
)
from evaluator.engine.errors import ArchiveError

FAKE_MODEL = {"outer/model/saved_model.pb": b"\x08\x01", "outer/model/variables/v.index": b"x"}


# --- archive builders -----------------------------------------------------------------


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_targz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def folder_members(root: Path, prefix: str) -> dict[str, bytes]:
    return {
        f"{prefix}/{p.relative_to(root).as_posix()}": p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(folder holding the upload, extraction target whose parent must stay empty)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path / "in", tmp_path / "work" / "dest"


def assert_rejected(archive: Path, dest: Path, reason: str, limits: ArchiveLimits = ArchiveLimits()) -> None:
    with pytest.raises(ArchiveError) as info:
        unpack_upload(archive, dest, limits)
    assert reason in str(info.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # nothing written beside dest either
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]


# --- accepted uploads -----------------------------------------------------------------


def test_zip_of_real_model_at_depth_two(tiny_cnn_dir: Path, box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "upload.bin", folder_members(tiny_cnn_dir, "a/b"))
    model = unpack_upload(archive, dest)
    assert model == dest / "a" / "b"
    assert (model / "saved_model.pb").read_bytes() == (tiny_cnn_dir / "saved_model.pb").read_bytes()


def test_targz_of_real_model_at_depth_two(tiny_cnn_dir: Path, box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = inbox / "upload.zip"  # misleading extension: the format comes from the bytes
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tiny_cnn_dir, arcname="./a/b")
    model = unpack_upload(archive, dest)
    assert model == dest / "a" / "b"
    assert (model / "variables").is_dir()


def test_modes_are_normalised(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_targz(
        inbox / "m.tgz",
        [tar_file("m/saved_model.pb", b"pb", mode=0o4777), tar_file("m/run.sh", b"#!", 0o2755)],
    )
    model = unpack_upload(archive, dest)
    assert stat.S_IMODE(os.stat(model / "run.sh").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(model / "saved_model.pb").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(model).st_mode) == 0o755


def test_dest_must_be_empty(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    dest.mkdir()
    (dest / "old").write_text("keep")
    with pytest.raises(ValueError):
        extract_archive(make_zip(inbox / "u.zip", FAKE_MODEL), dest)
    assert (dest / "old").read_text() == "keep"


# --- hostile names and member types ---------------------------------------------------


def test_zip_slip(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", {**FAKE_MODEL, "../evil.txt": b"pwned"})
    assert_rejected(archive, dest, "member '../evil.txt' escapes the archive folder")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("C:/evil.txt", "absolute path"), ("a\\..\\..\\evil.txt", "backslashes"), ("a/../../e", "escapes")],
)
def test_zip_name_tricks(box: tuple[Path, Path], name: str, reason: str) -> None:
    inbox, dest = box
    assert_rejected(make_zip(inbox / "u.zip", {**FAKE_MODEL, name: b"x"}), dest, reason)


def test_absolute_tar_member(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    target = Path("/tmp") / f"rl-evil-{uuid.uuid4().hex}"
    archive = make_targz(inbox / "u.tgz", [tar_file("m/saved_model.pb", b"pb"), tar_file(str(target), b"x")])
    assert_rejected(archive, dest, f"member '{target}' has an absolute path")
    assert not target.exists()


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tar_special("m/link", tarfile.SYMTYPE, "/etc/passwd"), "'m/link' is a symbolic link"),
        (tar_special("m/hard", tarfile.LNKTYPE, "m/saved_model.pb"), "'m/hard' is a hard link"),
        (tar_special("m/tty", tarfile.CHRTYPE), "'m/tty' is a device"),
        (tar_special("m/disk", tarfile.BLKTYPE), "'m/disk' is a device"),
        (tar_special("m/pipe", tarfile.FIFOTYPE), "'m/pipe' is a device, fifo"),
    ],
)
def test_tar_special_members(box: tuple[Path, Path], member: tuple[tarfile.TarInfo, None], reason: str) -> None:
    inbox, dest = box
    archive = make_targz(inbox / "u.tgz", [tar_file("m/saved_model.pb", b"pb"), member])
    assert_rejected(archive, dest, reason)


def test_zip_symlink_member(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", FAKE_MODEL)
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("outer/model/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../../etc/passwd")
    assert_rejected(archive, dest, "member 'outer/model/link' is a symbolic link")


def test_duplicate_names(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", FAKE_MODEL)
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "a") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the very thing we test
        zf.writestr("outer/model/saved_model.pb", b"evil twin")
    assert_rejected(archive, dest, "'outer/model/saved_model.pb' appears more than once")


def test_too_many_members(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    files = {**FAKE_MODEL, **{f"outer/junk/{i}": b"" for i in range(10)}}
    archive = make_zip(inbox / "u.zip", files)
    assert_rejected(archive, dest, "more than 5 members", ArchiveLimits(max_members=5))


# --- sizes and bombs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 GiB of zeros deflated to ~3 MiB, streamed so building it needs no big buffer
    (about 6 s on the 2-core dev box, so it is built once for the module)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("outer/model/saved_model.pb", b"pb")
        with zf.open("outer/model/variables/zeros.data", "w", force_zip64=True) as out:
            for _ in range(3 * 1024):
                out.write(chunk)
    return path


def _rejected_quickly(bomb: Path, dest: Path, limits: ArchiveLimits) -> str:
    start = time.monotonic()
    with pytest.raises(ArchiveError) as info:
        extract_archive(bomb, dest, limits)
    assert time.monotonic() - start < 10
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    return str(info.value)


def test_zip_bomb_caught_by_ratio(zip_bomb: Path, box: tuple[Path, Path]) -> None:
    assert "compression bomb" in _rejected_quickly(zip_bomb, box[1], ArchiveLimits())


def test_zip_bomb_caught_by_size_while_streaming(zip_bomb: Path, box: tuple[Path, Path]) -> None:
    # With the ratio check out of the way the byte count written must stop it.
    limits = ArchiveLimits(max_total_bytes=64 << 20, max_member_bytes=1 << 30, max_ratio=1e9)
    assert "archive expands beyond 64 MiB" in _rejected_quickly(zip_bomb, box[1], limits)


def test_member_size_limit(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", {**FAKE_MODEL, "outer/model/big": os.urandom(300_000)})
    limits = ArchiveLimits(max_member_bytes=200_000)
    assert_rejected(archive, dest, "member 'outer/model/big' expands beyond 200000 bytes", limits)


def test_targz_bomb(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_targz(inbox / "u.tgz", [tar_file("m/saved_model.pb", b"pb"), tar_file("m/z", bytes(32 << 20))])
    assert_rejected(archive, dest, "compression bomb")


# --- not an archive, broken archive, no model ------------------------------------------


def test_junk_bytes(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = inbox / "model.zip"
    archive.write_bytes(b"MZ\x90\x00" + os.urandom(4000))
    assert_rejected(archive, dest, "not a .zip or .tar.gz archive (unrecognised leading bytes)")


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_truncated_archive(box: tuple[Path, Path], kind: str) -> None:
    inbox, dest = box
    files = {**FAKE_MODEL, "outer/model/variables/v.data": os.urandom(100_000)}
    if kind == "zip":
        archive = make_zip(inbox / "u", files)
    else:
        archive = make_targz(inbox / "u", [tar_file(n, d) for n, d in files.items()])
    archive.write_bytes(archive.read_bytes()[:60_000])
    assert_rejected(archive, dest, "truncated or corrupt archive")


def test_archive_without_model(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", {"readme.txt": b"hello"})
    assert_rejected(archive, dest, "no saved_model.pb found in the archive")


def test_only_pbtxt(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", {"m/saved_model.pbtxt": b"meta_graphs {}"})
    assert_rejected(archive, dest, "only a binary saved_model.pb is accepted")


def test_nested_archive_is_just_a_file(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    inner = make_targz(inbox / "inner.tgz", [tar_file("m/saved_model.pb", b"pb")])
    archive = make_zip(inbox / "u.zip", {"model.tar.gz": inner.read_bytes()})
    inner.unlink()
    assert_rejected(archive, dest, "no saved_model.pb found in the archive")


def test_several_models_are_named(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    archive = make_zip(inbox / "u.zip", {"a/saved_model.pb": b"1", "b/c/saved_model.pb": b"2"})
    assert_rejected(archive, dest, "several SavedModels ('a', 'b/c')")


def test_find_saved_model_at_root(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"pb")
    assert find_saved_model(tmp_path) == tmp_path


def test_oversized_tar_metadata_is_not_read(box: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # tarfile reads pax / GNU long-name blocks into memory whole; their size is capped.
    import evaluator.engine.archive as archive_module

    monkeypatch.setattr(archive_module, "_MAX_TAR_METADATA_BYTES", 100)
    inbox, dest = box
    archive = make_targz(inbox / "u.tgz", [tar_file("m/" + "x" * 200, b"x"), tar_file("m/saved_model.pb", b"pb")])
    assert_rejected(archive, dest, "oversized tar metadata header")


def test_a_packed_folder_unpacks_to_the_same_files(box: tuple[Path, Path]) -> None:
    inbox, dest = box
    folder = inbox / "export"
    files = {"saved_model.pb": b"\x08\x01", "variables/variables.index": b"idx", "assets/a/b.txt": b"deep"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    archive = inbox / "m.zip"
    pack_folder(folder, archive, prefix="exported", extra={"assets/nonce.txt": "n1"})
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["exported/assets/a/b.txt", "exported/saved_model.pb",
                                 "exported/variables/variables.index", "exported/assets/nonce.txt"]
    model = unpack_upload(archive, dest)
    assert model == dest / "exported"
    unpacked = {str(p.relative_to(model)): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    assert unpacked == {**files, "assets/nonce.txt": b"n1"}
    # Into a stream too (what the tools upload), byte for byte the same without the extra.
    buf = io.BytesIO()
    pack_folder(folder, buf, prefix="exported")
    with zipfile.ZipFile(buf) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {f"exported/{k}": v for k, v in files.items()}
