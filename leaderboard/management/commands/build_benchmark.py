"""`manage.py build_benchmark [NAME]`: dataset, references, attacks, matrix, ladder."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.engine.suite import REFERENCES as RECIPES
from evaluator.services import benchmarks
from leaderboard.models import Benchmark


class Command(BaseCommand):
    help = "Build a benchmark's reference suite and ladder (idempotent: skips what exists)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default=benchmarks.DEFAULT_NAME)
        parser.add_argument("--rebuild", action="append", default=[], choices=list(RECIPES),
                            help="rebuild this reference (repeatable)")
        parser.add_argument("--recipes", default="", help="comma-separated subset of references")
        parser.add_argument("--scale", type=float, default=1.0,
                            help="training size/epochs multiplier (tests use a small one)")

    def handle(self, *args, name: str, rebuild: list[str], recipes: str, scale: float, **options) -> None:
        if name == benchmarks.DEFAULT_NAME:
            bench = benchmarks.benchmark_get_or_create_default()
        else:
            bench = Benchmark.objects.filter(name=name).first()
            if bench is None:
                raise CommandError(f"no benchmark {name!r}: import it with `manage.py import_benchmark` first")
        subset = [r.strip() for r in recipes.split(",") if r.strip()] or None
        unknown = set(subset or []) - set(RECIPES)
        if unknown:
            raise CommandError(f"unknown references: {', '.join(sorted(unknown))}")
        try:
            for recipe in rebuild:
                self.stdout.write(f"rebuilding reference {recipe}")
                benchmarks.reference_rebuild(benchmark=bench, recipe=recipe, scale=scale, report=self.stdout.write)
            bench = benchmarks.benchmark_build(benchmark=bench, recipes=subset, scale=scale, report=self.stdout.write)
        except benchmarks.BuildError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"benchmark {bench.name} ready: ladder of {len(bench.ladder)} references"))
