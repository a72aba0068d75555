"""`manage.py methodology [--benchmark NAME] [--write [--keep-example] | --check]`: docs/METHODOLOGY.md.

Prints (or writes) the methodology: every definition, from the code's constants, and a
worked example computed from the benchmark's stored results. `--check` compares the
definitions of the file with the code's and fails when they differ (the worked example
depends on the database, so it is not compared).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from leaderboard import methodology
from leaderboard.models import Benchmark


class Command(BaseCommand):
    help = "Write or check docs/METHODOLOGY.md (definitions + worked example from the stored results)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--benchmark", default=settings.DEFAULT_BENCHMARK)
        parser.add_argument("--write", action="store_true", help=f"write {methodology.DOC_PATH}")
        parser.add_argument("--check", action="store_true", help="fail when the file's definitions are stale")
        parser.add_argument("--note", default="", help="a paragraph on where the example's results come from")
        parser.add_argument("--keep-example", action="store_true",
                            help="with --write: rewrite the definitions, keep the file's worked example")

    def handle(self, *args, benchmark: str, write: bool, check: bool, note: str, keep_example: bool,
               **options) -> None:
        path = settings.BASE_DIR / methodology.DOC_PATH
        if check:
            current = path.read_text() if path.exists() else ""
            if methodology.static_part(current) != methodology.static_part(methodology.document(benchmark=None)):
                raise CommandError(f"{methodology.DOC_PATH} is stale: run `manage.py methodology --write --keep-example`")
            self.stdout.write(f"{methodology.DOC_PATH} matches the code")
            return
        if keep_example and path.exists() and methodology.EXAMPLE_MARKER in path.read_text():
            example = path.read_text().split(methodology.EXAMPLE_MARKER, 1)[1]
            path.write_text(methodology.static_part(methodology.document(benchmark=None))
                            + methodology.EXAMPLE_MARKER + example)
            self.stdout.write(f"wrote the definitions of {path}, kept its worked example")
            return
        bench = Benchmark.objects.filter(name=benchmark).first()
        if bench is None:
            self.stderr.write(f"no benchmark {benchmark!r}: the worked example is left out")
        text = methodology.document(benchmark=bench, note=note)
        if write:
            path.write_text(text)
            self.stdout.write(f"wrote {path}")
        else:
            self.stdout.write(text)
