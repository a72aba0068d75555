"""`manage.py run`: the whole service on one machine.

Migrates, starts one Celery worker beside the web server, builds the default
benchmark on first start (progress printed), and serves pages, API and static files
with waitress. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from leaderboard.models import Benchmark


class Command(BaseCommand):
    help = "Run web server + worker on the embedded default (and build the benchmark once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.getenv("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.getenv("PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true", help="web server only")
        parser.add_argument("--no-build", action="store_true", help="do not build the benchmark")
        parser.add_argument("--threads", type=int, default=8)

    def spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *args], cwd=settings.BASE_DIR)

    def announce_isolation(self) -> None:
        """Say loudly how uploads will be run (evaluator.checks says it again to the log)."""
        from evaluator.services.sandboxing import isolation_problem

        if not settings.SANDBOX_ISOLATION:
            self.stderr.write(self.style.ERROR(
                "!!! SANDBOX_ISOLATION=off: uploaded models run WITHOUT bubblewrap. Development only. !!!"))
        elif problem := isolation_problem():
            self.stderr.write(self.style.ERROR(
                f"evaluation sandbox unavailable: {problem}. Uploads will wait until bubblewrap can run "
                "(apt-get install bubblewrap); the reference suite is built without it."))
        else:
            self.stdout.write("evaluation sandbox: bubblewrap (uid 65534, no network, own namespaces)")

    def handle(self, *args, host: str, port: int, no_worker: bool, no_build: bool, threads: int, **options) -> None:
        from waitress import serve

        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.announce_isolation()
        children: list[subprocess.Popen] = []
        if not no_worker:
            children.append(self.spawn(
                "-m", "celery", "-A", "leaderboard", "worker", "--loglevel", "INFO",
                "--concurrency", "1", "--pool", "prefork", "-n", "worker@%h",
            ))
        bench = Benchmark.objects.filter(name=settings.DEFAULT_BENCHMARK).first()
        if not no_build and (bench is None or bench.state != Benchmark.State.READY):
            self.stdout.write("building the benchmark (first start; the leaderboard fills as it goes)")
            children.append(self.spawn("manage.py", "build_benchmark", settings.DEFAULT_BENCHMARK))

        def stop(*_args) -> None:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 10
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(f"Robustness Ladder on http://{host}:{port}/  (Ctrl-C to stop)")
        from leaderboard.wsgi import application

        try:
            serve(application, host=host, port=port, threads=threads, ident="robustness-ladder")
        except KeyboardInterrupt:
            pass
        finally:
            stop()
