"""`manage.py benchmark_report [NAME] [--output docs/BENCHMARK.md]`.

docs/BENCHMARK.md is regenerated with
`python manage.py benchmark_report mnist-5k --output docs/BENCHMARK.md` after a full
`build_benchmark mnist-5k`; the report names the date, machine and commit it came from.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.services.report import benchmark_markdown
from leaderboard.models import Benchmark


class Command(BaseCommand):
    help = "Write the charter-style report of a benchmark from its stored results."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default="mnist-5k")
        parser.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")

    def handle(self, *args, name: str, output: Path | None, **options) -> None:
        bench = Benchmark.objects.filter(name=name).first()
        if bench is None or not bench.ladder:
            raise CommandError(f"benchmark {name!r} has no ladder yet: run build_benchmark {name}")
        if bench.state != Benchmark.State.READY:
            # Mid-build or after a failed rebuild some numbers are missing or being replaced.
            raise CommandError(f"benchmark {name!r} is {bench.state} ({bench.stage}): "
                               f"finish `build_benchmark {name}` first")
        text = benchmark_markdown(benchmark=bench)
        if output is None:
            self.stdout.write(text)
        else:
            output.write_text(text)
            self.stdout.write(f"wrote {output}")
