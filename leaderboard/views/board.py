"""The leaderboard page's rows, filter form and links (leaderboard.filters does the
work): every link on the page carries the current search, filters and sort order."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, QueryDict
from django.urls import reverse

from leaderboard import filters, progress_selectors
from leaderboard.models import Benchmark

PAGE_SIZE = 100


def _query(bench: Benchmark, chosen: filters.BoardFilters, **changes: str | None) -> str:
    """'?…' with the benchmark (unless default), the filters, and `changes` on top
    (None removes a parameter); no page number: a new view starts on page 1."""
    query = QueryDict(mutable=True)
    params = chosen.params()
    if bench.name != settings.DEFAULT_BENCHMARK:
        params = {"benchmark": bench.name, **params}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    for key, value in params.items():
        query[key] = value
    text = query.urlencode()
    return f"?{text}" if text else "?"


def board_context(request: HttpRequest, bench: Benchmark) -> dict[str, Any]:
    chosen, errors = filters.filters_parse(request.GET)
    found = filters.board_page(user=request.user, benchmark=bench, filters=chosen,
                               page=request.GET.get("page"), per_page=PAGE_SIZE)
    rung = {pk: k for k, pk in enumerate(bench.ladder or [], start=1)}
    # Time left of the running rows: one query for the page, none when nothing runs.
    estimates = progress_selectors.network_estimates(row["network"] for row in found.rows)
    for row in found.rows:
        row["rung"] = rung.get(row["network"].pk)
        row["estimate"] = estimates.get(row["network"].pk)
    export_query = _query(bench, chosen, benchmark=None)
    if export_query == "?":
        export_query = ""
    return {
        "rows": found.rows,
        "page": found.page,
        "counts": found.board.counts,
        "matched": found.page.paginator.count,
        "total": found.board.total,
        "filters": chosen,
        "filter_errors": errors,
        "filtered": chosen.narrows,
        "kind": chosen.kind,
        "kind_links": {kind: _query(bench, chosen, kind=None if kind == "all" else kind) for kind in filters.KINDS},
        "reset_link": _query(bench, filters.BoardFilters()),
        "owners": found.board.owners,
        "sorts": [(key, label) for key, (label, _default) in filters.SORTS.items()],
        "flag_choices": list(filters.FLAG_CHOICES.items()),
        "last_updated": bench.ranked_at,
        "exports": {
            "leaderboard_csv": reverse("export-leaderboard-csv", args=[bench.name]) + export_query,
            "leaderboard_json": reverse("export-leaderboard-json", args=[bench.name]) + export_query,
            "matrix_csv": reverse("export-matrix-csv", args=[bench.name]),
            "matrix_json": reverse("export-matrix-json", args=[bench.name]),
            "split_csv": reverse("api-eval-split-csv", args=[bench.name]),
            "split_json": reverse("api-eval-split", args=[bench.name]),
            "bibtex": reverse("export-cite-bib", args=[bench.name]),
        },
    }
