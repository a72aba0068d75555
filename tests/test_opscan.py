"""Op allowlist scan of saved_model.pb (evaluator.engine.opscan), without loading models.

Hostile models are exported from tf.functions that are only traced, never run: tracing
records tf.io.write_file as a node without executing it, so the export itself touches
nothing and any file found later would have been written by the scan. The checkpoint
attacks (tests/hostile_checkpoint_models.py) are also loaded and run here, scan bypassed,
in a tmp folder: proof that what the scan stops really writes or reads files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from evaluator.engine import opscan
from evaluator.engine.errors import ContractError, OpScanError
from evaluator.engine.opscan import ALLOWED_OPS, CHECKPOINT_IO_OPS, scan_saved_model
from tests import hostile_checkpoint_models as hostile

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


def test_keras_model_saved_with_tf_saved_model_save_passes(tmp_path: Path, no_loading: None) -> None:
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(10)])
    tf.saved_model.save(model, str(tmp_path / "m"))
    assert {"Conv2D", "MatMul", "SaveV2"} <= scan_saved_model(tmp_path / "m").ops


def test_custom_gradient_module_passes(tmp_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    @tf.custom_gradient
    def clipped_gradient(x: Any) -> Any:
        return tf.identity(x), lambda dy: tf.clip_by_value(dy, -0.1, 0.1)

    model = export_module(tmp_path / "m", clipped_gradient)
    library = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes()).meta_graphs[0].graph_def.library
    (gradient,) = library.registered_gradients  # an entry point of the scan, and clean
    assert gradient.gradient_func in {f.signature.name for f in library.function}
    assert {"Minimum", "Maximum"} <= scan_saved_model(model).ops  # tf.clip_by_value


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


def edited_saved_model(tiny_cnn_dir: Path, dest: Path, edit: Callable[[Any], None]) -> Path:
    """A copy of the tiny CNN whose SavedModel proto went through `edit`."""
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(tiny_cnn_dir, dest)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((dest / "saved_model.pb").read_bytes())
    edit(saved)
    (dest / "saved_model.pb").write_bytes(saved.SerializeToString())
    return dest


def edited_copy(tiny_cnn_dir: Path, dest: Path, edit: Callable[[Any], None]) -> Path:
    """A copy of the tiny CNN whose graph_def went through `edit`."""
    return edited_saved_model(tiny_cnn_dir, dest, lambda saved: edit(saved.meta_graphs[0].graph_def))


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


def add_function(graph: Any, name: str, op: str) -> None:
    """A library function holding one `op` node (enough for the scan, never run)."""
    function = graph.library.function.add()
    function.signature.name = name
    function.node_def.add(name="n", op=op)


def serving_function(graph: Any) -> str:
    return next(f.signature.name for f in graph.library.function if "signature_wrapper" in f.signature.name)


def test_saver_functions_pass_only_while_unreachable(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    # Such a function is no saver by any name the uploader wrote: it just is never called.
    model = edited_copy(tiny_cnn_dir, tmp_path / "m", lambda g: add_function(g, "lonely", "SaveV2"))
    assert "SaveV2" in scan_saved_model(model).ops


@pytest.mark.parametrize("registry", ["gradient", "registered_gradients"])
@pytest.mark.parametrize("op", ["ReadFile", "SaveV2"])
def test_function_reachable_only_as_a_gradient_is_scanned(
    tiny_cnn_dir: Path, tmp_path: Path, registry: str, op: str
) -> None:
    def register(graph: Any) -> None:
        add_function(graph, "evil_grad", op)
        if registry == "gradient":
            graph.library.gradient.add(function_name=serving_function(graph), gradient_func="evil_grad")
        else:
            graph.library.registered_gradients.add(gradient_func="evil_grad", registered_op_type="CustomGradient-1")

    error = scan_rejects(edited_copy(tiny_cnn_dir, tmp_path / "m", register))
    assert error.ops == frozenset({op}) and f"{op} (in function evil_grad)" in str(error)


def test_function_named_anywhere_in_the_object_graph_is_scanned(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    def capture(saved: Any) -> None:
        add_function(saved.meta_graphs[0].graph_def, "evil", "RestoreV2")
        saved.meta_graphs[0].object_graph_def.nodes.add().captured_tensor.concrete_function = "evil"

    error = scan_rejects(edited_saved_model(tiny_cnn_dir, tmp_path / "m", capture))
    assert "RestoreV2 (in function evil)" in str(error)


def test_function_shadowing_an_allowed_op_is_scanned(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    error = scan_rejects(edited_copy(tiny_cnn_dir, tmp_path / "m", lambda g: add_function(g, "Identity", "SaveV2")))
    assert "SaveV2 (in function Identity)" in str(error)


def test_function_defined_twice_rejected(tiny_cnn_dir: Path, tmp_path: Path) -> None:
    def duplicate(graph: Any) -> None:
        add_function(graph, serving_function(graph), "SaveV2")

    assert "defines a library function twice" in str(scan_rejects(edited_copy(tiny_cnn_dir, tmp_path / "m", duplicate)))


@pytest.mark.parametrize("saver_def", ["cleared", "nonsense", "names_serving_node"])
def test_saver_def_is_ignored(tiny_cnn_dir: Path, tmp_path: Path, saver_def: str) -> None:
    def edit(saved: Any) -> None:
        meta = saved.meta_graphs[0]
        if saver_def == "cleared":
            meta.ClearField("saver_def")
        elif saver_def == "nonsense":
            meta.saver_def.save_tensor_name, meta.saver_def.restore_op_name = "no/such:7", "^?"
        else:
            serving = meta.signature_def["serving_default"].outputs["output_0"].name
            meta.saver_def.restore_op_name = serving.split(":")[0]
            meta.saver_def.save_tensor_name = serving

    report = scan_saved_model(edited_saved_model(tiny_cnn_dir, tmp_path / "m", edit))
    assert {"SaveV2", "RestoreV2"} <= report.ops


@pytest.mark.parametrize("layout", ["no_object_graph", "two_meta_graphs"])
def test_tf1_layouts_rejected(tiny_cnn_dir: Path, tmp_path: Path, layout: str) -> None:
    def edit(saved: Any) -> None:
        if layout == "no_object_graph":
            saved.meta_graphs[0].ClearField("object_graph_def")
        else:
            saved.meta_graphs.add().CopyFrom(saved.meta_graphs[0])

    message = str(scan_rejects(edited_saved_model(tiny_cnn_dir, tmp_path / "m", edit)))
    assert "TF1-format SavedModel" in message and "tf.saved_model.save(model, path)" in message
    assert ("no object graph" if layout == "no_object_graph" else "2 meta graphs") in message


# --- checkpoint attacks (tests/hostile_checkpoint_models.py) -----------------------------


@pytest.fixture(scope="session")
def checkpoint_attacks(tiny_cnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Each hostile model built once, its target (or source) path beside it."""
    root = tmp_path_factory.mktemp("checkpoint_attacks")
    victim = str(tiny_cnn_dir / "variables" / "variables")  # another network's weights
    dtypes = tf.train.load_checkpoint(victim).get_variable_to_dtype_map()
    key = sorted(k for k, d in dtypes.items() if d == tf.float32 and k.endswith("VARIABLE_VALUE"))[0]
    (root / "targets").mkdir()  # SaveV2 creates no parent folders
    targets = {name: str(root / "targets" / name) for name in ("renamed", "absolute", "merged", "tf1")}
    return SimpleNamespace(
        targets=targets,
        victim=victim,
        key=key,
        renamed=hostile.serving_calls_savev2_renamed_node(root / "renamed", targets["renamed"]),
        restore=hostile.serving_calls_restorev2_crafted_saver_def(root / "restore", victim, key),
        absolute=hostile.writes_outside_scratch(root / "absolute", targets["absolute"]),
        merged=hostile.writes_outside_scratch(root / "merged", targets["merged"], merge=True),
        tf1=hostile.tf1_format_model(root / "tf1", targets["tf1"]),
    )


@pytest.mark.parametrize(
    ("model", "ops"),
    [
        ("renamed", {"SaveV2"}),
        ("restore", {"RestoreV2"}),
        ("absolute", {"SaveV2"}),
        ("merged", {"SaveV2", "MergeV2Checkpoints"}),
    ],
)
def test_checkpoint_attacks_rejected(checkpoint_attacks: SimpleNamespace, no_loading: None, model: str, ops: set) -> None:
    error = scan_rejects(getattr(checkpoint_attacks, model))
    assert error.ops == ops
    assert all(f"{op} (in function __inference_" in str(error) for op in ops)
    assert "checkpoint ops may appear only in the exporter's own saver functions" in str(error)


def test_tf1_attack_rejected(checkpoint_attacks: SimpleNamespace, no_loading: None) -> None:
    message = str(scan_rejects(checkpoint_attacks.tf1))
    assert "TF1-format SavedModel (no object graph)" in message
    assert "model.export(path)" in message


def test_disguises_are_in_place(checkpoint_attacks: SimpleNamespace) -> None:
    """The saver_def really names the hostile serving call node (what an older scan trusted)."""
    from tensorflow.core.protobuf import saved_model_pb2

    for model in (checkpoint_attacks.renamed, checkpoint_attacks.restore):
        meta = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes()).meta_graphs[0]
        serving = meta.signature_def["serving_default"].outputs["logits"].name.split(":")[0]
        assert meta.saver_def.restore_op_name == serving


# Scan bypassed: a plain tf.saved_model.load, as the sandbox would do after a passing scan.

def untouched(prefix: str) -> bool:
    return not list(Path(prefix).parent.glob(Path(prefix).name + "*"))


def written(prefix: str) -> bool:
    return Path(f"{prefix}.index").is_file() and "pwned" in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()


@pytest.mark.parametrize("model", ["renamed", "absolute", "merged"])
def test_unscanned_serving_call_writes_the_file(checkpoint_attacks: SimpleNamespace, model: str) -> None:
    target = checkpoint_attacks.targets[model]
    assert untouched(target)  # neither the export nor the scan wrote it
    loaded = tf.saved_model.load(str(getattr(checkpoint_attacks, model)))
    assert untouched(target)
    loaded.signatures["serving_default"](tf.zeros([1, 28, 28, 1]))
    assert written(target)


def test_unscanned_serving_call_leaks_another_networks_weights(checkpoint_attacks: SimpleNamespace) -> None:
    loaded = tf.saved_model.load(str(checkpoint_attacks.restore))
    logits = loaded.signatures["serving_default"](tf.zeros([1, 28, 28, 1]))["logits"].numpy()[0]
    secret = tf.train.load_checkpoint(checkpoint_attacks.victim).get_tensor(checkpoint_attacks.key).ravel()
    assert secret[:10].any() and list(logits) == list(secret[:10])


def test_unscanned_tf1_model_writes_the_file_while_loading(checkpoint_attacks: SimpleNamespace) -> None:
    target = checkpoint_attacks.targets["tf1"]
    assert untouched(target)
    tf.saved_model.load(str(checkpoint_attacks.tf1))  # only loaded, nothing called
    assert written(target)


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
