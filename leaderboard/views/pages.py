"""HTML pages: leaderboard, cross-attack matrix, benchmark, health check.

Reads go through leaderboard.selectors; every page issues a bounded number of queries
whatever the number of networks. Network pages and the upload form: views/networks.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from evaluator.models import UniversalSet
from evaluator.services import storage
from leaderboard import gallery, generalisation_plots, plots, selectors
from leaderboard.models import Benchmark, Network
from leaderboard.views import analysis as analysis_context
from leaderboard.views.board import board_context
from leaderboard.views.context import (
    benchmark_names,
    benchmark_or_none,
    benchmark_page_context,
    building_context,
    ladder_size,
    query_suffix,
)

S = Network.Status
FULL_TABLE_MAX = 60  # networks; a bigger matrix table keeps only the reference columns


# --------------------------------------------------------------------------- leaderboard


def _page_links(request: HttpRequest, page: Page) -> dict[str, str]:
    """?page= links to the neighbouring pages, keeping the other query parameters."""
    def link(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return "?" + query.urlencode()

    links = {}
    if page.has_previous():
        links["first"], links["previous"] = link(1), link(page.previous_page_number())
    if page.has_next():
        links["next"], links["last"] = link(page.next_page_number()), link(page.paginator.num_pages)
    return links


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    bench, name = benchmark_or_none(request)
    context: dict[str, Any] = {
        "benchmark": bench,
        "benchmark_names": benchmark_names(),
        "kind": "all",
        "nav": "leaderboard",
        "query": query_suffix(bench),
        **building_context(bench, name),
    }
    if bench is not None:
        # Only one page of rows is rendered: 1,000 rows took 1.5 s p50 under load
        # (PERFORMANCE.md §5); ranks still count every network. Search, filters and
        # sort order: leaderboard.filters, kept in every link (views/board.py).
        context.update(board_context(request, bench))
        context.update(
            page_links=_page_links(request, context["page"]),
            rungs=ladder_size(bench),
            any_running=any(r["network"].is_running for r in context["rows"]),
        )
    return render(request, "leaderboard/index.html", context)


# --------------------------------------------------------------------------- matrix


@require_GET
def matrix(request: HttpRequest) -> HttpResponse:
    bench, context = benchmark_page_context(request, nav="matrix")
    if bench is not None:
        data = selectors.matrix_for(user=request.user, benchmark=bench)
        ladder = list(bench.ladder or [])
        labels = plots.matrix_labels(data["networks"], ladder)
        M = np.asarray(data["matrix"], dtype=np.float64)
        n = len(data["networks"])
        # The HTML table repeats the heatmap for small suites; past FULL_TABLE_MAX
        # networks it keeps the columns that decide levels (the references' attacks).
        if n <= FULL_TABLE_MAX:
            columns = list(range(n))
        else:
            references = set(ladder)
            columns = [i for i, net in enumerate(data["networks"]) if net["id"] in references]
        table = []
        for i, net in enumerate(data["networks"]):
            cells = []
            for j in columns:
                value = M[i, j]
                if np.isnan(value) or np.isnan(M[j, i]):
                    # An upload not yet on a newer upload's set (its cell comes right
                    # after that one's ranking): no number, and no charter colour.
                    cells.append(("…" if np.isnan(value) else f"{value * 100:.1f}", "pending"))
                    continue
                if i == j:
                    state = "diag"
                else:
                    state = "win" if value > M[j, i] else ("loss" if value < M[j, i] else "tie")
                cells.append((f"{value * 100:.1f}", state))
            table.append({"network": net, "label": labels[i], "cells": cells})
        context.update(
            networks=data["networks"],
            rungs=len(ladder),
            labels=labels,
            column_labels=[labels[j] for j in columns],
            table_is_full=len(columns) == n,
            table=table,
            pending=bool(np.isnan(M).any()),
            figure=plots.script_json(plots.matrix_figure(data, ladder)) if data["networks"] else None,
            plot_min_width=plots.matrix_min_width(data["networks"], ladder),
        )
    return render(request, "leaderboard/matrix.html", context)


# --------------------------------------------------------------------------- benchmark


@require_GET
def benchmark(request: HttpRequest) -> HttpResponse:
    bench, context = benchmark_page_context(request, nav="benchmark")
    if bench is not None:
        ladder = list(bench.ladder or [])
        rung = {pk: k for k, pk in enumerate(ladder, start=1)}
        refs = list(
            selectors.visible_networks(user=request.user, benchmark=bench)
            .filter(is_reference=True)
            .select_related("adversarial")
        )
        refs.sort(key=lambda n: (rung.get(n.pk, len(rung) + 1), n.pk))
        universal = UniversalSet.objects.filter(benchmark=bench).select_related("source_network").first()
        context.update(
            references=[{"network": n, "rung": rung.get(n.pk)} for n in refs],
            universal=universal,
            can_see_universal=selectors.can_download_universal(user=request.user),
            rungs=ladder_size(bench),
            has_samples=bool(bench.data_file) and storage.media_path(bench.data_file).is_file(),
            validity=selectors.benchmark_validity(benchmark=bench),
            **analysis_context.benchmark_page(bench),  # issue 15: detection, vector space
            generalisation=generalisation_plots.generalisation_view(benchmark=bench),  # issue 15, part 3
        )
    return render(request, "leaderboard/benchmark.html", context)


def _bench_for_image(request: HttpRequest) -> Benchmark:
    bench = selectors.benchmark_get(request.GET.get("benchmark") or None)
    if not bench.data_file:
        raise Http404("this benchmark has no dataset yet")
    return bench


@require_GET
@cache_control(max_age=3600)
def benchmark_samples(request: HttpRequest) -> HttpResponse:
    bench = _bench_for_image(request)
    try:
        data = gallery.sample_grid_png(benchmark=bench)
    except (FileNotFoundError, KeyError) as exc:
        raise Http404("the dataset file is missing") from exc
    return HttpResponse(data, content_type="image/png")


@require_GET
@cache_control(private=True, max_age=3600)
def benchmark_universal(request: HttpRequest) -> HttpResponse:
    """SPEC §2 Secrecy: the universal perturbations, amplified, to staff only (as their
    download; the benchmark page shows the image to staff only)."""
    if not selectors.can_download_universal(user=request.user):
        raise PermissionDenied("universal perturbations are shown to staff only")
    bench = _bench_for_image(request)
    universal = UniversalSet.objects.filter(benchmark=bench).first()
    if universal is None:
        raise Http404("no universal perturbations yet")
    try:
        data = gallery.universal_png(benchmark=bench, universal=universal)
    except (FileNotFoundError, KeyError) as exc:
        raise Http404("the perturbation file is missing") from exc
    return HttpResponse(data, content_type="image/png")


def healthz(request: HttpRequest) -> HttpResponse:
    """A trivial view: liveness probe, and the reference for the web latency figures."""
    return HttpResponse("ok", content_type="text/plain")
