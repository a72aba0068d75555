"""`manage.py analyse_benchmark [NAME]`: detection and vector space of every adversarial set.

A build runs this at its end; the command backfills a benchmark built before issue 15
(or after a failed analysis). Idempotent: sets whose stored analysis is current are
skipped, so a second run starts no job.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.services.analysis import benchmark_analyse
from leaderboard.models import Benchmark


class Command(BaseCommand):
    help = ("Compute what is missing of the detection (GAN discriminator against a Mahalanobis baseline) and "
            "vector-space analysis of every adversarial set of a built benchmark.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default="mnist-5k")

    def handle(self, *args, name: str, **options) -> None:
        bench = Benchmark.objects.filter(name=name).first()
        if bench is None:
            raise CommandError(f"no benchmark {name!r}")
        outcome = benchmark_analyse(benchmark=bench, report=self.stdout.write)
        if outcome.problem:
            raise CommandError(f"benchmark {name!r} cannot be analysed yet: {outcome.problem}; "
                               f"run `python manage.py build_benchmark {name}` first")
        if outcome.errors:
            raise CommandError("analysis failed: " + "; ".join(outcome.errors))
        self.stdout.write(self.style.SUCCESS(
            f"analysis of {name}: {outcome.analysed} set(s) analysed, {outcome.current} already current"
            + ("" if outcome.discriminator else " (baseline detector only: no discriminator kept)")))
