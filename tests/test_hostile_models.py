"""Hostile and broken models, every case through the real product path
(tests/hostile_upload.py) on the session's `mini` benchmark, engine work in real
sandboxed children: refused by the op scan before anything loads them, by the loader's
contract checks, or stopped by the sandbox's limits. Each must end `rejected` with a
reason that names the problem, and afterwards the same process still ranks a good model.

Notes on the "network and process op" cases: core TensorFlow has no socket or
subprocess op. The ways a graph reaches the network are its file-system ops on remote
schemes (ReadFile/WriteFile/MatchingFiles on gs://, s3://, http paths), DecodeProto with
a `file://` descriptor source, and PrintV2's `file://` output stream; code execution is
PyFunc/EagerPyFunc (tf.py_function). All of them are covered below.
"""

from __future__ import annotations

import pytest

from evaluator.services.pipeline import network_run_pipeline
from leaderboard.models import Network
from tests.hostile_archives import zip_folder
from tests.hostile_models import (
    m_decode_proto_file_descriptor,
    m_fails_at_inference,
    m_five_classes,
    m_garbage_graph,
    m_infinite_loop,
    m_int_input,
    m_matching_files,
    m_memory_hog,
    m_missing_variables,
    m_nan,
    m_no_signatures,
    m_print_to_file,
    m_py_function,
    m_rank3_output,
    m_read_file,
    m_read_in_cond_branch,
    m_remote_filesystem,
    m_two_inputs,
    m_two_outputs,
    m_write_file,
    m_write_in_nested_function,
    m_write_in_unused_method,
    m_write_in_while_body,
    m_wrong_shape,
    model_zip,
)
from tests.hostile_upload import (  # noqa: F401 (fixtures)
    EVIL,
    S,
    Case,
    assert_refused_with_a_reason,
    ctx,
    ids,
    sandbox_children,
    upload,
    uploader,
)
from tests.test_hostile_archives import CASES as ARCHIVE_CASES

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CASES = [
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


def test_corpus_is_big_and_unique() -> None:
    corpus = [*ARCHIVE_CASES, *CASES]
    assert len(corpus) >= 30
    assert len({c.id for c in corpus}) == len(corpus)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_model_is_refused_with_a_reason(case: Case, ctx, uploader, client, settings,
                                                mini_benchmark) -> None:
    assert_refused_with_a_reason(case, ctx, uploader, client, settings)


def test_after_a_sandbox_kill_the_worker_still_ranks_a_good_model(client, uploader, mini_benchmark, ctx,
                                                                   settings) -> None:
    """The same process that just had a child killed for blowing its memory ceiling
    ranks the next upload normally (whatever else of the corpus ran before it), and the
    hostile name it carries is escaped on every public page."""
    (hog,) = [c for c in CASES if c.id == "memory-hog-3GiB"]
    usual = {key: getattr(settings, key) for key in hog.settings}
    assert_refused_with_a_reason(hog, ctx, uploader, client, settings)
    assert sandbox_children() == []
    for key, value in usual.items():  # the next upload runs under the usual limits
        setattr(settings, key, value)
    status, error, pk = upload(client, uploader, via="api", data=zip_folder(ctx.tiny_cnn_dir), filename="good.zip",
                               name=EVIL[:100], description=EVIL)
    assert status == 202, error
    net = Network.objects.get(pk=pk)
    assert network_run_pipeline(network=net) is True
    net.refresh_from_db()
    assert net.status == S.RANKED and net.level is not None and net.reason == ""
    assert sandbox_children() == []
    client.logout()
    for url in ("/?benchmark=mini", f"/networks/{pk}/", "/matrix/?benchmark=mini", "/benchmark/?benchmark=mini"):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
    assert pk in {row["id"] for row in client.get("/api/leaderboard?benchmark=mini").json()["networks"]}
    svg = client.get(f"/networks/{pk}/badge.svg").content.decode()
    assert "<script" not in svg
