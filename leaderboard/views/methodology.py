"""The methodology page: every definition, and a worked example from the stored results."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from django.utils.safestring import mark_safe

from leaderboard import methodology
from leaderboard.methodology.markup import inline as _inline
from leaderboard.views.context import benchmark_names, benchmark_or_none, query_suffix


def inline(text: str):
    return mark_safe(_inline(text))  # escaped by the converter


@require_GET
def methodology_page(request: HttpRequest) -> HttpResponse:
    bench, _name = benchmark_or_none(request)
    raw = request.GET.get("network", "")
    example = methodology.example_for(benchmark=bench, network_pk=int(raw) if raw.isdigit() else None,
                                      user=request.user)
    return render(request, "leaderboard/methodology.html", {
        "nav": "methodology",
        "benchmark": bench,
        "benchmark_names": benchmark_names(),
        "query": query_suffix(bench),
        "definitions": [(d, inline(d.title), methodology.to_html(d.body)) for d in methodology.definitions()],
        "example": example,
        "example_html": methodology.to_html(methodology.example_markdown(example)),
    })
