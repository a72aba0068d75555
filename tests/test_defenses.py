"""The reference suite: every recipe builds, exports a contract-abiding SavedModel, and
records what it did. Tiny scale throughout (one epoch on a few hundred images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluator.engine.datasets import Dataset, draw_targets, load_folder
from evaluator.engine.defenses import RECIPES, BuildContext, BuildResult, default_params
from tests.test_datasets import write_shapes

tf = pytest.importorskip("tensorflow")

SPEC_ORDER = ["control", "pca", "noise", "down50", "down75", "autoencoder", "conv-autoencoder", "mtl",
              "gan-data", "adv-trained"]
TINY = 0.05  # every epoch count becomes 1
# Ops that would let a network reach outside its graph; none of ours may use them.
FORBIDDEN_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "ReadFile", "WriteFile", "MatchingFiles",
                 "ImmutableConst", "DebugIdentity", "Print", "PrintV2"}
# Keras export always adds checkpoint save/restore functions; they are not on the
# serving path, so they are left to the op scanner's own rules.
SAVER_OPS = {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin", "StaticRegexFullMatch"}


def _dataset(name: str, x_train, y_train, x_eval, y_eval, class_names) -> Dataset:
    return Dataset(name, x_train, y_train.astype(np.int64), x_eval, y_eval.astype(np.int64),
                   draw_targets(y_eval, len(class_names), 1), tuple(class_names), tuple(x_train.shape[1:]))


@pytest.fixture(scope="module")
def digits(mnist_small) -> Dataset:
    x_train, y_train, x_eval, y_eval = mnist_small
    return _dataset("digits", x_train[:300], y_train[:300], x_eval[:100], y_eval[:100], [str(i) for i in range(10)])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return load_folder(write_shapes(tmp_path_factory.mktemp("shapes")), name="shapes")


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory):
    """Builds shared between tests of this module: (recipe, dataset name) -> BuildResult."""
    cache: dict[tuple[str, str], BuildResult] = {}
    root = tmp_path_factory.mktemp("builds")

    def build(recipe: str, ds: Dataset) -> BuildResult:
        if (recipe, ds.name) not in cache:
            ctx = BuildContext(ds, root / ds.name / recipe, scale=TINY)
            cache[recipe, ds.name] = RECIPES[recipe].build(ctx)
        return cache[recipe, ds.name]

    return build


def _serve(model_dir: Path):
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return lambda x: next(iter(signature(tf.constant(x)).values())).numpy()


def _graph_ops(model_dir: Path) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((model_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


def test_registry_is_in_spec_order() -> None:
    assert list(RECIPES) == SPEC_ORDER
    assert all(r.name == name for name, r in RECIPES.items())


def test_recipes_fixture_matches_the_code() -> None:
    from evaluator.engine.defenses.record import FIXTURE, fixture_document

    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    # Regenerate with `python -m evaluator.engine.defenses.record` after changing a default.
    assert recorded == json.loads(json.dumps(fixture_document()))
    assert list(recorded["recipes"]) == SPEC_ORDER
    assert list(default_params()) == SPEC_ORDER


def test_parameters_are_checked_and_scaled() -> None:
    recipe = RECIPES["conv-autoencoder"]
    params = recipe.resolve({"epochs": 10}, scale=0.5)
    assert params["epochs"] == 5 and params["ae_epochs"] == 5 and params["batch_size"] == 64
    assert recipe.resolve({}, scale=0.001)["epochs"] == 1
    with pytest.raises(ValueError, match="unknown parameter.*'conv-autoencoder': sigma"):
        recipe.resolve({"sigma": 0.1})


@pytest.mark.parametrize("dataset", ["digits", "shapes"])
@pytest.mark.parametrize("recipe", SPEC_ORDER)
def test_recipe_builds_a_contract_abiding_savedmodel(recipe: str, dataset: str, builds, request) -> None:
    ds: Dataset = request.getfixturevalue(dataset)
    result = builds(recipe, ds)
    assert result.name == recipe and (result.model_dir / "saved_model.pb").exists()
    assert result.params["recipe"] == recipe and result.params["seed"] == 0
    assert result.params["input_shape"] == list(ds.shape) and result.params["num_classes"] == ds.num_classes
    assert result.report["train_seconds"] > 0
    json.dumps(result.params), json.dumps(result.report)  # both are stored as JSON

    logits = _serve(result.model_dir)(ds.x_eval[:7])
    assert logits.shape == (7, ds.num_classes) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))

    ops = _graph_ops(result.model_dir)
    assert not ops & FORBIDDEN_OPS, ops & FORBIDDEN_OPS
    assert "Conv2D" in ops and "MatMul" in ops


def test_pca_keeps_99_percent_of_variance(builds, digits) -> None:
    report = builds("pca", digits).report
    assert report["variance_kept"] >= 0.99
    assert 10 < report["components"] < report["input_dims"]


def test_pca_projection_matches_numpy() -> None:
    from evaluator.engine.defenses.pca import Projection, fit_pca

    x = np.random.default_rng(0).random((200, 8, 8, 1)).astype(np.float32)
    mean, components, kept = fit_pca(x, 0.9)
    assert kept >= 0.9 and components.shape[0] == 64
    flat = x.reshape(200, -1)
    expected = ((flat - mean) @ components @ components.T + mean).reshape(x.shape)
    np.testing.assert_allclose(Projection(mean, components)(x).numpy(), expected, atol=1e-5)


def test_noise_is_random_at_inference_and_grid_is_recorded(builds, digits) -> None:
    result = builds("noise", digits)
    serve = _serve(result.model_dir)
    first, second = serve(digits.x_eval[:20]), serve(digits.x_eval[:20])
    assert result.report["sigma"] in [row["sigma"] for row in result.report["grid"]]
    assert [row["sigma"] for row in result.report["grid"]] == sorted(RECIPES["noise"].defaults["sigma_grid"])
    assert {"clean_acc", "probe_acc"} <= set(result.report["grid"][0])
    assert result.report["probe_source"].startswith("own")
    if result.report["sigma"] > 0:
        assert not np.allclose(first, second)


def test_noise_uses_the_orchestrators_probe(digits, tmp_path: Path) -> None:
    probe = (digits.x_train[:40], digits.y_train[:40])
    ctx = BuildContext(digits, tmp_path / "noise", scale=TINY, probe=probe, params={"sigma_grid": [0.3]})
    result = RECIPES["noise"].build(ctx)
    assert result.report["probe_source"].startswith("orchestrator") and result.report["probe_size"] == 40
    assert [row["sigma"] for row in result.report["grid"]] == [0.0, 0.3]  # σ = 0 is always the baseline


@pytest.fixture(scope="module")
def noise_twins(digits, tmp_path_factory: pytest.TempPathFactory) -> list[BuildResult]:
    """Two tiny noise references built with the same seed (σ fixed at 0.3)."""
    root = tmp_path_factory.mktemp("noise-twins")
    return [RECIPES["noise"].build(BuildContext(digits, root / str(i), scale=TINY, seed=3,
                                                params={"sigma": 0.3, "sigma_grid": [0.3]}))
            for i in range(2)]


def test_noise_output_varies_between_calls(noise_twins, digits) -> None:
    result = noise_twins[0]
    assert result.report["sigma"] == 0.3 and result.params["sigma"] == 0.3
    serve = _serve(result.model_dir)
    first, second = serve(digits.x_eval[:20]), serve(digits.x_eval[:20])
    assert np.all(np.isfinite(first)) and not np.allclose(first, second)


def _random_nodes(model_dir: Path) -> list:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((model_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    random_ops = ("Random", "Rng", "StatelessRandom", "StatelessTruncated", "StatefulStandard",
                  "StatefulUniform", "StatefulTruncated", "TruncatedNormal", "Multinomial")
    return [n for n in nodes if any(name in n.op for name in random_ops)]


def test_noise_inference_op_is_unseeded_and_allowed(noise_twins) -> None:
    """Issue 16: no seed in the exported graph (seed = seed2 = 0 means "seed from the OS"),
    though the build ran under a global seed; and the op scan still accepts the model."""
    from evaluator.engine.opscan import ALLOWED_OPS, scan_saved_model

    nodes = _random_nodes(noise_twins[0].model_dir)
    assert nodes and {n.op for n in nodes} == {"RandomStandardNormal"}, [n.op for n in nodes]
    for node in nodes:  # attributes equal to their default (0) are stripped on export
        assert node.attr["seed"].i == 0 and node.attr["seed2"].i == 0, node
    report = scan_saved_model(noise_twins[0].model_dir)
    assert "RandomStandardNormal" in report.ops and report.ops <= ALLOWED_OPS


_SERVE_ONCE = (
    "import sys, numpy as np, tensorflow as tf; "
    "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']; "
    "np.save(sys.argv[3], next(iter(f(tf.constant(np.load(sys.argv[2]))).values())).numpy())"
)


def test_noise_differs_between_processes(noise_twins, digits, tmp_path: Path) -> None:
    """Two processes that load the same SavedModel and feed the same images draw different
    noise (a fixed seed in the graph made them agree to the last bit)."""
    import os
    import subprocess
    import sys

    model_dir = noise_twins[0].model_dir
    x = tmp_path / "x.npy"
    np.save(x, digits.x_eval[:20])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    outputs = []
    for i in range(2):
        out = tmp_path / f"out{i}.npy"
        done = subprocess.run([sys.executable, "-c", _SERVE_ONCE, str(model_dir), str(x), str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(np.load(out))
    a, b = outputs
    assert a.shape == (20, digits.num_classes) and np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    assert not np.allclose(a, b)
    # Same input, σ = 0.3: the noise moves the logits but the network still agrees with
    # itself on most images, so the difference is noise, not a broken model.
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.5


def test_noise_training_with_the_same_seed_gives_the_same_weights(noise_twins) -> None:
    """Fixed seeds stay where they belong: training and the σ grid are reproducible."""
    first, second = ([v.numpy() for v in tf.saved_model.load(str(r.model_dir)).variables] for r in noise_twins)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert noise_twins[0].report["grid"] == noise_twins[1].report["grid"]
    assert noise_twins[0].report["final_loss"] == noise_twins[1].report["final_loss"]


def test_choose_sigma_rule() -> None:
    from evaluator.engine.defenses.noise import choose_sigma

    rows = [
        {"sigma": 0.0, "clean_acc": 0.95, "probe_acc": 0.10},
        {"sigma": 0.1, "clean_acc": 0.94, "probe_acc": 0.30},
        {"sigma": 0.2, "clean_acc": 0.92, "probe_acc": 0.30},
        {"sigma": 0.3, "clean_acc": 0.85, "probe_acc": 0.60},  # too costly on clean images
    ]
    assert choose_sigma(rows, 0.05) == 0.1  # best probe within the budget, ties -> smaller σ
    assert choose_sigma(rows, 0.2) == 0.3


def test_downsampling_sizes(builds, digits, shapes) -> None:
    assert builds("down50", digits).report["low_resolution"] == [14, 14]
    assert builds("down75", digits).report["low_resolution"] == [7, 7]
    assert builds("down75", shapes).report["low_resolution"] == [8, 8]


def test_gan_reports_real_accuracy(builds, digits) -> None:
    report = builds("gan-data", digits).report
    assert 0.0 <= report["real_accuracy"] <= 1.0 and "generated_accuracy" in report


def test_progress_is_reported_and_monotone(digits, tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    RECIPES["down50"].build(BuildContext(digits, tmp_path / "m", scale=TINY, progress=lambda f, m: seen.append((f, m))))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_control_beats_chance_clearly(mnist_small, tmp_path: Path) -> None:
    x_train, y_train, x_eval, y_eval = mnist_small
    ds = _dataset("digits-1k", x_train, y_train, x_eval, y_eval, [str(i) for i in range(10)])
    result = RECIPES["control"].build(BuildContext(ds, tmp_path / "control", params={"epochs": 3}))
    accuracy = np.mean(_serve(result.model_dir)(x_eval).argmax(axis=1) == y_eval)
    assert accuracy > 0.7, accuracy


def _variables(model_dir: Path) -> list[np.ndarray]:
    return [v.numpy() for v in tf.saved_model.load(str(model_dir)).variables]


def test_builds_are_reproducible(digits, tmp_path: Path) -> None:
    from tensorflow.python.framework import config as tf_config

    runs = [RECIPES["mtl"].build(BuildContext(digits, tmp_path / str(i), scale=TINY, seed=3)) for i in range(2)]
    for a, b in zip(*(_variables(r.model_dir) for r in runs)):
        assert a.tobytes() == b.tobytes()
    a, b = (_serve(r.model_dir)(digits.x_eval[:20]) for r in runs)
    np.testing.assert_array_equal(a, b)
    # Op determinism is process-wide: the build gives it back, or the noise reference's
    # unseeded inference noise would fail in this process afterwards.
    assert not tf_config.is_op_determinism_enabled()


def test_builds_in_two_sandbox_children_are_identical(digits, tmp_path: Path) -> None:
    """Issue 12: the build job (engine.jobs.build_reference, pinned thread pools and op
    determinism) run twice in two fresh sandboxed children gives the same bytes."""
    from evaluator.engine import isolation
    from evaluator.engine.datasets import save_dataset
    from evaluator.engine.sandbox import SandboxLimits, run_in_sandbox

    data = tmp_path / "dataset.npz"
    save_dataset(digits, data)
    limits = SandboxLimits(timeout_s=600, isolation=isolation.bwrap_problem() == "")
    results = []
    for i in range(2):
        workdir = tmp_path / f"job{i}"
        r = run_in_sandbox(
            "evaluator.engine.jobs:build_reference",
            {"recipe": "adv-trained", "dataset": isolation.input_path("dataset.npz"),
             "out_dir": isolation.OUTPUTS, "seed": 5, "scale": TINY},
            workdir=workdir, limits=limits, inputs={"dataset.npz": data},
            env={"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert r.ok, (r.message, r.log[-2000:])
        assert r.value["report"]["runtime"] == {"threads_pinned": True, "inter_op_threads": 1, "intra_op_threads": 1}
        results.append((workdir / r.value["model_dir"], r.value))
    (first, a), (second, b) = results
    assert a["params"] == b["params"] and a["report"]["final_loss"] == b["report"]["final_loss"]
    va, vb = _variables(first), _variables(second)
    assert len(va) == len(vb) > 0
    for x, y in zip(va, vb):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    np.testing.assert_array_equal(_serve(first)(digits.x_eval), _serve(second)(digits.x_eval))
