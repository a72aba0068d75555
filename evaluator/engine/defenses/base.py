"""What every reference recipe shares: build context/result, parameters, the control
architecture, the training loop, evaluation and SavedModel export.

A recipe only says what is special about its defense (a preprocessing layer, an extra
training stage, a perturbation of the training batches); everything else goes through
this module, so the ten references differ only where the charter says they differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evaluator.engine.datasets import Dataset

Progress = Callable[[float, str], None]
Params = dict[str, Any]
LossFn = Callable[[keras.Model, tf.Tensor, tf.Tensor], tf.Tensor]
BatchFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

# The control architecture and its training schedule: every recipe that ends in "then the
# control architecture" starts from these, so the rungs differ only by their defense.
CONTROL_DEFAULTS: Params = {
    "conv_filters": [32, 64],
    "dense_units": 128,
    "epochs": 12,
    "batch_size": 64,
    "learning_rate": 1e-3,
}
# The classifier's backbone (issue 15: the reference suite asked of a second
# architecture). The CNN is the default and none of these keys is recorded unless a
# benchmark overrides one (engine.builtins: mnist-5k-mlp), so mnist-5k's recorded
# parameters and fixtures/mnist-5k/recipes.json are what they were before.
BACKBONES = ("cnn", "mlp")
BACKBONE_DEFAULTS: Params = {"backbone": "cnn", "mlp_units": [256]}


# Fixed thread pools for a reference build (issue 12: rebuilds must match to the digit).
# Eigen splits a multi-threaded reduction or matrix product by the size of its pool, and
# the order of float additions follows the split, so the pool sizes are part of the
# recipe; one inter-op thread also fixes the order in which independent ops update state.
BUILD_INTER_OP_THREADS = 1
BUILD_INTRA_OP_THREADS = 1


def deterministic_runtime(
    inter_op: int = BUILD_INTER_OP_THREADS, intra_op: int = BUILD_INTRA_OP_THREADS
) -> dict[str, Any]:
    """Pin TensorFlow's thread pools for a reproducible build; returns what was applied.

    Pools can only be sized before TensorFlow runs its first op, which holds in a fresh
    sandbox child (engine.jobs.build_reference calls this first). Where the runtime has
    started already (a build inside a test process) the pools stay as they are and the
    answer says so; op determinism (Recipe.build) still applies.
    """
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError:
        return {"threads_pinned": False}
    return {"threads_pinned": True, "inter_op_threads": inter_op, "intra_op_threads": intra_op}


@contextmanager
def op_determinism() -> Iterator[None]:
    """TensorFlow's op determinism for the duration of a build, restored afterwards.

    Restored because it is process-wide and refuses unseeded random ops: the noise
    reference's inference noise is deliberately unseeded (drawn fresh from the OS), so a
    process that builds a reference and then runs one (tests, bench scripts) must not
    keep it. No recipe runs that op while it trains: it is only traced for the export.
    """
    from tensorflow.python.framework import config as tf_config  # is/disable: not public API

    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()


@dataclass
class BuildContext:
    dataset: Dataset
    out_dir: Path  # the SavedModel is exported here
    seed: int = 0
    scale: float = 1.0  # multiplies epochs (tests use a tiny scale)
    params: Params = field(default_factory=dict)  # overrides of the recipe's defaults
    progress: Progress | None = None
    # Adversarial images of the control network and their labels, from the orchestrator;
    # only the noise recipe's grid search uses them (it makes its own when absent).
    probe: tuple[np.ndarray, np.ndarray] | None = None

    def report_progress(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)

    def stage(self, start: float, end: float) -> Progress:
        """A progress callback for one stage, mapped onto [start, end] of the whole build."""
        return lambda f, msg: self.report_progress(start + (end - start) * f, msg)

    def extra_path(self, name: str) -> Path:
        """Where a recipe keeps a by-product that is not part of the exported model (the
        GAN's discriminator, issue 15): a sibling of the export, `<out_dir>-<name>`, so
        the model folder (which becomes the reference's archive) holds only the model."""
        out = Path(self.out_dir)
        return out.with_name(f"{out.name}-{name}")


@dataclass
class BuildResult:
    name: str
    model_dir: Path
    params: Params  # everything needed to rebuild it: seed, scale, effective parameters
    report: dict[str, Any]  # what the build measured (train seconds, recipe-specific rows)


TrainFn = Callable[[BuildContext, Params], tuple[keras.Model, dict[str, Any]]]


@dataclass(frozen=True)
class Recipe:
    """One reference defense: its defaults and a function training the inference model.

    `train(ctx, params)` returns a Keras model mapping [n, H, W, C] in [0, 1] to logits,
    plus a report; `build` adds seeding, parameter checks, timing and export.
    """

    name: str
    summary: str
    defaults: Mapping[str, Any]
    train: TrainFn

    def resolve(self, overrides: Mapping[str, Any], scale: float = 1.0) -> Params:
        """Defaults + overrides, epoch counts scaled; unknown names are refused."""
        unknown = sorted(set(overrides) - set(self.defaults) - set(BACKBONE_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) for recipe '{self.name}': {', '.join(unknown)}; "
                f"known: {', '.join(sorted({*self.defaults, *BACKBONE_DEFAULTS}))}"
            )
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        params = {**self.defaults, **overrides}
        if set(overrides) & set(BACKBONE_DEFAULTS):
            params = {**self.defaults, **BACKBONE_DEFAULTS, **overrides}
            if params["backbone"] not in BACKBONES:
                raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {params['backbone']!r}")
            if params["backbone"] == "mlp":
                params.pop("conv_filters", None)  # unused: not recorded as if it shaped the network
        for key, value in params.items():
            if key == "epochs" or key.endswith("_epochs"):
                params[key] = max(1, int(round(value * scale)))
        return params

    def build(self, ctx: BuildContext) -> BuildResult:
        params = self.resolve(ctx.params, ctx.scale)
        # Seeds fix what is drawn (python, numpy and TF: initial weights, shuffles,
        # augmentation); op determinism fixes how it is summed. Both are needed for two
        # builds to give the same weights bit for bit.
        keras.utils.set_random_seed(ctx.seed)
        ctx.report_progress(0.0, f"{self.name}: training")
        started = time.perf_counter()
        with op_determinism():
            model, report = self.train(ctx, params)
            train_seconds = time.perf_counter() - started
            ctx.report_progress(0.97, f"{self.name}: exporting")
            export(model, ctx.out_dir)
        ctx.report_progress(1.0, f"{self.name}: done")
        ds = ctx.dataset
        recorded = {
            "recipe": self.name,
            "dataset": ds.name,
            "input_shape": list(ds.shape),
            "num_classes": ds.num_classes,
            "seed": ctx.seed,
            "scale": ctx.scale,
            **params,
        }
        return BuildResult(self.name, Path(ctx.out_dir), recorded, {**report, "train_seconds": round(train_seconds, 2)})


# --------------------------------------------------------------------------- architecture


def conv_blocks(shape: tuple[int, int, int], filters: list[int]) -> list[keras.layers.Layer]:
    """Conv + max-pool blocks; extra blocks (repeating the last width) until the side is
    at most 8, so large imported images do not blow up the dense layer."""
    layers: list[keras.layers.Layer] = []
    side = min(shape[0], shape[1])
    widths = list(filters)
    while side // (2 ** len(widths)) > 8:
        widths.append(widths[-1])
    for width in widths:
        layers += [keras.layers.Conv2D(width, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    return layers


def trunk(shape: tuple[int, int, int], p: Params) -> list[keras.layers.Layer]:
    """The control architecture up to its last hidden layer (`dense_units` features).

    CNN (default): conv blocks, flatten, dense. MLP (p["backbone"] == "mlp"): flatten,
    dense layers of `mlp_units`, dense. The CNN's layers are created in the same order
    as before the backbone option existed, so a seeded build gives the same weights.
    """
    if p.get("backbone", "cnn") == "mlp":
        hidden = [keras.layers.Dense(units, activation="relu") for units in p["mlp_units"]]
        return [keras.layers.Flatten(), *hidden, keras.layers.Dense(p["dense_units"], activation="relu")]
    return [
        *conv_blocks(shape, p["conv_filters"]),
        keras.layers.Flatten(),
        keras.layers.Dense(p["dense_units"], activation="relu"),
    ]


def control_body(shape: tuple[int, int, int], num_classes: int, p: Params) -> list[keras.layers.Layer]:
    """The control classifier (SPEC §3 #1) as a list of layers to put after any preprocessing."""
    return [*trunk(shape, p), keras.layers.Dense(num_classes)]  # logits


def classifier(ds: Dataset, p: Params, preprocess: list[keras.layers.Layer] = (), name: str = "classifier") -> keras.Model:
    """Input -> preprocessing defense (if any) -> control architecture -> logits."""
    inputs = keras.Input(shape=ds.shape, name="images")
    h = inputs
    for layer in [*preprocess, *control_body(ds.shape, ds.num_classes, p)]:
        h = layer(h)
    return keras.Model(inputs, h, name=name)


# --------------------------------------------------------------------------- training


def sparse_ce(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    logits = model(x, training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled minibatch indices for one epoch."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    loss: LossFn = sparse_ce,
    transform: BatchFn | None = None,
    progress: Progress | None = None,
    label: str = "training",
    before_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """The one training loop: Adam on `loss`, minibatches shuffled with `seed`.

    `transform(x, y)` runs on each batch before the gradient tape (noise augmentation,
    adversarial examples, generated images): the batch's construction is never
    differentiated through. `before_epoch(epoch)` may change state the step reads through
    tf.Variables (a schedule) without retracing. Returns the mean loss per epoch.
    """
    optimizer = keras.optimizers.Adam(learning_rate)
    variables = model.trainable_variables

    # A batch dimension of None: the last, smaller batch does not retrace the step.
    @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], x.dtype), tf.TensorSpec([None, *y.shape[1:]], y.dtype)])
    def step(xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        if transform is not None:
            xb, yb = transform(xb, yb)
            xb = tf.stop_gradient(xb)
        with tf.GradientTape() as tape:
            value = loss(model, xb, yb)
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
        return value

    rng = np.random.default_rng(seed)
    history: list[float] = []
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        total, count = 0.0, 0
        for idx in batches(len(x), batch_size, rng):
            total += float(step(tf.constant(x[idx]), tf.constant(y[idx]))) * len(idx)
            count += len(idx)
        history.append(total / count)
        if progress is not None:
            progress((epoch + 1) / epochs, f"{label}: epoch {epoch + 1}/{epochs}, loss {history[-1]:.4f}")
    return history


def fit_classifier(
    ctx: BuildContext,
    model: keras.Model,
    p: Params,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    loss: LossFn = sparse_ce,
    transform: BatchFn | None = None,
    progress: Progress | None = None,
    evaluate: keras.Model | None = None,
) -> dict[str, Any]:
    """Train with the control schedule (default: on the train split) and report the
    final loss and train accuracy of `evaluate` (default: the trained model itself)."""
    x = ctx.dataset.x_train if x is None else x
    y = ctx.dataset.y_train if y is None else y
    history = fit(
        model, x, y, epochs=p["epochs"], batch_size=p["batch_size"], learning_rate=p["learning_rate"],
        seed=ctx.seed, loss=loss, transform=transform, progress=progress or ctx.stage(0.0, 0.95),
    )
    return {"final_loss": round(history[-1], 5), "train_accuracy": round(accuracy(evaluate or model, x, y), 4)}


# --------------------------------------------------------------------------- evaluation


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits in batches (model(x) directly: keras predict's per-call setup is slow)."""
    return np.concatenate([np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)])


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict(model, x), axis=1) == y))


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): a validation slice of the train split, so that
    choices like the noise level never look at the eval split."""
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(order[k:]), np.sort(order[:k])


def export(model: keras.Model, out_dir: Path) -> None:
    """SavedModel with a `serving_default` signature: float32 [None, H, W, C] -> logits."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(out_dir), format="tf_saved_model", verbose=False)
