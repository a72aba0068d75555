"""Number formats shared by the generated reports (docs/BENCHMARK.md)."""

from __future__ import annotations

from leaderboard.models import Network


def accuracy_cell(net: Network, prefix: str) -> str:
    """`<prefix>_accuracy` with its 95% interval, in percent ("–" when not measured)."""
    value = getattr(net, f"{prefix}_accuracy")
    if value is None:
        return "–"
    low, high = getattr(net, f"{prefix}_low"), getattr(net, f"{prefix}_high")
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
