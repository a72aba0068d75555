"""Load an uploaded SavedModel, check it against the network contract, run it fast.

Call `load_network` only after the op scan has passed: loading a SavedModel runs its
graph. Everything the upload is at fault for raises `ContractError` with a message that
names what is wrong; the message is shown to the user as is.

Inference goes through one `tf.function` per network with a fixed input signature, so
the restored graph is traced once and every batch after the first is a single graph
call (no per-batch retracing, no eager op dispatch). Deterministic networks are also
frozen (variables folded into constants, so oneDNN can treat the weights as constant):
on the 2-core bench VM this made separately loaded copies run at one steady speed
much more often than the variable-backed graph did (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

# Internal module, but the one public path to freezing a TF2 function (the TFLite
# converter uses it); stable since TF 2.2.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from evaluator.engine.errors import ContractError

# Probabilities are detected when every probe row is non-negative and sums to 1 within
# this tolerance (float32 softmax sums are off by ~1e-7; 1e-3 also admits float16 heads).
PROBABILITY_TOLERANCE = 1e-3
# log(0) would be -inf and kill gradients; clipping keeps log-probabilities finite.
PROBABILITY_FLOOR = 1e-12
PROBE_SIZE = 16


@dataclass(frozen=True)
class NetworkInfo:
    """What the loader learned about a network: stored with it and shown as flags."""

    signature: str
    input_key: str
    output_key: str
    input_shape: tuple[int, int, int]
    fixed_batch: int | None
    num_classes: int
    outputs_probabilities: bool
    deterministic: bool

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data


def _short(exc: BaseException, limit: int = 200) -> str:
    """First line of a TF error, bounded: TF messages embed whole graphs and tracebacks."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape_text(shape: tf.TensorShape) -> str:
    return str(tuple(shape.as_list())) if shape.rank is not None else "(unknown rank)"


def _pick_signature(loaded: Any) -> tuple[str, Any]:
    signatures = dict(loaded.signatures)
    if "serving_default" in signatures:
        return "serving_default", signatures["serving_default"]
    if len(signatures) == 1:
        return next(iter(signatures.items()))
    if not signatures:
        raise ContractError("the SavedModel has no signatures; export it with a 'serving_default' signature")
    names = ", ".join(sorted(signatures))
    raise ContractError(
        f"the SavedModel has several signatures ({names}) and none is 'serving_default'"
    )


def _check_input(name: str, function: Any, expected_shape: tuple[int, int, int]) -> tuple[str, int | None]:
    args, kwargs = function.structured_input_signature
    specs = {**{f"arg{i}": spec for i, spec in enumerate(args)}, **kwargs}
    if len(specs) != 1:
        names = ", ".join(sorted(specs)) or "none"
        raise ContractError(
            f"signature '{name}' takes {len(specs)} inputs ({names}); the contract wants exactly one image tensor"
        )
    key, spec = next(iter(specs.items()))
    if not isinstance(spec, tf.TensorSpec):
        raise ContractError(f"signature '{name}' input '{key}' is not a single tensor")
    if spec.dtype != tf.float32:
        raise ContractError(f"input dtype {spec.dtype.name}, expected float32")
    shape = spec.shape
    matches = shape.rank == 4 and all(
        dim is None or dim == want for dim, want in zip(shape.as_list()[1:], expected_shape)
    )
    if not matches:
        raise ContractError(
            f"input shape {_shape_text(shape)} does not match the benchmark's {tuple(expected_shape)}"
        )
    batch = shape.as_list()[0]
    if batch is not None and batch < 1:
        raise ContractError(f"input shape {_shape_text(shape)} has an empty batch dimension")
    return key, batch


def _check_output(name: str, function: Any, num_classes: int) -> str:
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    if len(outputs) != 1:
        names = ", ".join(sorted(outputs))
        raise ContractError(
            f"signature '{name}' has {len(outputs)} outputs ({names}); the contract wants exactly one"
        )
    key, spec = next(iter(outputs.items()))
    shape = spec.shape
    if shape.rank != 2:
        raise ContractError(
            f"output shape {_shape_text(shape)} is not [batch, classes]"
        )
    classes = shape.as_list()[1]
    if classes is not None and classes != num_classes:
        raise ContractError(f"output has {classes} classes, the benchmark has {num_classes}")
    if not spec.dtype.is_floating:
        raise ContractError(f"output dtype {spec.dtype.name}, expected a float tensor of scores")
    return key


class LoadedNetwork:
    """A contract-checked network: differentiable log-probabilities and fast batched predict."""

    def __init__(
        self, loaded: Any, function: Any, info: NetworkInfo, forward: Callable[[tf.Tensor], tf.Tensor] | None = None
    ) -> None:
        # Keep the restored object alive: its variables back the signature function.
        self._loaded = loaded
        self.signature_function = function
        # The frozen graph when there is one (see `_freeze`), else the signature itself.
        self._forward = forward or (lambda x: function(**{info.input_key: x})[info.output_key])
        self.frozen = forward is not None
        self.info = info
        # Compiled functions other engine modules build around this network (attacks,
        # universal perturbations), kept here so they live exactly as long as it does.
        self.function_cache: dict[tuple, Any] = {}
        h, w, c = info.input_shape
        self._predict_fn = tf.function(
            self._log_probs_flat,
            input_signature=[tf.TensorSpec([info.fixed_batch, h, w, c], tf.float32)],
        )

    # -- graph-level API (inside a tf.function) -------------------------------------------

    def raw_outputs(self, x: tf.Tensor) -> tf.Tensor:
        """The signature's output (logits or probabilities) as float32.

        With a fixed batch B, a batch of k*B images (static size) is split into k calls,
        so attacks can run large batches against fixed-batch networks.
        """
        fixed = self.info.fixed_batch
        size = x.shape[0]
        if fixed is None or size == fixed:
            return self._call(x)
        if size is None or size % fixed:
            raise ValueError(f"batch of {size} images is not a multiple of the fixed batch {fixed}")
        return tf.concat([self._call(part) for part in tf.split(x, size // fixed)], axis=0)

    def log_probs(self, x: tf.Tensor) -> tf.Tensor:
        """Differentiable log-probabilities, whether the network outputs logits or probabilities."""
        return self._to_log_probs(self.raw_outputs(x))

    # -- numpy API -----------------------------------------------------------------------

    def predict_log_probs(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Log-probabilities for any number of images, in batches (padded for fixed batches)."""
        return np.concatenate(
            [self._predict_fn(chunk).numpy()[:count] for chunk, count in self.batches(x, batch_size)]
            or [np.zeros((0, self.info.num_classes), np.float32)]
        )

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class per image (int64)."""
        return self.predict_log_probs(x, batch_size).argmax(axis=1).astype(np.int64)

    def classify(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted class per image, calling the forward function batch by batch.

        Same classes as `predict` (argmax of logits or probabilities is the argmax of
        the log-probabilities) without tracing a new graph first: for a network used
        for one predict, e.g. each peer of a cross-evaluation, the trace costs more
        than the predict.
        """
        outs = [self._call(tf.constant(chunk)).numpy()[:count] for chunk, count in self.batches(x, batch_size)]
        if not outs:
            return np.zeros(0, np.int64)
        return np.concatenate(outs).argmax(axis=1).astype(np.int64)

    def batch_step(self, batch_size: int) -> int:
        """The largest usable batch not above batch_size: a multiple of a fixed batch."""
        fixed = self.info.fixed_batch
        if fixed is None:
            return max(1, batch_size)
        return fixed * max(1, batch_size // fixed)

    def batches(self, x: np.ndarray, batch_size: int, *, allow_multiple: bool = False):
        """Yield (chunk, real_count); with a fixed batch every chunk has exactly that size.

        By default chunks have the fixed batch size itself (what `predict` traces);
        with allow_multiple, up to batch_size images, a multiple of it (graph code
        splits those, see `raw_outputs`). The last chunk is zero-padded.
        """
        fixed = self.info.fixed_batch
        step = self.batch_step(batch_size) if (fixed is None or allow_multiple) else fixed
        x = np.asarray(x, dtype=np.float32)
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            count = len(chunk)
            if fixed is not None and count < step:
                chunk = np.concatenate([chunk, np.zeros((step - count, *chunk.shape[1:]), np.float32)])
            yield chunk, count

    # -- internals -----------------------------------------------------------------------

    def _call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(self._forward(x), tf.float32)

    def _to_log_probs(self, raw: tf.Tensor) -> tf.Tensor:
        if self.info.outputs_probabilities:
            return tf.math.log(tf.clip_by_value(raw, PROBABILITY_FLOOR, 1.0))
        return tf.nn.log_softmax(raw, axis=-1)

    def _log_probs_flat(self, x: tf.Tensor) -> tf.Tensor:
        return self._to_log_probs(self._call(x))


def graph_gradient(objective: tf.Tensor, wrt: tf.Tensor) -> tf.Tensor:
    """d objective / d wrt inside a tf.function, zeros where nothing connects them.

    Symbolic `tf.gradients`, not a GradientTape: graph code needs no tape bookkeeping,
    and inputs with no path to the objective (tf.round, casts) get a zero gradient
    instead of None, which is exactly what the vanishing-gradient flag must see.
    """
    return tf.gradients(objective, wrt, unconnected_gradients=tf.UnconnectedGradients.ZERO)[0]


def _freeze(loaded: Any, function: Any, info: NetworkInfo, images: np.ndarray,
            expected: np.ndarray) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """The signature with its variables folded into constants, or None to keep it as is.

    Only for deterministic networks: a variable-held RNG state frozen into a constant
    would change what the network computes. Kept only if it reproduces the probe
    outputs; any failure (graphs too large for one protobuf, exotic resources) keeps the
    original, which is slower but correct.
    """
    spec = tf.TensorSpec([info.fixed_batch, *info.input_shape], tf.float32)
    try:
        concrete = tf.function(lambda x: function(**{info.input_key: x})[info.output_key]).get_concrete_function(spec)
        frozen = convert_variables_to_constants_v2(concrete)
        forward = lambda x: frozen(x)[0]  # noqa: E731  (the frozen function returns a list)
        candidate = LoadedNetwork(loaded, function, info, forward)
        outputs, _ = _probe(candidate, images)
    except Exception:  # noqa: BLE001  freezing is an optimisation: never fail a load over it
        return None
    return forward if np.allclose(outputs, expected, rtol=1e-4, atol=1e-5) else None


def _probe_images(probe: np.ndarray | None, shape: tuple[int, int, int]) -> np.ndarray:
    if probe is not None and len(probe):
        return np.asarray(probe, dtype=np.float32)
    # Zeros catch log(0)-style NaNs; uniform noise exercises every pixel.
    noise = np.random.default_rng(0).random((PROBE_SIZE - 1, *shape), dtype=np.float32)
    return np.concatenate([np.zeros((1, *shape), np.float32), noise])


def _probe(network: LoadedNetwork, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two passes of raw outputs over the probe images (chunked like predict)."""
    passes = []
    for _ in range(2):
        try:
            outs = [network._call(tf.constant(chunk)).numpy()[:count] for chunk, count in network.batches(images, 256)]
        except (tf.errors.OpError, ValueError, TypeError) as exc:
            raise ContractError(f"the model fails on the probe images: {_short(exc)}") from None
        passes.append(np.concatenate(outs))
    return passes[0], passes[1]


def load_network(
    model_dir: Path,
    *,
    expected_shape: tuple[int, int, int],
    num_classes: int,
    probe: np.ndarray | None = None,
) -> LoadedNetwork:
    """Load a SavedModel folder, check the contract, and detect logits/probabilities and determinism."""
    expected_shape = tuple(int(d) for d in expected_shape)
    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as exc:  # TF raises many types here (OpError, ValueError, KeyError, ...)
        raise ContractError(f"the SavedModel could not be loaded: {_short(exc)}") from None

    name, function = _pick_signature(loaded)
    input_key, fixed_batch = _check_input(name, function, expected_shape)
    output_key = _check_output(name, function, num_classes)

    provisional = NetworkInfo(
        signature=name,
        input_key=input_key,
        output_key=output_key,
        input_shape=expected_shape,
        fixed_batch=fixed_batch,
        num_classes=num_classes,
        outputs_probabilities=False,
        deterministic=True,
    )
    images = _probe_images(probe, expected_shape)
    first, second = _probe(LoadedNetwork(loaded, function, provisional), images)
    if first.ndim != 2 or first.shape[1] != num_classes:
        raise ContractError(f"output has {first.shape[-1]} classes, the benchmark has {num_classes}")
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        raise ContractError("model outputs NaN or Inf on the probe images")
    probabilities = bool(
        (first >= 0).all() and np.allclose(first.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE, rtol=0)
    )
    info = replace(provisional, outputs_probabilities=probabilities, deterministic=bool(np.array_equal(first, second)))
    forward = _freeze(loaded, function, info, images, first) if info.deterministic else None
    return LoadedNetwork(loaded, function, info, forward)


def reopen_network(model_dir: Path, info: dict[str, Any]) -> LoadedNetwork:
    """A network validated before (by load_network), opened with what was learned then.

    No probes and no freezing: for a one-off `classify` of a stored peer that would
    cost more than the work itself. The signature must still be the one validated.
    """
    names = {f.name for f in fields(NetworkInfo)}
    known = NetworkInfo(**{k: v for k, v in info.items() if k in names})
    known = replace(known, input_shape=tuple(known.input_shape))
    try:
        loaded = tf.saved_model.load(str(model_dir))
        function = loaded.signatures[known.signature]
    except Exception as exc:  # noqa: BLE001  TF raises many types here
        raise ContractError(f"the validated SavedModel could not be opened again: {_short(exc)}") from None
    _, kwargs = function.structured_input_signature
    if known.input_key not in kwargs or known.output_key not in function.structured_outputs:
        raise ContractError("the SavedModel on disk no longer matches the one validated")
    return LoadedNetwork(loaded, function, known)
