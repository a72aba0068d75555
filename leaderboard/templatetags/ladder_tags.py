"""Small formatting helpers for the pages (percentages, intervals, the ladder glyph)."""

from __future__ import annotations

import functools

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from evaluator.engine import flags

register = template.Library()

# One definition of every flag's wording: the engine's (evaluator.engine.flags, no TF).
FLAG_TEXT = flags.DESCRIPTIONS


@register.filter
def pct(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value) * 100:.{int(digits)}f}%"
    except (TypeError, ValueError):
        return "—"


@register.filter
def num(value, digits: int = 2) -> str:
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.{int(digits)}f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def pvalue(p) -> str:
    if p is None:
        return "—"
    p = float(p)
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}"


@register.filter
def sortval(value) -> str:
    """A value for the data-sort attribute (empty cells sort last)."""
    if value is None or value == "":
        return ""
    return f"{float(value):.6f}"


@register.simple_tag
def accuracy(network, prefix: str) -> SafeString:
    """"95.0% 93.9–96.0" with the 95% Wilson interval (or a dash)."""
    value = getattr(network, f"{prefix}_accuracy", None)
    if value is None:
        return mark_safe('<span class="muted">—</span>')
    low = getattr(network, f"{prefix}_low", None)
    high = getattr(network, f"{prefix}_high", None)
    if low is None or high is None:
        return format_html('<span class="acc">{}</span>', pct(value))
    return format_html(
        '<span class="acc">{}</span> <span class="ci" title="95% Wilson interval">{}–{}</span>',
        pct(value), f"{low * 100:.1f}", f"{high * 100:.1f}",
    )


@register.simple_tag
def ladder_glyph(level, rungs: int) -> SafeString:
    """A compact ladder: one rung per reference, the first `level` filled."""
    if level is None:
        return mark_safe("")
    return _glyph(int(level), max(int(rungs or 0), 1))


@functools.lru_cache(maxsize=256)
def _glyph(level: int, rungs: int) -> SafeString:
    # Memoised: a leaderboard page draws it per row with only a few distinct values.
    cells = format_html_join(
        "", '<i class="{}"></i>', (("on" if k <= level else "",) for k in range(1, rungs + 1))
    )
    return format_html('<span class="glyph" title="level {} of {}" aria-hidden="true">{}</span>',
                       level, rungs, cells)


@register.filter
def flag_text(flag: str) -> str:
    return FLAG_TEXT.get(flag, flag)


@register.filter
def stage_detail(network) -> str:
    """The progress text of a running network when it adds to its status ('' otherwise).

    A stale stage that merely names a status (e.g. 'queued' after validation began)
    would contradict the status, so it is dropped.
    """
    from leaderboard.models import Network

    stage = (getattr(network, "stage", "") or "").strip()
    if not stage or stage == network.status or stage in Network.Status.values:
        return ""
    return stage
