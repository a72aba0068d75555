"""`manage.py build_benchmark [NAME] [--rebuild REF]`: dataset, references, attacks, matrix, ladder.

NAME is a built-in benchmark (engine.builtins: mnist-5k, the default, built at first
start; digits-8x8 and mnist-5k-mlp, opt-in, issue 15) or one registered with
import_benchmark.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from evaluator.engine import builtins
from evaluator.engine.suite import REFERENCES as RECIPES
from evaluator.services import benchmarks
from leaderboard import progress_selectors
from leaderboard.management.database import require_migrated
from leaderboard.models import Benchmark, Network

# What evaluator.services.benchmarks reports at each step of a build: "[ 42%] stage".
PROGRESS_LINE = re.compile(r"^\[\s*\d+%\] ")


class Command(BaseCommand):
    help = (
        "Build a benchmark's reference suite and ladder (idempotent: skips what exists). "
        "--rebuild REF retrains that reference and re-measures what depended on it; "
        "rebuilding the control recomputes the universal set and every network's universal accuracy. "
        f"Built-in benchmarks: {', '.join(builtins.BUILTINS)} (the last two opt-in: 8x8 digits from "
        "scikit-learn, and mnist-5k with an MLP backbone)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default=benchmarks.DEFAULT_NAME)
        parser.add_argument("--rebuild", action="append", default=[], choices=list(RECIPES),
                            help="rebuild this reference (repeatable)")
        parser.add_argument("--recipes", default="",
                            help="comma-separated subset of references (with --rebuild: default, those it has)")
        parser.add_argument("--scale", type=float, default=None,
                            help="training size/epochs multiplier (tests use a small one); default 1.0, "
                                 "and for --rebuild the scale the reference was trained at")

    def handle(self, *args, name: str, rebuild: list[str], recipes: str, scale: float | None, **options) -> None:
        require_migrated()
        if name in builtins.BUILTINS:
            bench = benchmarks.benchmark_get_or_create_builtin(name=name)
        else:
            bench = Benchmark.objects.filter(name=name).first()
            if bench is None:
                raise CommandError(f"no benchmark {name!r}: import it with `manage.py import_benchmark` first")
        subset = [r.strip() for r in recipes.split(",") if r.strip()] or None
        unknown = set(subset or []) - set(RECIPES)
        if unknown:
            raise CommandError(f"unknown references: {', '.join(sorted(unknown))}")
        if rebuild and subset is None:
            # A rebuild keeps the suite the benchmark has: without this, rebuilding one
            # reference of a benchmark built with --recipes would train every other recipe.
            have = set(Network.objects.filter(benchmark=bench, is_reference=True).values_list("recipe", flat=True))
            subset = [r for r in RECIPES if r in have | set(rebuild)]
        report = self.reporter(bench)
        try:
            with report.ticking():
                self._build(bench, rebuild, subset, scale, report)
        except benchmarks.BuildError as exc:
            raise CommandError(str(exc)) from exc
        bench.refresh_from_db()
        self.stdout.write(self.style.SUCCESS(f"benchmark {bench.name} ready: ladder of {len(bench.ladder)} references"))

    def _build(self, bench: Benchmark, rebuild: list[str], subset: list[str] | None, scale: float | None,
               report: ConsoleProgress) -> None:
        # The control first: it defines the universal set the others are re-measured on,
        # so rebuilding it after another reference would re-evaluate that one twice.
        for recipe in sorted(dict.fromkeys(rebuild), key=lambda r: r != benchmarks.CONTROL):
            report(f"rebuilding reference {recipe}")
            benchmarks.reference_rebuild(benchmark=bench, recipe=recipe, scale=scale, report=report)
        benchmarks.benchmark_build(benchmark=bench, recipes=subset, scale=1.0 if scale is None else scale,
                                   report=report)

    def reporter(self, bench: Benchmark) -> ConsoleProgress:
        """The build's lines as they come (see ConsoleProgress)."""
        return ConsoleProgress(self, bench)


class ConsoleProgress:
    """Prints the build's lines; each progress line ("[ 42%] stage") also says how many
    references are trained and ranked and the time left, from the same selector as the
    leaderboard's banner and the API. A step can run for minutes (training a
    reference), so while `ticking()` the last progress line is printed again with a
    fresh time left whenever nothing was printed for TICK_S: the console stays as alive
    as the banner."""

    TICK_S = 30.0

    def __init__(self, command: BaseCommand, bench: Benchmark) -> None:
        self.command = command
        # Its own row object: the build thread keeps using (and saving) the one it has.
        self.benchmark_pk = bench.pk
        self.last_progress: str | None = None
        self.printed_at = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        if PROGRESS_LINE.match(line):
            self.last_progress = line
            line = self._with_counts(line)
        self._write(line)

    def tick(self, now: float | None = None) -> bool:
        """Print the last progress line again if the console has been quiet for TICK_S."""
        now = time.monotonic() if now is None else now
        if self.last_progress is None or now - self.printed_at < self.TICK_S:
            return False
        self._write(self._with_counts(self.last_progress), now=now)
        return True

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """A background thread calls tick() while the block runs."""
        stop = threading.Event()

        def run() -> None:
            try:
                while not stop.wait(1.0):
                    try:
                        self.tick()
                    except DatabaseError:
                        pass  # the row is busy being written: the next tick will do
            finally:
                connection.close()  # the thread's own database connection

        thread = threading.Thread(target=run, name="build-console", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _with_counts(self, line: str) -> str:
        return f"{line} · {progress_selectors.build_line(Benchmark.objects.get(pk=self.benchmark_pk))}"

    def _write(self, line: str, now: float | None = None) -> None:
        with self.lock:
            self.command.stdout.write(line)
            self.command.stdout.flush()
            self.printed_at = time.monotonic() if now is None else now
