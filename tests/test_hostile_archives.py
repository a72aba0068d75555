"""Hostile archives, every case through the real product path (tests/hostile_upload.py):
uploaded the way a user would (HTTP POST to /api/networks, the upload form, or the upload
service), then run through the real pipeline in-process on the session's `mini`
benchmark. Each is refused by the extractor before TensorFlow is imported, ending
`rejected` with a reason that names the problem, or refused at the door with a 4xx and a
message; never an HTTP 500, never a file outside the media folder.
"""

from __future__ import annotations

import gzip
import sys
import tarfile
from pathlib import Path

import pytest

from tests.hostile_archives import (
    FAKE_MODEL,
    encrypted_zip,
    file_head,
    pax_bomb,
    symlink_zip_member,
    tar_file,
    tar_special,
    targz_bomb,
    targz_bytes,
    targz_folder,
    truncated,
    zip_bomb,
    zip_bytes,
    zip_folder,
)
from tests.hostile_upload import Case, assert_refused_with_a_reason, ctx, ids, uploader  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _fake_model_tar() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_file(name, data) for name, data in FAKE_MODEL]


CASES = [
    # --- archives: refused by the extractor, before TensorFlow is imported
    Case("zip-slip", lambda c: zip_bytes([(f"model/../../../../../{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("escapes the archive folder",)),
    Case("zip-absolute-path", lambda c: zip_bytes([(c.tmp_target, b"pwned"), *FAKE_MODEL]),
         ("absolute path",)),
    Case("zip-backslash-traversal", lambda c: zip_bytes([(f"..\\..\\..\\{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("backslashes",)),
    Case("zip-drive-letter", lambda c: zip_bytes([(f"C:/Windows/{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("absolute path",)),
    Case("zip-symlink", lambda c: zip_bytes([(symlink_zip_member("model/link", str(c.canary)), str(c.canary).encode()),
                                             (f"model/link/{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("symbolic link", "links are not allowed")),
    Case("zip-encrypted", lambda c: encrypted_zip(),
         ("encrypted",)),
    Case("zip-duplicate-member", lambda c: zip_bytes([*FAKE_MODEL, ("model/saved_model.pb", b"\x08\x02")]),
         ("appears more than once",), via="service"),
    Case("zip-bomb-300MB", lambda c: zip_bomb(), ("expands more than 200 times",)),
    Case("zip-too-many-members", lambda c: zip_bytes([(f"model/f{i}", b"") for i in range(2001)]),
         ("more than 2000 members",)),
    Case("zip-long-member-name", lambda c: zip_bytes([("model/" + "a/" * 600 + "x", b"x")]),
         ("over 1024 bytes",)),
    Case("zip-truncated", lambda c: truncated(zip_folder(c.tiny_cnn_dir)), ("truncated or corrupt",)),
    Case("zip-nested-archive", lambda c: zip_bytes([("upload/model.zip", zip_folder(c.tiny_cnn_dir))]),
         ("no saved_model.pb", "nested archives are not unpacked")),
    Case("zip-empty", lambda c: b"PK\x05\x06" + bytes(18), ("no saved_model.pb",)),
    Case("zip-pbtxt-only", lambda c: zip_bytes([("model/saved_model.pbtxt", b"meta_graphs {}")]),
         ("only a binary saved_model.pb is accepted",)),
    Case("zip-two-models", lambda c: zip_bytes([("a/saved_model.pb", b"\x08\x01"), ("b/saved_model.pb", b"\x08\x01")]),
         ("several SavedModels",)),
    Case("zip-html-in-member-name",
         lambda c: zip_bytes([('<script>alert("x")</script>/../../' + c.pwn, b"pwned"), *FAKE_MODEL]),
         ("escapes the archive folder",), via="form"),
    Case("tar-absolute-path", lambda c: targz_bytes([tar_file(c.canary_target, b"pwned")]),
         ("absolute path",), filename="model.tar.gz"),
    Case("tar-traversal", lambda c: targz_bytes([tar_file(f"model/../../../../{c.pwn}", b"pwned")]),
         ("escapes the archive folder",), filename="model.tar.gz"),
    Case("tar-symlink", lambda c: targz_bytes([tar_special("model/link", tarfile.SYMTYPE, str(c.canary)),
                                               tar_file(f"model/link/{c.pwn}", b"pwned")]),
         ("symbolic link", "links are not allowed"), filename="model.tgz"),
    Case("tar-hardlink", lambda c: targz_bytes([tar_special("model/saved_model.pb", tarfile.LNKTYPE, "/etc/passwd")]),
         ("hard link",), filename="model.tar.gz"),
    Case("tar-char-device", lambda c: targz_bytes([tar_special("model/null", tarfile.CHRTYPE)]),
         ("device, fifo or other special file",), filename="model.tar.gz", via="form"),
    Case("tar-fifo", lambda c: targz_bytes([tar_special("model/fifo", tarfile.FIFOTYPE)]),
         ("device, fifo or other special file",), filename="model.tar.gz", via="service"),
    Case("tar-oversized-pax-header", lambda c: pax_bomb(), ("oversized tar metadata header",),
         filename="model.tar.gz"),
    Case("targz-bomb-100MB", lambda c: targz_bomb(), ("compression bomb",), filename="model.tar.gz"),
    Case("targz-truncated", lambda c: truncated(targz_folder(c.tiny_cnn_dir)), ("truncated or corrupt",),
         filename="model.tgz"),
    Case("gzip-but-not-tar", lambda c: gzip.compress(b"hello world " * 100), ("truncated or corrupt",),
         filename="model.tar.gz"),
    Case("targz-empty", lambda c: targz_bytes([]), ("no saved_model.pb",), filename="model.tar.gz"),
    # --- refused at the door: nothing stored, no pipeline
    Case("wrong-magic-png", lambda c: b"\x89PNG\r\n\x1a\n" + bytes(200), ("not a .zip or .tar.gz archive",),
         refused=400),
    Case("wrong-magic-elf", lambda c: file_head(Path(sys.executable).resolve()),
         ("not a .zip or .tar.gz archive",), refused=400, via="form"),
    Case("uncompressed-tar", lambda c: targz_bytes(_fake_model_tar(), compress=False),
         ("not a .zip or .tar.gz archive",), refused=400, filename="model.tar"),
    Case("zip-named-exe", lambda c: zip_bytes(FAKE_MODEL), ("not a .zip, .tar.gz or .tgz",), refused=400,
         filename="model.exe"),
    Case("zip-named-tar-gz", lambda c: zip_bytes(FAKE_MODEL), ("first bytes say it is a .zip",), refused=400,
         filename="model.tar.gz", via="form"),
    Case("empty-file", lambda c: b"", ("not a .zip or .tar.gz archive",), refused=400),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_archive_is_refused_with_a_reason(case: Case, ctx, uploader, client, settings,
                                                  mini_benchmark) -> None:
    assert_refused_with_a_reason(case, ctx, uploader, client, settings)
