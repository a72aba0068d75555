"""Loading and contract checks of uploaded SavedModels (evaluator/engine/network.py).

Variants of the tiny CNN are exported with `tf.saved_model.save` of a `tf.Module`,
the way a researcher outside Keras would: custom signature names, fixed batches,
probability heads, rounding or noisy inputs. test_attacks.py reuses `export_module`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from evaluator.engine.errors import ContractError
from evaluator.engine.network import LoadedNetwork, load_network, reopen_network

SHAPE = (28, 28, 1)


def export_module(
    path: Path,
    body: Callable,
    *,
    model=None,
    shape: tuple = (None, 28, 28, 1),
    dtype=None,
    signature: str = "serving_default",
    output: str | None = "scores",
) -> Path:
    """Export `body(model, x)` as a SavedModel whose only signature is `signature`."""
    module = tf.Module()
    module.model = model  # tracked, so the Keras variables are saved with the module

    @tf.function(input_signature=[tf.TensorSpec(shape, dtype or tf.float32, name="images")])
    def serve(images):
        result = body(module.model, images)
        return {output: result} if output else result

    tf.saved_model.save(module, str(path), signatures={signature: serve})
    return path


def load(path: Path, **kwargs) -> LoadedNetwork:
    return load_network(path, expected_shape=SHAPE, num_classes=10, **kwargs)


@pytest.fixture(scope="module")
def probs_dir(tiny_cnn, tmp_path_factory) -> Path:
    return export_module(
        tmp_path_factory.mktemp("probs") / "m", lambda m, x: tf.nn.softmax(m(x)), model=tiny_cnn, signature="predict"
    )


@pytest.fixture(scope="module")
def fixed_dir(tiny_cnn, tmp_path_factory) -> Path:
    return export_module(tmp_path_factory.mktemp("fixed") / "m", lambda m, x: m(x), model=tiny_cnn, shape=(32, 28, 28, 1))


def test_keras_export_loads_as_deterministic_logits(tiny_cnn, tiny_cnn_dir, mnist_small):
    _, _, x_eval, y_eval = mnist_small
    net = load(tiny_cnn_dir, probe=x_eval[:20])
    info = net.info
    assert info.signature == "serving_default"
    assert info.input_shape == SHAPE and info.fixed_batch is None and info.num_classes == 10
    assert not info.outputs_probabilities and info.deterministic
    assert net.frozen  # deterministic networks run as a constant-folded graph
    assert info.as_dict()["input_shape"] == [28, 28, 1]

    log_probs = net.predict_log_probs(x_eval, batch_size=128)
    expected = tf.nn.log_softmax(tiny_cnn(x_eval)).numpy()
    np.testing.assert_allclose(log_probs, expected, atol=1e-4)
    predictions = net.predict(x_eval)
    assert predictions.dtype == np.int64
    assert np.mean(predictions == y_eval) > 0.8
    assert net.predict(x_eval[:0]).shape == (0,)


def test_probability_output_with_custom_signature_is_detected(probs_dir, tiny_cnn_dir, mnist_small):
    _, _, x_eval, _ = mnist_small
    net = load(probs_dir)
    assert net.info.signature == "predict"
    assert net.info.outputs_probabilities
    # Log-probabilities are the same whichever head the network has.
    logits_net = load(tiny_cnn_dir)
    np.testing.assert_allclose(net.predict_log_probs(x_eval), logits_net.predict_log_probs(x_eval), atol=1e-3)


def test_fixed_batch_predict_pads_and_matches_dynamic(fixed_dir, tiny_cnn_dir, mnist_small):
    _, _, x_eval, _ = mnist_small
    images = np.tile(x_eval, (7, 1, 1, 1))[:2000]  # 2,000 = 62 * 32 + 16: the last chunk is padded
    net = load(fixed_dir)
    assert net.info.fixed_batch == 32
    fixed = net.predict_log_probs(images, batch_size=1000)
    assert fixed.shape == (2000, 10)
    np.testing.assert_allclose(fixed, load(tiny_cnn_dir).predict_log_probs(images), atol=1e-4)
    # Inside graphs, batches that are multiples of the fixed batch are split into calls.
    assert net.log_probs(tf.constant(images[:64])).shape == (64, 10)


@pytest.mark.parametrize("variant", ["keras", "probabilities", "fixed-batch"])
def test_reopened_network_classifies_like_the_validated_one(variant, tiny_cnn_dir, probs_dir, fixed_dir, mnist_small):
    """A peer in a cross-evaluation is reopened from its stored info (no probes, no
    freezing, no tracing) and must give exactly the classes of the full load."""
    _, _, x_eval, _ = mnist_small
    path = {"keras": tiny_cnn_dir, "probabilities": probs_dir, "fixed-batch": fixed_dir}[variant]
    images = np.tile(x_eval, (3, 1, 1, 1))[:1001]  # not a multiple of 32 or of the chunk size
    validated = load(path)
    stored = {**validated.info.as_dict(), "model_dir": "networks/7/model"}  # as the DB keeps it
    reopened = reopen_network(path, stored)
    assert reopened.info == validated.info and not reopened.frozen
    np.testing.assert_array_equal(reopened.classify(images, batch_size=500), validated.predict(images))
    assert reopened.classify(images[:0]).shape == (0,)


def test_reopening_a_model_that_changed_since_validation_is_refused(tiny_cnn_dir, probs_dir):
    stored = load(tiny_cnn_dir).info.as_dict()
    with pytest.raises(ContractError, match="could not be opened again"):
        reopen_network(probs_dir, stored)  # its only signature is 'predict', not 'serving_default'
    with pytest.raises(ContractError, match="no longer matches"):
        reopen_network(tiny_cnn_dir, {**stored, "output_key": "scores"})


def test_noisy_network_is_flagged_non_deterministic(tiny_cnn, tmp_path):
    path = export_module(
        tmp_path / "m", lambda m, x: m(x + tf.random.normal(tf.shape(x), stddev=0.1)), model=tiny_cnn
    )
    net = load(path)
    assert net.info.deterministic is False
    assert not net.frozen  # freezing could fix a variable-held RNG state: never for these


def _constant_scores(classes: int) -> Callable:
    return lambda _, x: tf.zeros([tf.shape(x)[0], classes]) + tf.reduce_mean(tf.cast(x, tf.float32))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"body": _constant_scores(10), "shape": (None, 32, 32, 3)},
         "input shape (None, 32, 32, 3) does not match the benchmark's (28, 28, 1)"),
        ({"body": _constant_scores(5)}, "output has 5 classes, the benchmark has 10"),
        ({"body": _constant_scores(10), "dtype": "int32"}, "input dtype int32, expected float32"),
        ({"body": lambda _, x: _constant_scores(10)(_, x) * np.nan}, "model outputs NaN or Inf on the probe images"),
        ({"body": lambda _, x: {"a": _constant_scores(10)(_, x), "b": _constant_scores(10)(_, x)}, "output": None},
         "2 outputs (a, b)"),
        ({"body": _constant_scores(10), "shape": (None, 784)}, "input shape (None, 784) does not match"),
    ],
    ids=["shape", "classes", "dtype", "nan", "outputs", "rank"],
)
def test_contract_violations_are_rejected_with_reason(tmp_path, kwargs, reason):
    kwargs = dict(kwargs)
    if "dtype" in kwargs:
        kwargs["dtype"] = getattr(tf, kwargs["dtype"])
    path = export_module(tmp_path / "m", **kwargs)
    with pytest.raises(ContractError) as caught:
        load(path)
    assert reason in str(caught.value)


def test_several_signatures_without_default_are_named(tmp_path):
    module = tf.Module()
    spec = tf.TensorSpec([None, 28, 28, 1], tf.float32)
    first = tf.function(lambda x: {"s": _constant_scores(10)(None, x)}, input_signature=[spec])
    second = tf.function(lambda x: {"s": _constant_scores(10)(None, x)}, input_signature=[spec])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"alpha": first, "beta": second})
    with pytest.raises(ContractError, match=r"several signatures \(alpha, beta\)"):
        load(tmp_path / "m")


def test_unloadable_folder_is_a_contract_error(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ContractError, match="could not be loaded"):
        load(tmp_path)
