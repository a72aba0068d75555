"""Downloads as data (issue 14): the leaderboard and the matrix as tables, one network's
own results, and a BibTeX entry for the benchmark. Views in leaderboard/views/exports.py.

Every table is built from the same reads as the pages (what the viewer may see, nothing
more). Text cells that a spreadsheet would run as a formula are defused (CSV injection:
names and model cards are the uploaders' text).
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q

from evaluator.models import AdversarialDataset, Evaluation
from leaderboard import selectors
from leaderboard.models import Benchmark, Network

# A cell beginning with one of these is a formula to Excel, LibreOffice and Sheets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """A CSV cell: '' for None, numbers as they are, text defused with a leading '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# --------------------------------------------------------------------------- leaderboard


ACCURACIES = ("robust", "clean", "universal", "whitebox")
LEADERBOARD_COLUMNS = (
    "rank", "id", "name", "owner", "is_reference", "recipe", "status", "level", "score",
    *[f"{a}_{part}" for a in ACCURACIES for part in ("accuracy", "low", "high")],
    "universal_robustness", "universal_tier", "attack_success", "flags", "is_public",
    "paper_url", "training_data", "architecture", "threat_norm", "threat_epsilon",
)


def leaderboard_table(data: dict[str, Any]) -> list[list[Any]]:
    """filters.board_export's rows as a table (header first); flags joined with ';'."""
    table: list[list[Any]] = [list(LEADERBOARD_COLUMNS)]
    for row in data["networks"]:
        flat = {k: row.get(k) for k in ("rank", "id", "name", "owner", "is_reference", "recipe", "status", "level",
                                       "score", "universal_robustness", "universal_tier", "attack_success",
                                       "is_public")}
        for a in ACCURACIES:
            value = row[f"{a}_accuracy"] or {}
            for part, key in (("accuracy", "value"), ("low", "low"), ("high", "high")):
                flat[f"{a}_{part}"] = value.get(key)
        flat["flags"] = ";".join(row["flags"])
        card = row["model_card"]
        flat.update(paper_url=card["paper_url"], training_data=card["training_data"],
                    architecture=card["architecture"], threat_norm=card["threat_model"]["norm"],
                    threat_epsilon=card["threat_model"]["epsilon"])
        table.append([cell(flat[c]) for c in LEADERBOARD_COLUMNS])
    return table


# --------------------------------------------------------------------------- matrix


def matrix_table(data: dict[str, Any]) -> list[list[Any]]:
    """selectors.matrix_for as a square table: a row per evaluated network, a column per
    attack, headed "<id>:<name>"; cell = accuracy of the row network on the column's attack."""
    heads = [f"{n['id']}:{n['name']}" for n in data["networks"]]
    table: list[list[Any]] = [["evaluated_id", "evaluated", *[cell(h) for h in heads]]]
    for net, values in zip(data["networks"], data["matrix"]):
        table.append([net["id"], cell(net["name"]), *values])
    return table


# --------------------------------------------------------------------------- one network


def _acc(value: float | None, low: float | None, high: float | None, correct: int | None = None,
         total: int | None = None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"value": value, "low": low, "high": high, "correct": correct, "total": total}


def network_results(*, network: Network, user) -> dict[str, Any]:
    """One network's evaluation: its accuracies with intervals (and counts where stored),
    its row (it on others' attacks) and column (others on its attack) of the matrix among
    the networks the viewer may see, flags, level and the comparisons that decide it."""
    visible = selectors.visible_networks(user=user, benchmark=network.benchmark).values("pk")
    evals = list(
        Evaluation.objects.filter(Q(network=network) | Q(source=network, network__in=visible))
        .filter(Q(source__isnull=True) | Q(source__in=visible))
        .values("kind", "network_id", "network__name", "source_id", "source__name",
                "accuracy", "low", "high", "correct", "total")
        .order_by("kind", "source_id", "network_id")
    )
    plain = {e["kind"]: e for e in evals if e["source_id"] is None}
    adv = AdversarialDataset.objects.filter(network=network).values("whitebox_correct", "total").first() or {}
    row = selectors.network_row(network)

    def stored(kind: str, prefix: str) -> dict[str, Any] | None:
        e = plain.get(kind)
        counts = (e["correct"], e["total"]) if e else (None, None)
        return _acc(getattr(network, f"{prefix}_accuracy"), getattr(network, f"{prefix}_low"),
                    getattr(network, f"{prefix}_high"), *counts)

    def entry(e: dict[str, Any], who: str) -> dict[str, Any]:
        other = "source" if who == "attack_of" else "network"
        return {f"{who}_id": e[f"{other}_id"], who: e[f"{other}__name"], "accuracy": e["accuracy"],
                "low": e["low"], "high": e["high"], "correct": e["correct"], "total": e["total"]}

    return {
        "benchmark": network.benchmark.name,
        "network": {k: row[k] for k in ("id", "name", "owner", "status", "level", "score", "is_reference",
                                        "recipe", "flags", "is_public", "model_card")}
        | {"flag_notes": dict(network.flag_notes or {}),
           "ranked_at": network.ranked_at.isoformat() if network.ranked_at else None},
        "accuracies": {
            "clean": stored(Evaluation.Kind.CLEAN, "clean"),
            "universal": stored(Evaluation.Kind.UNIVERSAL, "universal"),
            "whitebox": _acc(network.whitebox_accuracy, network.whitebox_low, network.whitebox_high,
                             adv.get("whitebox_correct"), adv.get("total")),
            "robust": _acc(network.robust_accuracy, network.robust_low, network.robust_high),
        },
        "attack_success": network.attack_success,
        "universal_robustness": row["universal_robustness"],
        "universal_tier": row["universal_tier"],
        "audit_curve": list(network.audit_curve or []),
        # M[this][b]: this network on the attack of b.
        "row": [entry(e, "attack_of") for e in evals if e["network_id"] == network.pk and e["source_id"]],
        # M[a][this]: network a on this network's attack.
        "column": [entry(e, "evaluated") for e in evals if e["source_id"] == network.pk],
        "pairwise": selectors.pairwise_rows(network=network),
        "description": ("accuracies: value with its 95% Wilson interval [low, high] and correct/total where "
                        "stored; row[i]: this network on the attack of attack_of; column[i]: evaluated on "
                        "this network's attack"),
    }


RESULTS_COLUMNS = ("measure", "value", "low", "high", "correct", "total",
                   "evaluated_id", "evaluated", "attack_id", "attack")


def results_table(data: dict[str, Any]) -> list[list[Any]]:
    """network_results as one long table: a line per measure (level, score, flags, each
    accuracy, attack success), then its row and its column of the matrix."""
    net = data["network"]
    me = (net["id"], net["name"])
    lines: list[dict[str, Any]] = [
        {"measure": "level", "value": net["level"]},
        {"measure": "score", "value": net["score"]},
        {"measure": "flags", "value": ";".join(net["flags"])},
        {"measure": "attack_success", "value": data["attack_success"]},
    ]
    for name, acc in data["accuracies"].items():
        if acc is not None:
            lines.append({"measure": f"{name}_accuracy", **acc, "evaluated_id": me[0], "evaluated": me[1],
                          **({"attack_id": me[0], "attack": me[1]} if name == "whitebox" else {})})
    for e in data["row"]:
        lines.append({"measure": "row", "value": e["accuracy"], "low": e["low"], "high": e["high"],
                      "correct": e["correct"], "total": e["total"], "evaluated_id": me[0], "evaluated": me[1],
                      "attack_id": e["attack_of_id"], "attack": e["attack_of"]})
    for e in data["column"]:
        lines.append({"measure": "column", "value": e["accuracy"], "low": e["low"], "high": e["high"],
                      "correct": e["correct"], "total": e["total"], "evaluated_id": e["evaluated_id"],
                      "evaluated": e["evaluated"], "attack_id": me[0], "attack": me[1]})
    return [list(RESULTS_COLUMNS), *([cell(line.get(c)) for c in RESULTS_COLUMNS] for line in lines)]


# --------------------------------------------------------------------------- citation


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "$": r"\$", "&": r"\&",
                "#": r"\#", "_": r"\_", "^": r"\^{}", "~": r"\~{}"}


def tex(text: str) -> str:
    """Text safe inside a BibTeX field: LaTeX specials escaped, control characters dropped."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text if ch.isprintable())


def bibtex_key(benchmark: Benchmark) -> str:
    return "robustnessladder-" + (re.sub(r"[^A-Za-z0-9]+", "", benchmark.name) or "benchmark")


def benchmark_bibtex(*, benchmark: Benchmark, url: str) -> str:
    """A @misc entry citing the benchmark: its settings and the date of the ranking cited."""
    when = benchmark.ranked_at or benchmark.created_at
    refs = len(benchmark.ladder or [])
    title = benchmark.title if benchmark.title and benchmark.title != benchmark.name else ""
    note = (f"{benchmark.eval_size} eval images ({benchmark.height}x{benchmark.width}x{benchmark.channels}, "
            f"{benchmark.num_classes} classes); targeted $L_\\infty$ attack, $\\epsilon = {benchmark.epsilon:g}$, "
            f"{benchmark.steps} steps of {benchmark.step:g}; {benchmark.universal_count} universal perturbations, "
            f"$\\xi = {benchmark.universal_xi:g}$; a ladder of {refs} reference defenses. "
            f"Leaderboard as ranked on {when:%Y-%m-%d}")
    fields = [
        ("title", "{Robustness Ladder}: the {" + tex(benchmark.name) + "} benchmark"
                  + (f" ({tex(title)})" if title else "")),
        ("author", "{Robustness Ladder}"),
        ("year", f"{when:%Y}"),
        ("howpublished", "\\url{" + url.replace("%", "\\%").replace("}", "") + "}"),
        ("note", note),
        ("urldate", f"{when:%Y-%m-%d}"),
    ]
    width = max(len(k) for k, _ in fields)
    body = ",\n".join(f"  {k.ljust(width)} = {{{v}}}" for k, v in fields)
    return f"@misc{{{bibtex_key(benchmark)},\n{body}\n}}\n"
