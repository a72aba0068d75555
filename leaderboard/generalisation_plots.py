"""Plotly figures of the generalisation section (issue 15) on /benchmark/.

Two figures from evaluator.services.generalisation: the ladders side by side (one line
per reference through its rung on each built-in benchmark: a line that crosses others
is a defense that moves), and Kendall's τ between every pair of ladders. Served with
the locally vendored Plotly bundle, like leaderboard.plots.
"""

from __future__ import annotations

from typing import Any

from django.utils.html import escape

from evaluator.engine import builtins
from evaluator.engine import generalisation as engine
from evaluator.services.generalisation import GeneralisationSection, generalisation_section
from leaderboard.models import Benchmark
from leaderboard.plots import FONT, script_json

# Colour-blind-safe qualitative palette (Okabe–Ito plus greys), one colour per reference.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#999999", "#882255"]


def _robust(rung: engine.Rung) -> str:
    if rung.robust is None or rung.robust_low is None or rung.robust_high is None:
        return "robust accuracy not measured"
    return f"robust accuracy {rung.robust:.1%} [{rung.robust_low:.1%}, {rung.robust_high:.1%}]"


def ladders_figure(result: engine.Generalisation) -> Any:
    """Bump chart: x the benchmarks, y the rung (R1 at the bottom), one line per reference."""
    import plotly.graph_objects as go

    names = [escape(b) for b in result.benchmarks]
    fig = go.Figure()
    for i, row in enumerate(result.rows):
        xs, ys, hover = [], [], []
        for bench, label in zip(result.benchmarks, names):
            rung = row.rungs[bench]
            if rung is None:
                continue
            xs.append(label)
            ys.append(rung.rung)
            hover.append(f"<b>{escape(row.recipe)}</b> on {label}: R{rung.rung}<br>{_robust(rung)}")
        # The name at both ends only (left of the first ladder, right of the last), so no
        # label sits on the lines between the ladders.
        ends = ["" for _ in xs]
        positions = ["middle right" for _ in xs]
        if xs:
            ends[0] = ends[-1] = escape(row.recipe)
            positions[0] = "middle left" if len(xs) > 1 else "middle right"
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers+text", name=escape(row.recipe), text=ends,
            textposition=positions, textfont={"size": 9}, hovertext=hover, hoverinfo="text", cliponaxis=False,
            line={"width": 3 if row.recipe == engine.CONTROL else 2, "color": PALETTE[i % len(PALETTE)],
                  "dash": "dot" if row.recipe == engine.CONTROL else "solid"},
            marker={"size": 9},
        ))
    rungs = max((r.rung for row in result.rows for r in row.rungs.values() if r is not None), default=1)
    fig.update_layout(
        # 320 px: the plot box's height on a phone (site.css), ten rungs fit in it.
        font=FONT, height=320, showlegend=False,
        margin={"l": 34, "r": 6, "t": 12, "b": 36},
        # Room beside the first and last ladder for the names (the axis pads categories).
        xaxis={"type": "category", "title": {"text": ""}, "range": [-1.05, len(result.benchmarks) + 0.05]},
        yaxis={"tickvals": list(range(1, rungs + 1)), "ticktext": [f"R{k}" for k in range(1, rungs + 1)],
               "range": [0.5, rungs + 0.5], "zeroline": False},
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def tau_figure(result: engine.Generalisation) -> Any:
    """Heatmap of Kendall's τ between every pair of ladders (diagonal: a ladder with itself)."""
    import plotly.graph_objects as go

    names = list(result.benchmarks)
    index = {b: i for i, b in enumerate(names)}
    z = [[1.0 if a == b else None for b in names] for a in names]
    text = [["the same ladder" if a == b else "" for b in names] for a in names]
    for pair in result.pairs:
        i, j = index[pair.a], index[pair.b]
        if pair.tau is None:
            label = f"{len(pair.recipes)} shared references: too few for τ"
        else:
            label = (f"τ = {pair.tau.tau:.2f}, p = {pair.tau.p_value:.2g} ({pair.tau.method}), "
                     f"{pair.tau.n} shared references")
            z[i][j] = z[j][i] = round(pair.tau.tau, 4)
        text[i][j] = text[j][i] = label
    labels = [escape(b) for b in names]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, customdata=text, zmin=-1, zmax=1, colorscale="RdBu",
        colorbar={"title": {"text": "τ"}, "thickness": 12},
        texttemplate="%{z:.2f}", hovertemplate="%{y} / %{x}<br>%{customdata}<extra></extra>", xgap=2, ygap=2,
    ))
    fig.update_layout(
        font=FONT, height=320, margin={"l": 110, "r": 20, "t": 16, "b": 60},
        xaxis={"type": "category"}, yaxis={"type": "category", "autorange": "reversed"},
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def generalisation_view(*, benchmark: Benchmark) -> dict[str, Any] | None:
    """The page's section: on the built-in benchmarks' pages only (they share the recipes)."""
    if benchmark.name not in builtins.BUILTINS:
        return None
    section: GeneralisationSection = generalisation_section()
    view: dict[str, Any] = {"section": section, "names": list(builtins.BUILTINS), "missing": section.missing}
    result = section.result
    if result is not None:
        view.update(
            benchmarks=result.benchmarks,
            # Cells in the column order, so the template needs no dictionary lookups.
            rows=[{"recipe": row.recipe, "verdict": row.verdict, "cells": [row.rungs[b] for b in result.benchmarks]}
                  for row in result.rows],
            pairs=result.pairs,
            move_min=engine.MOVE_MIN,
            min_common=engine.MIN_COMMON,
            ladders_figure=script_json(ladders_figure(result)),
            tau_figure=script_json(tau_figure(result)),
        )
    return view
