"""Another benchmark: a tiny colour image tree imported with `import_benchmark`, then a
mini ladder built on it with the same recipes adapted to its shape and channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from evaluator.services import storage
from leaderboard.models import Benchmark, Network

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}


def write_colour_tree(root: Path, per_class: int = 40, size: int = 40) -> Path:
    """Noisy squares of three colours at random places, 40x40 PNGs (resized to 32x32)."""
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            x, y = rng.integers(0, size - 16, 2)
            img[y:y + 16, x:x + 16] = np.clip(np.array(rgb) + rng.integers(-20, 20, 3), 0, 255)
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.django_db
def test_import_rejects_bad_input_with_reason(tmp_path) -> None:
    (tmp_path / "only").mkdir()
    with pytest.raises(CommandError, match="at least 2"):
        call_command("import_benchmark", "bad", "--folder", str(tmp_path))
    with pytest.raises(CommandError, match="HxW|height x width"):
        call_command("import_benchmark", "bad", "--folder", str(tmp_path), "--size", "big")
    assert not Benchmark.objects.filter(name="bad").exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_colour_folder_benchmark_builds_a_mini_ladder(tmp_path) -> None:
    tree = write_colour_tree(tmp_path / "colours")
    call_command("import_benchmark", "colours", "--folder", str(tree), "--size", "32x32")
    bench = Benchmark.objects.get(name="colours")
    assert (bench.height, bench.width, bench.channels, bench.num_classes) == (32, 32, 3, 3)
    assert bench.class_names == ["blue", "green", "red"]
    # Colour images get the usual colour budget, not MNIST's 0.3.
    assert bench.epsilon == pytest.approx(8 / 255)
    call_command("build_benchmark", "colours", "--recipes", "control,down50,adv-trained", "--scale", "0.2")
    bench.refresh_from_db()
    refs = Network.objects.filter(benchmark=bench, is_reference=True)
    assert bench.state == Benchmark.State.READY
    assert sorted(bench.ladder) == sorted(refs.values_list("pk", flat=True))
    assert all(n.status == Network.Status.RANKED and n.level is not None for n in refs)
    for net in refs:
        assert net.info["input_shape"] == [32, 32, 3]
        adv = np.load(storage.media_path(net.adversarial.file))["adversarial"]
        assert adv.shape[1:] == (32, 32, 3)
    # Clean accuracy far above chance: the recipes adapted to 3 channels and 32x32.
    assert max(n.clean_accuracy for n in refs) > 0.6
