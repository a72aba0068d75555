"""Formatting of the issue-15 analysis figures: a value with its 95% interval."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


def _interval(value: float, low: float, high: float, fmt: str, scale: float = 1.0, unit: str = "") -> SafeString:
    return format_html('{}{} <span class="muted">[{}, {}]</span>', format(value * scale, fmt), unit,
                       format(low * scale, fmt), format(high * scale, fmt))


@register.filter
def auc(d: dict | None) -> SafeString | str:
    """A detector's AUC with its bootstrap interval: 0.927 [0.897, 0.956]."""
    if not d:
        return "—"
    return _interval(d["auc"], d["low"], d["high"], ".3f")


@register.filter
def rate(d: dict | None) -> SafeString | str:
    """The detection rate at 5% false positives with its bootstrap interval."""
    if not d:
        return "—"
    return _interval(d["rate"], d["rate_low"], d["rate_high"], ".1f", 100, "%")


@register.filter
def share(m: dict | None) -> SafeString | str:
    """A mean share (or a share of images) with its 95% interval, in percent."""
    if not m:
        return "—"
    return _interval(m["mean"], m["low"], m["high"], ".1f", 100, "%")


@register.filter
def meanci(m: dict | None) -> SafeString | str:
    """A mean distance with its 95% interval."""
    if not m:
        return "—"
    return _interval(m["mean"], m["low"], m["high"], ".2f")


@register.filter
def get(d: dict | None, key: str):
    return (d or {}).get(key)
