"""`manage.py import_benchmark NAME --folder PATH | --npz PATH [--size HxW]`."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from evaluator.engine import builtins, datasets
from evaluator.services.benchmarks import benchmark_store_dataset
from leaderboard.management.database import require_migrated
from leaderboard.models import Benchmark


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise CommandError(f"--size must look like 32x32 (height x width), got {text!r}")
    return int(match.group(1)), int(match.group(2))


class Command(BaseCommand):
    help = "Register another benchmark from a class-per-folder image tree or an .npz."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--folder", type=Path)
        source.add_argument("--npz", type=Path)
        parser.add_argument("--size", default=None, help="resize images to HxW (folder import)")
        parser.add_argument("--channels", type=int, choices=[1, 3], default=None)
        parser.add_argument("--eval-fraction", type=float, default=0.4)
        parser.add_argument("--epsilon", type=float, default=None,
                            help="L-inf budget of the gradient attack (default 0.3 grey, 8/255 colour)")
        parser.add_argument("--step", type=float, default=None)
        parser.add_argument("--steps", type=int, default=40)
        parser.add_argument("--xi", type=float, default=None, help="universal perturbation L-inf budget")
        parser.add_argument("--title", default="")

    def handle(self, *args, name: str, folder: Path | None, npz: Path | None, size: str | None,
               channels: int | None, eval_fraction: float, epsilon: float | None, step: float | None,
               steps: int, xi: float | None, title: str, **options) -> None:
        require_migrated()
        slug = slugify(name)
        if slug != name:
            raise CommandError(f"benchmark names are slugs (letters, digits, '-'): try {slug!r}")
        if name in builtins.BUILTINS:
            raise CommandError(f"{name!r} is a built-in benchmark: build it with "
                               f"`python manage.py build_benchmark {name}`")
        if Benchmark.objects.filter(name=name).exists():
            raise CommandError(f"benchmark {name!r} exists already")
        try:
            if folder is not None:
                ds = datasets.load_folder(folder, name=name, size=parse_size(size), channels=channels,
                                          eval_fraction=eval_fraction)
            else:
                ds = datasets.load_npz(npz, name=name, eval_fraction=eval_fraction)
        except datasets.DatasetError as exc:
            raise CommandError(str(exc)) from exc
        colour = ds.shape[2] == 3
        # The Madry MNIST budget is far too large for natural colour images; 8/255 is
        # the usual CIFAR/ImageNet budget.
        eps = epsilon if epsilon is not None else (8 / 255 if colour else 0.3)
        bench = Benchmark.objects.create(
            name=name,
            title=title or name,
            source="folder" if folder is not None else "npz",
            epsilon=eps,
            step=step if step is not None else eps / 16,
            steps=steps,
            universal_xi=xi if xi is not None else eps,
        )
        benchmark_store_dataset(benchmark=bench, dataset=ds)
        h, w, c = ds.shape
        self.stdout.write(
            f"imported {name}: {len(ds.y_train)} train / {len(ds.y_eval)} eval images, "
            f"{h}x{w}x{c}, {ds.num_classes} classes; epsilon {eps:.4g}, {steps} steps.\n"
            f"Next: python manage.py build_benchmark {name}"
        )
