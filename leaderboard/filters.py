"""Search, filters and sort order of the leaderboard, shared by the page, the JSON API
and the exports (issue 14). The parameters live in the URL (a GET form, links keep
them), so a filtered view can be bookmarked, shared and downloaded as it is shown.

Ranks are always those of the whole board (SPEC §2 order: level, robust accuracy,
score); filtering or re-sorting never renumbers a network. The order and ranks come from
a few columns of every visible network in one query; full rows are read only for the
networks returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from django.core.paginator import Page, Paginator

from evaluator.engine import flags as engine_flags
from leaderboard import progress_selectors, selectors
from leaderboard.models import Benchmark, Network

KINDS = ("all", "references", "uploads")
# key: (label, default direction). "level" is the board's own order (SPEC §2).
SORTS: dict[str, tuple[str, str]] = {
    "level": ("Level (the ranking)", "desc"),
    "robust": ("Robust accuracy", "desc"),
    "score": ("Score", "desc"),
    "clean": ("Clean accuracy", "desc"),
    "universal": ("Universal accuracy", "desc"),
    "whitebox": ("White-box accuracy", "desc"),
    "robustness": ("Universal robustness", "desc"),
    "flags": ("Number of flags", "desc"),
    "name": ("Name", "asc"),
    "status": ("Status", "asc"),
    "newest": ("Upload date", "desc"),
}
ORDERS = ("asc", "desc")
FLAG_CHOICES: dict[str, str] = {
    "": "any",
    "flagged": "flagged (any flag)",
    "unflagged": "no flags",
    **{flag: flag for flag in engine_flags.FLAGS},
}
Q_MAX = 100
_LIGHT = ("pk", "status", "level", "robust_accuracy", "score", "is_reference", "name", "owner__username",
          "flags", "clean_accuracy", "universal_accuracy", "whitebox_accuracy", "created_at")


@dataclass(frozen=True)
class BoardFilters:
    """The parsed parameters; defaults mean "no filter" and the board's own order."""

    q: str = ""
    kind: str = "all"
    level_min: int | None = None
    level_max: int | None = None
    flag: str = ""
    owner: str = ""
    sort: str = "level"
    order: str = ""  # "" = the sort's own default direction

    @property
    def direction(self) -> str:
        return self.order or SORTS[self.sort][1]

    @property
    def narrows(self) -> bool:
        """Whether some networks may be left out (sorting alone leaves every one)."""
        return bool(self.q or self.kind != "all" or self.level_min is not None or self.level_max is not None
                    or self.flag or self.owner)

    def params(self) -> dict[str, str]:
        """The non-default parameters, as the URL carries them."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default and value is not None:
                out[f.name] = str(value)
        return out


def _level(raw: str, name: str, errors: dict[str, str]) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = f"{name} must be a whole number (a level), not {raw[:20]!r}"
        return None
    if not 0 <= value <= 1000:
        errors[name] = f"{name} must be between 0 and 1000"
        return None
    return value


def filters_parse(params: Mapping[str, Any]) -> tuple[BoardFilters, dict[str, str]]:
    """BoardFilters from query parameters, and {parameter: why it was ignored}.

    The page ignores a bad value (and says so); the API answers 400 with the reasons.
    """
    errors: dict[str, str] = {}

    def choice(name: str, allowed, default: str = "") -> str:
        raw = (params.get(name) or "").strip()
        if raw and raw not in allowed:
            errors[name] = f"{name} must be one of: {', '.join(a for a in allowed if a)}"
            return default
        return raw or default

    q = " ".join((params.get("q") or "").split())
    if len(q) > Q_MAX:
        errors["q"] = f"q is longer than {Q_MAX} characters"
        q = ""
    level_min = _level(params.get("level_min"), "level_min", errors)
    level_max = _level(params.get("level_max"), "level_max", errors)
    if level_min is not None and level_max is not None and level_min > level_max:
        errors["level_max"] = "level_max is below level_min"
        level_min = level_max = None
    owner = (params.get("owner") or "").strip()[:150]
    return BoardFilters(
        q=q, kind=choice("kind", KINDS, "all"), level_min=level_min, level_max=level_max,
        flag=choice("flag", FLAG_CHOICES), owner=owner, sort=choice("sort", SORTS, "level"),
        order=choice("order", ORDERS),
    ), errors


# --------------------------------------------------------------------------- the board


@dataclass(frozen=True)
class Entry:
    pk: int
    rank: int | None  # among every visible network, whatever the filters
    ranked: bool


@dataclass(frozen=True)
class Board:
    entries: list[Entry]  # matching networks, in the order asked for
    counts: dict[str, int]  # references / uploads among every visible network
    total: int  # every visible network
    owners: list[str]  # usernames of the uploads on the board (the owner filter's choices)


def _matches(row: dict[str, Any], f: BoardFilters) -> bool:
    if f.kind != "all" and (f.kind == "references") != row["is_reference"]:
        return False
    if f.q and f.q.casefold() not in row["name"].casefold():
        return False
    if f.owner and (row["owner__username"] or "").casefold() != f.owner.casefold():
        return False
    if f.level_min is not None or f.level_max is not None:
        level = row["level"] if row["status"] == Network.Status.RANKED else None
        if level is None or (f.level_min is not None and level < f.level_min) \
                or (f.level_max is not None and level > f.level_max):
            return False
    flagged = list(row["flags"] or [])
    if f.flag == "flagged":
        return bool(flagged)
    if f.flag == "unflagged":
        return not flagged
    return not f.flag or f.flag in flagged


def _robustness(row: dict[str, Any]) -> float | None:
    if row["universal_accuracy"] is None or not row["clean_accuracy"]:
        return None
    return row["universal_accuracy"] / row["clean_accuracy"]


SORT_VALUE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "level": lambda r: r["level"] if r["status"] == Network.Status.RANKED else None,
    "robust": lambda r: r["robust_accuracy"],
    "score": lambda r: r["score"],
    "clean": lambda r: r["clean_accuracy"],
    "universal": lambda r: r["universal_accuracy"],
    "whitebox": lambda r: r["whitebox_accuracy"],
    "robustness": _robustness,
    "flags": lambda r: len(r["flags"] or []),
    "name": lambda r: r["name"].casefold(),
    "status": lambda r: r["status"],
    "newest": lambda r: r["created_at"],
}


def _order(rows: list[dict[str, Any]], f: BoardFilters) -> list[dict[str, Any]]:
    """Rows (already in board order) in the order asked for. Networks without a value
    go last in either direction; ties keep the board's order (the sort is stable)."""
    if f.sort == "level" and f.direction == "desc":
        return rows
    value = SORT_VALUE[f.sort]
    have = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    have.sort(key=value, reverse=f.direction == "desc")
    return have + missing


def board(*, user, benchmark: Benchmark, filters: BoardFilters) -> Board:
    """Every matching network's entry, in order, with its rank on the whole board."""
    light = sorted(
        selectors._board_queryset(user=user, benchmark=benchmark).values(*_LIGHT),
        key=lambda r: selectors._board_key(r["pk"], r["status"], r["level"], r["robust_accuracy"], r["score"]),
    )
    rank = 0
    for row in light:
        row["ranked"] = selectors._ranked(row["status"], row["level"])
        rank += row["ranked"]
        row["rank"] = rank if row["ranked"] else None
    chosen = _order([r for r in light if _matches(r, filters)], filters)
    references = sum(1 for r in light if r["is_reference"])
    owners = sorted({r["owner__username"] for r in light if r["owner__username"] and not r["is_reference"]},
                    key=str.casefold)
    return Board(
        entries=[Entry(r["pk"], r["rank"], r["ranked"]) for r in chosen],
        counts={"references": references, "uploads": len(light) - references},
        total=len(light),
        owners=owners,
    )


@dataclass(frozen=True)
class BoardPage:
    rows: list[dict[str, Any]]  # {"network": Network, "rank": int | None, "ranked": bool}
    page: Page  # of Entry
    board: Board


def board_page(*, user, benchmark: Benchmark, filters: BoardFilters, page: str | int | None = None,
               per_page: int = 100) -> BoardPage:
    """One page of the (filtered, sorted) board: full rows only for that page."""
    found = board(user=user, benchmark=benchmark, filters=filters)
    shown = Paginator(found.entries, per_page).get_page(page)
    full = Network.objects.select_related("owner").in_bulk([e.pk for e in shown.object_list])
    rows = [{"network": full[e.pk], "rank": e.rank, "ranked": e.ranked} for e in shown.object_list if e.pk in full]
    return BoardPage(rows=rows, page=shown, board=found)


def board_networks(*, user, benchmark: Benchmark, filters: BoardFilters) -> list[tuple[Network, int | None]]:
    """Every matching network with its rank, in order (the API and the exports)."""
    found = board(user=user, benchmark=benchmark, filters=filters)
    full = Network.objects.select_related("owner").in_bulk([e.pk for e in found.entries])
    return [(full[e.pk], e.rank) for e in found.entries if e.pk in full]


def leaderboard_networks(*, user, benchmark: Benchmark, kind: str = "all") -> list[Network]:
    """Every row of the leaderboard in order, of one kind and no other filter."""
    chosen = BoardFilters(kind=kind if kind in KINDS else "all")
    return [n for n, _rank in board_networks(user=user, benchmark=benchmark, filters=chosen)]


def board_export(*, user, benchmark: Benchmark, filters: BoardFilters) -> dict[str, Any]:
    """The leaderboard as data: the JSON API's answer and the JSON/CSV downloads."""
    rows = []
    found = list(board_networks(user=user, benchmark=benchmark, filters=filters))
    estimates = progress_selectors.network_estimates(n for n, _rank in found)  # one query for every row
    for network, rank in found:
        rows.append({"rank": rank, **selectors.network_row(network, estimates=estimates)})
    return {
        "benchmark": benchmark.name,
        "ladder": benchmark.ladder,
        # The time of the latest ranking: when the levels were last recomputed.
        "last_updated": benchmark.ranked_at.isoformat() if benchmark.ranked_at else None,
        "filters": filters.params(),
        "count": len(rows),
        "networks": rows,
    }
