"""Model cards: what an uploader says about a network (paper or code link, training
data, claimed threat model, framework and architecture; the free text is the network's
description).

Every value is hostile input. It is checked here, once, for the form, the JSON API and
the owner's later edits: links must be http(s) URLs, short fields are one line without
control or bidirectional-override characters, lengths are capped. Pages escape it on
the way out (Django autoescape); links are rendered rel="nofollow noopener".
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from leaderboard.models import Network

URL_MAX = 500
SHORT_MAX = 300
EPSILON_MAX = 1e4
NORMS: dict[str, str] = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
# Characters that reorder or hide text (bidi overrides and isolates, zero-width marks):
# in a name or a claim they can make the page say something the bytes do not.
_HIDDEN_FORMAT = "Cf"
_URL = URLValidator(schemes=["http", "https"])


class CardError(ValueError):
    """A model card value is unacceptable; `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ModelCard:
    paper_url: str = ""
    training_data: str = ""
    architecture: str = ""
    threat_norm: str = ""
    threat_epsilon: float | None = None

    @property
    def is_empty(self) -> bool:
        return not any(v not in ("", None) for v in asdict(self).values())


FIELDS = tuple(ModelCard.__dataclass_fields__)
LABELS = {
    "description": "Description",
    "paper_url": "Paper or code",
    "training_data": "Training data",
    "architecture": "Framework / architecture",
    "threat_norm": "Threat model claimed",
    "threat_epsilon": "Claimed ε",
}


def _one_line(value: Any, *, field: str, limit: int = SHORT_MAX) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())  # newlines and runs of spaces become one space
    if len(text) > limit:
        raise CardError(field, f"{LABELS[field].lower()} is longer than {limit} characters")
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc" or category == _HIDDEN_FORMAT:
            raise CardError(field, f"{LABELS[field].lower()} contains an invisible control character "
                                   f"(U+{ord(ch):04X}); remove it")
    return text


def _url(value: Any) -> str:
    text = _one_line(value, field="paper_url", limit=URL_MAX)
    if not text:
        return ""
    try:
        _URL(text)
    except ValidationError as exc:
        raise CardError("paper_url", "the paper or code link must be a full http:// or https:// address") from exc
    return text


def _norm(value: Any) -> str:
    text = ("" if value is None else str(value)).strip().lower().replace("∞", "inf")
    text = {"l_inf": "linf", "linfinity": "linf", "inf": "linf", "l-inf": "linf"}.get(text, text)
    if text and text not in NORMS:
        raise CardError("threat_norm", "the threat model norm must be one of " + ", ".join(NORMS.values()))
    return text


def _epsilon(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        eps = float(value)
    except (TypeError, ValueError) as exc:
        raise CardError("threat_epsilon", "the claimed ε must be a number, e.g. 0.3") from exc
    if not math.isfinite(eps) or eps <= 0 or eps > EPSILON_MAX:
        raise CardError("threat_epsilon", f"the claimed ε must be a number above 0 and at most {EPSILON_MAX:g}")
    return eps


def card_clean(
    *, paper_url: Any = "", training_data: Any = "", architecture: Any = "",
    threat_norm: Any = "", threat_epsilon: Any = None,
) -> ModelCard:
    """A checked ModelCard from raw values (form or API strings); CardError otherwise."""
    norm, eps = _norm(threat_norm), _epsilon(threat_epsilon)
    if eps is not None and not norm:
        raise CardError("threat_norm", "say which norm the claimed ε is measured in")
    return ModelCard(
        paper_url=_url(paper_url),
        training_data=_one_line(training_data, field="training_data"),
        architecture=_one_line(architecture, field="architecture"),
        threat_norm=norm,
        threat_epsilon=eps,
    )


DESCRIPTION_MAX = Network._meta.get_field("description").max_length
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def description_clean(value: Any) -> str:
    """The free text: several lines allowed, no control characters but tab and newline,
    no bidirectional overrides (they would make the page show text in another order)."""
    text = ("" if value is None else str(value)).strip()
    if len(text) > DESCRIPTION_MAX:
        raise CardError("description", f"the description is longer than {DESCRIPTION_MAX} characters")
    for ch in text:
        if (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r") or ch in _BIDI:
            raise CardError("description", f"the description contains an invisible control character "
                                           f"(U+{ord(ch):04X}); remove it")
    return text


def card_from_data(data: Any) -> tuple[ModelCard, str]:
    """(card, description) from a request's fields (the JSON API's multipart form)."""
    card = card_clean(**{name: data.get(name, "") for name in FIELDS})
    return card, description_clean(data.get("description", ""))


def card_of(network: Network) -> ModelCard:
    return ModelCard(**{name: getattr(network, name) for name in FIELDS})


def threat_text(norm: str, epsilon: float | None) -> str:
    """'L∞, ε = 0.3', 'L2', or '' when nothing is claimed."""
    if not norm:
        return ""
    name = NORMS.get(norm, norm)
    return f"{name}, ε = {epsilon:g}" if epsilon is not None else name


def card_dict(network: Network) -> dict[str, Any]:
    """The card in the JSON API rows (the free text is the detail's `description`)."""
    return {
        "paper_url": network.paper_url or None,
        "training_data": network.training_data or None,
        "architecture": network.architecture or None,
        "threat_model": {
            "norm": network.threat_norm or None,
            "epsilon": network.threat_epsilon,
            "text": threat_text(network.threat_norm, network.threat_epsilon) or None,
        },
    }


def card_apply(network: Network, card: ModelCard) -> None:
    """Copy the card onto the network (unsaved)."""
    for name in FIELDS:
        setattr(network, name, getattr(card, name))


def network_card_update(*, network: Network, card: ModelCard, description: str) -> Network:
    """The owner's edit of the card and the description (already checked)."""
    card_apply(network, card)
    network.description = description
    network.save(update_fields=[*FIELDS, "description", "updated_at"])
    return network
