"""Op allowlist scan of saved_model.pb (evaluator.engine.opscan), without loading models.

Hostile models are exported from tf.functions that are only traced, never run: tracing
records tf.io.write_file as a node without executing it, so the export itself touches
nothing and any file found later would have been written by the scan.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from evaluator.engine import opscan
from evaluator.engine.errors import ContractError, OpScanError
from evaluator.engine.opscan import ALLOWED_OPS, CHECKPOINT_IO_OPS, scan_saved_model

tf = pytest.importorskip("tensorflow")
IMAGE = tf.TensorSpec([None, 28, 28, 1], tf.float32)


def export_module(path: Path, body: Callable[[Any], Any]) -> Path:
    """Save a tf.Module whose serving signature computes `body(images)` (traced only)."""

    class Net(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.random.normal([784, 10], seed=0))

        @tf.function(input_signature=[IMAGE])
        def __call__(self, x: Any) -> Any:
            logits = tf.matmul(tf.reshape(body(x), [-1, 784]), self.w)
            return {"logits": logits}

    net = Net()
    tf.saved_model.save(net, str(path), signatures={"serving_default": net.__call__})
    return path


@pytest.fixture()
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to load a SavedModel during the scan."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the scan must not load the model")

    monkeypatch.setattr(tf.saved_model, "load", refuse)
    monkeypatch.setattr(tf.keras.models, "load_model", refuse, raising=False)


def scan_rejects(model_dir: Path) -> OpScanError:
    with pytest.raises(OpScanError) as info:
        scan_saved_model(model_dir)
    assert isinstance(info.value, ContractError)
    return info.value


# --- accepted ---------------------------------------------------------------------------


def test_tiny_keras_cnn_passes(tiny_cnn_dir: Path, no_loading: None) -> None:
    report = scan_saved_model(tiny_cnn_dir)
    assert {"Conv2D", "MaxPool", "MatMul", "Relu", "RestoreV2", "SaveV2"} <= report.ops
    assert report.ops <= ALLOWED_OPS
    assert report.functions >= 3 and report.nodes > 50


def test_noise_module_with_while_loop_passes(tmp_path: Path) -> None:
    def noisy(x: Any) -> Any:
        def step(i: Any, acc: Any) -> tuple[Any, Any]:
            return i + 1, acc + tf.random.normal(tf.shape(x), stddev=0.1)

        _, noise = tf.while_loop(lambda i, _: i < 4, step, [0, tf.zeros_like(x)])
        return tf.clip_by_value(x + noise / 4.0, 0.0, 1.0)

    report = scan_saved_model(export_module(tmp_path / "m", noisy))
    assert {"RandomStandardNormal", "While"} <= report.ops


def test_keras_batchnorm_resizing_passes(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1.0),
            keras.layers.Resizing(14, 14),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.AveragePooling2D(2),
            keras.layers.Dropout(0.5),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.export(str(tmp_path / "m"), verbose=False)
    assert {"ResizeBilinear", "Rsqrt", "AvgPool"} <= scan_saved_model(tmp_path / "m").ops


# --- hostile graphs ---------------------------------------------------------------------


def test_read_file_inside_while_body_is_found(tmp_path: Path, no_loading: None) -> None:
    def leak(x: Any) -> Any:
        def step(i: Any, acc: Any) -> tuple[Any, Any]:
            return i + 1, acc + tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)

        _, acc = tf.while_loop(lambda i, _: i < 2, step, [0, 0.0])
        return x + acc

    error = scan_rejects(export_module(tmp_path / "m", leak))
    assert "ReadFile" in error.ops
    assert "disallowed TensorFlow op(s): ReadFile (in function while_body" in str(error)


def test_write_file_rejected_and_never_run(tmp_path: Path, no_loading: None) -> None:
    target = tmp_path / "pwned.txt"

    def write(x: Any) -> Any:
        with tf.control_dependencies([tf.io.write_file(str(target), "pwned")]):
            return tf.identity(x)

    model = export_module(tmp_path / "m", write)
    error = scan_rejects(model)
    assert error.ops == frozenset({"WriteFile"})
    assert "WriteFile (in function __inference___call__" in str(error)
    assert not target.exists()


def test_py_function_rejected(tmp_path: Path) -> None:
    def python(x: Any) -> Any:
        return tf.py_function(lambda t: t, [x], tf.float32)

    assert "EagerPyFunc" in scan_rejects(export_module(tmp_path / "m", python)).ops


def test_checkpoint_io_in_serving_function_rejected(tmp_path: Path) -> None:
    # SaveV2 is fine in the saver function every export has, never in model code.
    def save(x: Any) -> Any:
        op = tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt"), tensor_names=["x"], shape_and_slices=[""], tensors=[x])
        with tf.control_dependencies([op]):
            return tf.identity(x)

    error = scan_rejects(export_module(tmp_path / "m", save))
    assert error.ops == frozenset({"SaveV2"})
    assert "in function __inference___call__" in str(error)
    assert not list(tmp_path.glob("ckpt*"))


# --- tricks at the protobuf level (edited copies of the tiny CNN) ----------------------


def edited_copy(tiny_cnn_dir: Path, dest: Path, edit: Callable[[Any], None]) -> Path:
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(tiny_cnn_dir, dest)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((dest / "saved_model.pb").read_bytes())
    edit(saved.meta_graphs[0].graph_def)
    (dest / "saved_model.pb").write_bytes(saved.SerializeToString())
    return dest


def test_function_attr_naming_a_primitive_op(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    def add_call(graph: Any) -> None:
        node = graph.node.add(name="sneaky", op="PartitionedCall")
        node.attr["f"].func.name = "ReadFile"

    error = scan_rejects(edited_copy(tiny_cnn_dir, tmp_path / "m", add_call))
    assert "ReadFile (in graph)" in str(error)


def test_library_function_shadowing_an_op(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    def shadow(graph: Any) -> None:
        graph.library.function.add().signature.name = "WriteFile"
        graph.node.add(name="call", op="WriteFile")

    assert "WriteFile" in scan_rejects(edited_copy(tiny_cnn_dir, tmp_path / "m", shadow)).ops


def test_saver_functions_called_from_model_code_lose_their_pass(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    def call_saver(graph: Any) -> None:
        saver = next(f.signature.name for f in graph.library.function if "_traced_save" in f.signature.name)
        serving = next(f for f in graph.library.function if "signature_wrapper" in f.signature.name)
        serving.node_def.add(name="save_too", op="StatefulPartitionedCall").attr["f"].func.name = saver

    error = scan_rejects(edited_copy(tiny_cnn_dir, tmp_path / "m", call_saver))
    assert error.ops <= CHECKPOINT_IO_OPS and "SaveV2" in error.ops


# --- broken files -----------------------------------------------------------------------


def test_corrupt_saved_model_pb(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff\xffnot a protobuf")
    assert "not a valid SavedModel protobuf" in str(scan_rejects(tmp_path))


def test_empty_saved_model_pb(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert "holds no MetaGraph" in str(scan_rejects(tmp_path))


def test_oversized_saved_model_pb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opscan, "MAX_SAVED_MODEL_BYTES", 1024 * 1024)
    (tmp_path / "saved_model.pb").write_bytes(bytes(2 * 1024 * 1024))
    assert "2 MiB, over the 1 MiB limit" in str(scan_rejects(tmp_path))


def test_allowlist_excludes_io_and_python() -> None:
    dangerous = {"ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "EagerPyFunc", "PrintV2", "ImmutableConst"}
    assert not dangerous & ALLOWED_OPS
