"""What every benchmark-scoped page starts from: which benchmark was asked for, whether
it is still being built, and the query suffix that keeps links on it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from leaderboard import progress_selectors, selectors
from leaderboard.models import Benchmark


def benchmark_or_none(request: HttpRequest) -> tuple[Benchmark | None, str]:
    """The requested benchmark (default settings.DEFAULT_BENCHMARK), None if absent.

    An explicitly named benchmark that does not exist is a 404; the default one not
    existing yet means the service is still being set up: the pages say so.
    """
    name = (request.GET.get("benchmark") or "").strip()
    if name and name != settings.DEFAULT_BENCHMARK:
        return selectors.benchmark_get(name), name
    name = settings.DEFAULT_BENCHMARK
    return Benchmark.objects.filter(name=name).first(), name


def benchmark_names() -> list[str]:
    """Benchmarks a user can upload to: only built ones."""
    return list(
        Benchmark.objects.filter(state=Benchmark.State.READY).order_by("name").values_list("name", flat=True)
    )


def ladder_size(bench: Benchmark) -> int:
    return len(bench.ladder or []) or 10


def building_context(bench: Benchmark | None, name: str) -> dict[str, Any]:
    """The 'benchmark is being built' state, for a missing, new, building or failed
    benchmark: leaderboard.progress_selectors.build_progress, as the API gives it."""
    if bench is not None and bench.state == Benchmark.State.READY:
        return {}
    return {"building": progress_selectors.build_progress(bench, name=name)}


def query_suffix(bench: Benchmark | None) -> str:
    if bench is None or bench.name == settings.DEFAULT_BENCHMARK:
        return ""
    return f"?benchmark={bench.name}"


def benchmark_page_context(request: HttpRequest, *, nav: str) -> tuple[Benchmark | None, dict[str, Any]]:
    """The requested benchmark and the context every benchmark-scoped page starts from."""
    bench, name = benchmark_or_none(request)
    return bench, {"benchmark": bench, "nav": nav, "benchmark_names": benchmark_names(),
                   "query": query_suffix(bench), **building_context(bench, name)}
