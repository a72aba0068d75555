"""Template helpers for model cards (leaderboard.model_cards) and the board's "last updated"."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from leaderboard import model_cards

register = template.Library()


@register.filter
def has_card(network) -> bool:
    """Whether the network has anything on its card (the free text included)."""
    return bool(network.description) or not model_cards.card_of(network).is_empty


@register.filter
def has_card_fields(network) -> bool:
    """Whether any field of the card beside the free text is filled in."""
    return not model_cards.card_of(network).is_empty


@register.filter
def threat_claim(network) -> str:
    return model_cards.threat_text(network.threat_norm, network.threat_epsilon)


@register.filter
def url_label(url: str) -> str:
    """A link's visible text: host and path, cut short (the href keeps the whole URL)."""
    parts = urlsplit(url or "")
    text = (parts.netloc + parts.path).rstrip("/") or url
    return text if len(text) <= 60 else text[:57] + "…"


@register.filter
def card_title(network) -> str:
    """The card as one plain line, for a title attribute (escaped by the template)."""
    bits = []
    if network.architecture:
        bits.append(network.architecture)
    if network.training_data:
        bits.append(f"trained on {network.training_data}")
    if claim := model_cards.threat_text(network.threat_norm, network.threat_epsilon):
        bits.append(f"claims {claim}")
    if network.paper_url:
        bits.append(url_label(network.paper_url))
    return " · ".join(bits) or "model card"


@register.filter
def ago(when) -> str:
    """'just now' under a minute, else '3 hours ago' (the board's "last updated")."""
    if when is None:
        return ""
    if (timezone.now() - when).total_seconds() < 60:
        return "just now"
    return f"{timesince(when)} ago"
