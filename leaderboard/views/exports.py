"""Downloads (issue 14): the leaderboard (with the page's filters) and the matrix as CSV
and JSON, one network's results as JSON and CSV, and the benchmark's BibTeX entry.

They live under /api/, so every error is JSON (leaderboard.middleware); who may see
what is the API's rule (a session or an API token; private networks only to their
owner and staff). File names carry the benchmark's name (or the network's id).
"""

from __future__ import annotations

import csv
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.core.serializers.json import DjangoJSONEncoder

from leaderboard import exports, filters, selectors
from leaderboard.auth import request_user
from leaderboard.views.api import api_get
from leaderboard.views.context import query_suffix


def _attachment(response: HttpResponse, filename: str) -> HttpResponse:
    # Names are built from slugs and ids only, so they need no quoting beyond this.
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _csv(table: list[list[Any]], filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    csv.writer(response).writerows(table)
    return _attachment(response, filename)


def _json(data: dict[str, Any], filename: str) -> HttpResponse:
    body = json.dumps(data, cls=DjangoJSONEncoder, indent=1, ensure_ascii=False)
    return _attachment(HttpResponse(body, content_type="application/json; charset=utf-8"), filename)


def _board(request: HttpRequest, name: str) -> tuple[dict[str, Any] | None, JsonResponse | None]:
    bench = selectors.benchmark_get(name)
    chosen, errors = filters.filters_parse(request.GET)
    if errors:
        return None, JsonResponse({"error": "; ".join(errors.values()), "parameters": errors}, status=400)
    return filters.board_export(user=request_user(request), benchmark=bench, filters=chosen), None


@api_get
def leaderboard_csv(request: HttpRequest, name: str) -> HttpResponse:
    data, error = _board(request, name)
    return error or _csv(exports.leaderboard_table(data), f"leaderboard-{data['benchmark']}.csv")


@api_get
def leaderboard_json(request: HttpRequest, name: str) -> HttpResponse:
    data, error = _board(request, name)
    return error or _json(data, f"leaderboard-{data['benchmark']}.json")


def _matrix(request: HttpRequest, name: str) -> dict[str, Any]:
    return selectors.matrix_for(user=request_user(request), benchmark=selectors.benchmark_get(name))


@api_get
def matrix_csv(request: HttpRequest, name: str) -> HttpResponse:
    data = _matrix(request, name)
    return _csv(exports.matrix_table(data), f"matrix-{data['benchmark']}.csv")


@api_get
def matrix_json(request: HttpRequest, name: str) -> HttpResponse:
    data = _matrix(request, name)
    return _json(data, f"matrix-{data['benchmark']}.json")


def _results(request: HttpRequest, pk: int) -> dict[str, Any]:
    """The viewer's view of one network: a network they may not see is a 404, as its page."""
    user = request_user(request)
    network = selectors.network_get_visible(user=user, pk=pk)
    return exports.network_results(network=network, user=user)


@api_get
def network_results_json(request: HttpRequest, pk: int) -> HttpResponse:
    data = _results(request, pk)
    return _json(data, f"results-{data['benchmark']}-network-{pk}.json")


@api_get
def network_results_csv(request: HttpRequest, pk: int) -> HttpResponse:
    data = _results(request, pk)
    return _csv(exports.results_table(data), f"results-{data['benchmark']}-network-{pk}.csv")


@api_get
def cite_bib(request: HttpRequest, name: str) -> HttpResponse:
    bench = selectors.benchmark_get(name)
    url = request.build_absolute_uri(reverse("benchmark") + query_suffix(bench))
    response = HttpResponse(exports.benchmark_bibtex(benchmark=bench, url=url),
                            content_type="application/x-bibtex; charset=utf-8")
    return _attachment(response, f"{bench.name}.bib")
