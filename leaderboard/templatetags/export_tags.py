"""The benchmark page's citation (leaderboard.exports.benchmark_bibtex)."""

from __future__ import annotations

from django import template
from django.urls import reverse

from leaderboard import exports
from leaderboard.views.context import query_suffix

register = template.Library()


@register.simple_tag(takes_context=True)
def benchmark_bibtex(context, benchmark) -> str:
    """The same entry /api/benchmarks/<name>/cite.bib serves (escaped by the template)."""
    url = context["request"].build_absolute_uri(reverse("benchmark") + query_suffix(benchmark))
    return exports.benchmark_bibtex(benchmark=benchmark, url=url)
