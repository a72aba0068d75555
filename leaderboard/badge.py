"""A shields-style SVG badge: "robustness | level 4", or "level 4 (not trusted)" in
grey when a flag holds (SPEC §2 Flags: the level is kept, but nobody should read a big
green badge into it); the title says why, one short reason per flag.

Every piece of text is XML-escaped (the network name appears in the title).
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from evaluator.engine import flags as flag_rules
from leaderboard.models import Network

S = Network.Status
GREY = "#555"
UNTRUSTED = "#8a8a8a"
COLORS = ["#c0392b", "#d35400", "#e67e22", "#f39c12", "#d4ac0d", "#a9b11f", "#7cb342", "#43a047",
          "#2e8b57", "#1e7f6e", "#1565c0"]


def _text_width(text: str) -> int:
    """Approximate rendered width of 11px Verdana-like text (no font metrics needed)."""
    width = 0.0
    for ch in text:
        if ch in "il.|:;!'":
            width += 3.2
        elif ch in "mwMW":
            width += 9.5
        elif ch.isupper() or ch.isdigit():
            width += 7.2
        else:
            width += 6.2
    return int(width + 0.5)


def badge_message(network: Network, ladder_size: int = 10) -> tuple[str, str]:
    """(message, colour) for the right half of the badge."""
    if network.status == S.RANKED and network.level is not None:
        if flag_rules.untrusted(network.flags or []):
            return f"level {network.level} (not trusted)", UNTRUSTED
        k = max(ladder_size, 1)
        color = COLORS[min(len(COLORS) - 1, round(network.level * (len(COLORS) - 1) / k))]
        return f"level {network.level}", color
    if network.status == S.REJECTED:
        return "rejected", "#9e9e9e"
    if network.status == S.FAILED:
        return "failed", "#9e9e9e"
    return "pending", "#9e9e9e"


def badge_svg(network: Network, *, label: str = "robustness", ladder_size: int = 10) -> str:
    message, color = badge_message(network, ladder_size)
    lw, mw = _text_width(label) + 12, _text_width(message) + 12
    total = lw + mw
    title = f"{network.name}: {label} {message}"
    if network.status == S.RANKED and network.level is not None and network.flags:
        why = "; ".join(flag_rules.DESCRIPTIONS.get(flag, flag) for flag in network.flags)
        title += f". Not trusted: {why}."
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label={quoteattr(title)}>
<title>{escape(title)}</title>
<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>
<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>
<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="{GREY}"/><rect x="{lw}" width="{mw}" height="20" fill="{color}"/><rect width="{total}" height="20" fill="url(#s)"/></g>
<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">
<text x="{lw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{escape(label)}</text><text x="{lw / 2:.1f}" y="14">{escape(label)}</text>
<text x="{lw + mw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{escape(message)}</text><text x="{lw + mw / 2:.1f}" y="14">{escape(message)}</text>
</g>
</svg>
"""
