"""Benchmarks: mnist-5k split and targets, .npz and folder import, compact storage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluator.engine.datasets import (
    DatasetError,
    draw_targets,
    load_dataset,
    load_folder,
    load_mnist5k,
    load_npz,
    save_dataset,
    stratified_split,
    with_targets,
)

SHAPE_CLASSES = ("circle", "square", "triangle")  # sorted: folder import sorts class names


def write_shapes(root: Path, per_class: int = 30, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """A tiny colour benchmark: red circles, green squares, blue triangles on noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    colours = {"circle": (230, 40, 40), "square": (40, 200, 40), "triangle": (40, 60, 230)}
    w, h = size
    for name in SHAPE_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            background = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
            img = Image.fromarray(background, "RGB")
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(min(w, h) // 5, min(w, h) // 3))
            cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
            if name == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colours[name])
            elif name == "square":
                draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colours[name])
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colours[name])
            img.save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def mnist5k():
    return load_mnist5k()


# --------------------------------------------------------------------------- mnist-5k


def test_mnist5k_split_sizes_and_stratification(mnist5k) -> None:
    ds = mnist5k
    assert (ds.name, ds.shape, ds.num_classes) == ("mnist-5k", (28, 28, 1), 10)
    assert ds.x_train.shape == (3000, 28, 28, 1) and ds.x_eval.shape == (2000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [300] * 10
    assert np.bincount(ds.y_eval).tolist() == [200] * 10
    assert ds.class_names == tuple("0123456789")


def test_mnist5k_is_deterministic_and_targets_are_fixed(mnist5k) -> None:
    again = load_mnist5k()
    assert np.array_equal(again.x_train, mnist5k.x_train) and np.array_equal(again.y_eval, mnist5k.y_eval)
    assert np.array_equal(again.targets, mnist5k.targets)
    assert not np.any(mnist5k.targets == mnist5k.y_eval)
    # Pinned: every stored adversarial set depends on these; a change must be deliberate.
    assert mnist5k.targets[:10].tolist() == [5, 5, 7, 9, 0, 1, 8, 8, 3, 2]
    assert mnist5k.y_eval[:10].tolist() == [3, 4, 5, 7, 5, 8, 0, 9, 2, 9]


def test_train_and_eval_do_not_overlap(mnist5k) -> None:
    train = {x.tobytes() for x in mnist5k.x_train}
    assert sum(x.tobytes() in train for x in mnist5k.x_eval) < 5  # MNIST has a few exact duplicates


def test_datasets_module_does_not_import_tensorflow() -> None:
    code = "import sys, evaluator.engine.datasets as d; d.load_mnist5k(); assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_stratified_split_exact_quotas_for_unbalanced_classes() -> None:
    y = np.repeat([0, 1, 2], [50, 30, 20])
    train, evaluation = stratified_split(y, 60, seed=3)
    assert len(train) == 60 and len(evaluation) == 40
    assert np.bincount(y[train]).tolist() == [30, 18, 12]
    assert sorted(np.concatenate([train, evaluation]).tolist()) == list(range(100))
    assert np.array_equal(stratified_split(y, 60, seed=3)[0], train)


def test_draw_targets_uniform_over_other_classes() -> None:
    y = np.zeros(6000, dtype=np.int64)
    t = draw_targets(y, 4, seed=0)
    assert not np.any(t == y)
    counts = np.bincount(t, minlength=4)
    assert counts[0] == 0 and all(1800 < c < 2200 for c in counts[1:])
    with pytest.raises(DatasetError, match="at least 2 classes"):
        draw_targets(y, 1, seed=0)


def test_with_targets_redraws_only_the_targets(mnist5k) -> None:
    """A deployment's secret seed replaces the public placeholder targets (issue 12)."""
    first, again, other = (with_targets(mnist5k, seed) for seed in (2**62 + 5, 2**62 + 5, 77))
    np.testing.assert_array_equal(first.targets, again.targets)  # a rebuild draws the same
    assert np.mean(first.targets == other.targets) < 0.2  # another seed, other targets
    assert np.mean(first.targets == mnist5k.targets) < 0.2
    for ds in (first, other):
        assert not np.any(ds.targets == ds.y_eval)
        assert ds.x_eval is mnist5k.x_eval and ds.y_eval is mnist5k.y_eval  # the public split stays


# --------------------------------------------------------------------------- .npz import


def _digits(n: int = 120, side: int = 12, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, side, side), dtype=np.uint8), np.arange(n) % classes


def test_npz_uint8_greyscale_is_split_and_scaled(tmp_path: Path) -> None:
    x, y = _digits()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_npz(tmp_path / "d.npz", name="digits", eval_fraction=0.25)
    assert ds.shape == (12, 12, 1) and ds.num_classes == 3
    assert len(ds.x_train) == 90 and len(ds.x_eval) == 30
    assert np.bincount(ds.y_eval).tolist() == [10, 10, 10]
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0
    assert not np.any(ds.targets == ds.y_eval)


def test_npz_float_images_labels_with_class_names(tmp_path: Path) -> None:
    x, y = _digits()
    rgb = np.repeat(x[..., None], 3, axis=-1).astype(np.float64) / 255.0
    np.savez(tmp_path / "d.npz", images=rgb, labels=y.astype(np.float32), class_names=np.array(["a", "b", "c"]))
    ds = load_npz(tmp_path / "d.npz", name="rgb")
    assert ds.shape == (12, 12, 3) and ds.class_names == ("a", "b", "c")
    assert len(ds.x_eval) == 48  # eval_fraction 0.4 by default


def test_npz_pre_split_is_kept(tmp_path: Path) -> None:
    x, y = _digits()
    np.savez(tmp_path / "d.npz", x_train=x[:100], y_train=y[:100], x_eval=x[100:], y_eval=y[100:])
    ds = load_npz(tmp_path / "d.npz", name="split")
    assert len(ds.x_train) == 100 and len(ds.x_eval) == 20
    assert np.array_equal(ds.y_eval, y[100:])
    assert np.array_equal(ds.x_eval[..., 0], x[100:].astype(np.float32) / 255)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((10, 12, 12))}, "must hold 'x' and 'y'.*it holds pixels"),
        ({"x": np.full((10, 12, 12), 3.0), "y": np.arange(10) % 2}, r"must lie in \[0, 1\], found 3..3"),
        ({"x": np.zeros((10, 12, 12)), "y": np.arange(9) % 2}, "one per image"),
        ({"x": np.zeros((10, 12, 12, 2)), "y": np.arange(10) % 2}, "1 \\(grey\\) or 3 \\(RGB\\) channels, got 2"),
        ({"x": np.full((10, 12, 12), np.nan), "y": np.arange(10) % 2}, "NaN"),
        ({"x": np.zeros((10, 12, 12)), "y": np.zeros(10)}, "at least 2 classes"),
        ({"x": np.zeros((10, 4, 4)), "y": np.arange(10) % 2}, "at least 8x8"),
        ({"x": np.zeros((10, 12, 12)), "y": np.arange(10) * 0.5}, "whole class numbers"),
        ({"x": np.zeros((10, 12, 12)), "y": -np.ones(10)}, "0..K-1"),
        ({"x": np.zeros(10), "y": np.arange(10) % 2}, r"must be \[n, H, W\]"),
    ],
)
def test_npz_bad_inputs_are_rejected_with_a_clear_message(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        load_npz(tmp_path / "bad.npz", name="bad")


def test_npz_that_is_not_an_npz(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_npz(tmp_path / "junk.npz", name="junk")
    with pytest.raises(ValueError):  # DatasetError is a ValueError for callers that only know that
        load_npz(tmp_path / "junk.npz", name="junk")


# --------------------------------------------------------------------------- folder import


def test_folder_colour_benchmark(tmp_path: Path) -> None:
    ds = load_folder(write_shapes(tmp_path / "shapes"), name="shapes")
    assert ds.shape == (32, 32, 3) and ds.class_names == SHAPE_CLASSES
    assert len(ds.x_train) == 54 and len(ds.x_eval) == 36
    assert np.bincount(ds.y_eval).tolist() == [12, 12, 12]
    red = ds.x_train[ds.y_train == 0][..., 0].max(axis=(1, 2))  # circles are red
    assert np.all(red > 0.85)


def test_folder_resizes_and_converts(tmp_path: Path) -> None:
    root = write_shapes(tmp_path / "shapes", per_class=5, size=(48, 40))
    write_shapes(root, per_class=3, size=(20, 20), seed=1)  # overwrites 3 of each: mixed sizes
    with pytest.raises(DatasetError, match="differ in size.*give a size"):
        load_folder(root, name="mixed")
    ds = load_folder(root, name="small", size=(16, 24), channels=1)
    assert ds.shape == (16, 24, 1) and len(ds.x_train) + len(ds.x_eval) == 15


def test_folder_greyscale_detected(tmp_path: Path) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            Image.fromarray(np.full((10, 10), 40 * i, dtype=np.uint8), "L").save(tmp_path / c / f"{i}.png")
    assert load_folder(tmp_path, name="grey", eval_fraction=0.5).shape == (10, 10, 1)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        load_folder(tmp_path / "missing", name="x")
    (tmp_path / "only").mkdir()
    with pytest.raises(DatasetError, match="at least 2"):
        load_folder(tmp_path, name="x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="'empty' holds no images"):
        load_folder(tmp_path, name="x")
    (tmp_path / "empty" / "broken.png").write_bytes(b"garbage")
    (tmp_path / "only" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read image empty/broken.png"):
        load_folder(tmp_path, name="x")


# --------------------------------------------------------------------------- storage


def test_save_load_roundtrip_is_lossless_and_compact(mnist5k, tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    save_dataset(mnist5k, path)
    with np.load(path) as raw:
        assert raw["x_train"].dtype == np.uint8  # lossless here, so stored as bytes
    back = load_dataset(path)
    assert back.name == "mnist-5k" and back.class_names == mnist5k.class_names
    for key in ("x_train", "y_train", "x_eval", "y_eval", "targets"):
        assert np.array_equal(getattr(back, key), getattr(mnist5k, key)), key
    assert path.stat().st_size < 1_500_000


def test_save_keeps_float_when_uint8_would_lose(tmp_path: Path) -> None:
    x, y = _digits(60)
    np.savez(tmp_path / "d.npz", x=(x / 255.0 * 0.5 + 0.001).astype(np.float32), y=y)
    ds = load_npz(tmp_path / "d.npz", name="soft")
    save_dataset(ds, tmp_path / "stored.npz")
    with np.load(tmp_path / "stored.npz") as raw:
        assert raw["x_train"].dtype == np.float32
    assert np.array_equal(load_dataset(tmp_path / "stored.npz").x_train, ds.x_train)


def test_load_dataset_rejects_a_plain_npz(tmp_path: Path) -> None:
    x, y = _digits()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DatasetError, match="not a stored benchmark: missing x_train"):
        load_dataset(tmp_path / "d.npz")
