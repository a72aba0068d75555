"""PNG images for the pages: gallery triples and benchmark samples, cached on disk.

NumPy and Pillow only (the web process never imports TensorFlow). Arrays are read
from the stored benchmark and adversarial .npz files; a rendered PNG is written once
under MEDIA_ROOT/cache/ with a name that changes when its source changes, so a rerun
never shows stale images.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from evaluator.services import storage

PARTS = ("original", "perturbation", "adversarial")
TARGET_SIDE = 112  # small images are scaled up (nearest neighbour) to about this size
GALLERY_SIZE = 12  # a 3 x 4 or 4 x 3 grid: no gap at the widths the page lays out
GALLERY_SEED = 0  # public on purpose: the sample is representative, not secret (it never looks at outcomes)


def scale_for(height: int, width: int) -> int:
    return max(1, TARGET_SIDE // max(height, width, 1))


# --------------------------------------------------------------------------- arrays


def _as_unit(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return np.clip(x.astype(np.float32), 0.0, 1.0)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


@lru_cache(maxsize=4)
def _npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data[key]


def npz_array(path: Path, key: str) -> np.ndarray | None:
    """One array of an .npz (cached per file version); None if the key is absent."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        if key not in data.files:
            return None
    return _npz_array(str(path), key, _mtime(path))


def eval_images(data_file: str) -> np.ndarray:
    x = npz_array(storage.media_path(data_file), "x_eval")
    if x is None:
        raise FileNotFoundError(data_file)
    return x


def eval_targets(data_file: str, adversarial_file: str | None = None) -> np.ndarray | None:
    """Target classes: from the adversarial set when it records them, else the benchmark's."""
    if adversarial_file:
        t = npz_array(storage.media_path(adversarial_file), "targets")
        if t is not None:
            return t.astype(np.int64)
    t = npz_array(storage.media_path(data_file), "targets")
    return None if t is None else t.astype(np.int64)


# --------------------------------------------------------------------------- rendering


def _to_image(x: np.ndarray, scale: int) -> Image.Image:
    """float [H, W, C] in [0, 1] -> a Pillow image, scaled up without smoothing."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    pixels = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if pixels.shape[2] == 1:
        img = Image.fromarray(pixels[..., 0], mode="L")
    elif pixels.shape[2] == 3:
        img = Image.fromarray(pixels, mode="RGB")
    elif pixels.shape[2] == 4:
        img = Image.fromarray(pixels[..., :3], mode="RGB")
    else:  # other channel counts: show the mean
        img = Image.fromarray(pixels.mean(axis=2).astype(np.uint8), mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def perturbation_image(delta: np.ndarray, scale: int) -> tuple[Image.Image, float]:
    """The perturbation amplified to the full colour range; returns (image, gain).

    One channel: a diverging map (blue darker, white unchanged, red brighter).
    Colour: each channel 0.5 + gain * delta (grey means unchanged).
    """
    delta = np.asarray(delta, dtype=np.float32)
    if delta.ndim == 2:
        delta = delta[..., None]
    peak = float(np.abs(delta).max())
    gain = 0.5 / peak if peak > 0 else 1.0
    if delta.shape[2] == 1:
        d = np.clip(delta[..., 0] * 2 * gain, -1.0, 1.0)  # in [-1, 1]
        pos, neg = np.clip(d, 0, 1), np.clip(-d, 0, 1)
        rgb = np.stack([1 - neg * 0.85, 1 - (pos + neg) * 0.8, 1 - pos * 0.85], axis=-1)
        return _to_image(rgb, scale), 2 * gain
    return _to_image(0.5 + gain * delta[..., :3], scale), 2 * gain


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _cache_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)  # atomic: a concurrent reader sees all or nothing


def cached_png(key: str, render) -> bytes:
    """PNG bytes from MEDIA_ROOT/cache/<key>.png, rendering (and storing) on a miss."""
    path = storage.media_path(f"cache/{key}.png")
    if path.is_file():
        return path.read_bytes()
    data = png_bytes(render())
    _cache_write(path, data)
    return data


def gallery_png(*, network, adversarial, index: int, part: str) -> bytes:
    """One gallery image of a network (original, amplified perturbation or adversarial)."""
    bench = network.benchmark
    adv_path = storage.media_path(adversarial.file)
    version = f"{adversarial.pk}-{_mtime(adv_path)}"
    scale = scale_for(bench.height, bench.width)

    def render() -> Image.Image:
        original = _as_unit(eval_images(bench.data_file)[index])
        adv_images = npz_array(adv_path, "adversarial")
        if adv_images is None:
            raise FileNotFoundError(adversarial.file)
        adv_image = _as_unit(adv_images[index])
        if part == "original":
            return _to_image(original, scale)
        if part == "adversarial":
            return _to_image(adv_image, scale)
        return perturbation_image(adv_image - original, scale)[0]

    return cached_png(f"networks/{network.pk}/gallery-{version}-{index}-{part}", render)


@dataclass(frozen=True)
class Sample:
    """The gallery sample of a network's adversarial set: the eval indices the page shows,
    with the arrays they were chosen from."""

    indices: list[int]
    labels: np.ndarray
    predictions: np.ndarray  # the network's predictions on its own adversarial images
    targets: np.ndarray | None
    seed: int = 0

    def hit(self, i: int) -> bool:
        """The attack reached its target class on eval image i."""
        return self.targets is not None and int(self.predictions[i]) == int(self.targets[i])


def gallery_sample(*, benchmark, adversarial) -> Sample | None:
    """The sample the network page shows (None when a file is missing or inconsistent).

    SPEC §2 Secrecy: these few images are all of an adversarial set that is rendered for
    viewers who may not download the set (views/networks.py gallery_image).
    """
    if adversarial is None or not benchmark.data_file:
        return None
    try:
        labels = storage.eval_labels(benchmark.data_file)
        targets = eval_targets(benchmark.data_file, adversarial.file)
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return None
    predictions = adversarial.prediction_array()
    if len(predictions) != len(labels):
        return None
    if targets is not None and len(targets) != len(labels):
        targets = None
    return Sample(gallery_indices(len(labels)), labels, predictions, targets, GALLERY_SEED)


def gallery_indices(n: int, count: int = GALLERY_SIZE, seed: int = GALLERY_SEED) -> list[int]:
    """Which eval images to show: `count` of the n drawn uniformly at random without
    replacement from `seed`, in index order. The draw never looks at the outcomes, so
    the share of successful attacks in the sample is an unbiased estimate of the attack
    success rate (hypergeometric spread), and with the one benchmark-wide seed every
    network's page shows the same eval images, side by side comparable."""
    if n <= 0:
        return []
    chosen = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
    return sorted(int(i) for i in chosen)


def sample_grid_png(*, benchmark, per_class: int = 4) -> bytes:
    """A grid of eval images: one column per class (up to 20 classes), `per_class` rows."""
    path = storage.media_path(benchmark.data_file)
    version = _mtime(path)

    def render() -> Image.Image:
        x = eval_images(benchmark.data_file)
        y = npz_array(path, "y_eval")
        classes = list(range(min(benchmark.num_classes, 20)))
        h, w = x.shape[1], x.shape[2]
        scale = max(1, 56 // max(h, w, 1))
        cell_h, cell_w, gap = h * scale, w * scale, 4
        grid = Image.new("RGB", (len(classes) * (cell_w + gap) + gap, per_class * (cell_h + gap) + gap),
                         (255, 255, 255))
        for col, k in enumerate(classes):
            idx = np.flatnonzero(y == k)[:per_class]
            for row, i in enumerate(idx):
                tile = _to_image(_as_unit(x[i]), scale).convert("RGB")
                grid.paste(tile, (gap + col * (cell_w + gap), gap + row * (cell_h + gap)))
        return grid

    return cached_png(f"benchmarks/{benchmark.name}/samples-{version}-{per_class}", render)


def universal_png(*, benchmark, universal) -> bytes:
    """The universal perturbations side by side, amplified (blue/red as in the gallery)."""
    path = storage.media_path(universal.file)
    version = f"{universal.pk}-{_mtime(path)}"

    def render() -> Image.Image:
        pert = npz_array(path, "perturbations")
        if pert is None:
            raise FileNotFoundError(universal.file)
        h, w = pert.shape[1], pert.shape[2]
        scale = max(1, 84 // max(h, w, 1))
        gap = 4
        tiles = [perturbation_image(p, scale)[0].convert("RGB") for p in pert]
        out = Image.new("RGB", (len(tiles) * (w * scale + gap) + gap, h * scale + 2 * gap), (255, 255, 255))
        frame = ImageDraw.Draw(out)
        for k, tile in enumerate(tiles):
            x = gap + k * (w * scale + gap)
            out.paste(tile, (x, gap))
            frame.rectangle((x - 1, gap - 1, x + w * scale, gap + h * scale), outline=(200, 205, 214))
        return out

    return cached_png(f"benchmarks/{benchmark.name}/universal-{version}", render)
