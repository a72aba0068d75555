"""Plotly figures built server-side (plotly.graph_objects) and handed to Plotly.newPlot.

Every string that ends up in a figure is HTML-escaped first: Plotly renders a subset of
HTML in labels and hover text, and names come from users. The JSON is escaped for
embedding in a <script type="application/json"> block (like Django's json_script).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}
_SCRIPT_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}
TEXT_IN_CELLS_MAX = 12  # write counts into the cells only for small matrices


def script_json(fig) -> SafeString:
    """A figure (or any Plotly-serialisable object) as JSON safe inside a <script> tag."""
    import plotly.io as pio

    text = pio.to_json(fig, validate=False, remove_uids=True)
    return mark_safe(text.translate(_SCRIPT_ESCAPES))


def _labels(names: Sequence[str]) -> list[str]:
    return [escape(str(n)) for n in names]


def confusion_figure(confusion: Sequence[Sequence[int]] | None, class_names: Sequence[str], *,
                     title: str = "") -> Any:
    """Heatmap of a confusion matrix: rows the true class, columns the predicted class."""
    import plotly.graph_objects as go

    z = np.asarray(confusion if confusion is not None else [], dtype=np.int64)
    k = z.shape[0] if z.ndim == 2 else 0
    names = _labels(class_names[:k] if len(class_names) >= k else [str(i) for i in range(k)])
    totals = z.sum(axis=1, keepdims=True) if k else np.zeros((0, 1))
    share = np.divide(z, np.maximum(totals, 1), dtype=np.float64) if k else z
    heat = go.Heatmap(
        z=z.tolist(),
        x=names,
        y=names,
        customdata=share.round(4).tolist(),
        colorscale="Blues",
        zmin=0,
        showscale=False,
        hovertemplate="true %{y}, predicted %{x}<br>%{z} images (%{customdata:.1%} of the class)<extra></extra>",
        xgap=1,
        ygap=1,
    )
    if 0 < k <= TEXT_IN_CELLS_MAX:
        heat.update(texttemplate="%{z}", textfont={"size": 10})
    fig = go.Figure(heat)
    fig.update_layout(
        title={"text": escape(title), "font": {"size": 14}, "x": 0.02} if title else None,
        font=FONT,
        margin={"l": 56, "r": 12, "t": 36 if title else 12, "b": 48},
        height=360,
        xaxis={"title": {"text": "predicted"}, "type": "category", "constrain": "domain"},
        yaxis={"title": {"text": "true"}, "type": "category", "autorange": "reversed",
               "scaleanchor": "x", "constrain": "domain"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def matrix_labels(networks: Sequence[dict[str, Any]], ladder: Sequence[int]) -> list[str]:
    """Unique axis labels: references carry their ladder rung (R1 least robust)."""
    rung = {pk: k for k, pk in enumerate(ladder, start=1)}
    labels: list[str] = []
    used: set[str] = set()
    for n in networks:
        label = f"R{rung[n['id']]} {n['name']}" if n["id"] in rung else str(n["name"])
        if label in used:
            label = f"{label} #{n['id']}"
        used.add(label)
        labels.append(label)
    return labels


def matrix_figure(matrix: dict[str, Any], ladder: Sequence[int]) -> Any:
    """The cross-attack matrix: M[a][b] = accuracy of a (row) on adv(b) (column)."""
    import plotly.graph_objects as go

    M = np.asarray(matrix["matrix"], dtype=np.float64)
    n = len(matrix["networks"])
    labels = _labels(matrix_labels(matrix["networks"], ladder))
    fig = go.Figure(
        go.Heatmap(
            z=M.round(4).tolist() if n else [],
            x=labels,
            y=labels,
            customdata=M.T.round(4).tolist() if n else [],
            colorscale="RdYlGn",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "accuracy"}, "tickformat": ".0%", "thickness": 12},
            hovertemplate=(
                "<b>%{y}</b> on the attack of <b>%{x}</b>: %{z:.1%}<br>"
                "<b>%{x}</b> on the attack of <b>%{y}</b>: %{customdata:.1%}<extra></extra>"
            ),
            xgap=1 if n <= 40 else 0,
            ygap=1 if n <= 40 else 0,
        )
    )
    if 0 < n <= TEXT_IN_CELLS_MAX:
        fig.update_traces(texttemplate="%{z:.0%}", textfont={"size": 10})
    fig.update_layout(
        font=FONT,
        height=max(420, min(1400, 160 + 18 * n)),
        margin={"l": 140, "r": 20, "t": 20, "b": 140},
        xaxis={"title": {"text": "whose attack (adversarial images of …)"}, "type": "category",
               "tickangle": -45, "side": "bottom"},
        yaxis={"title": {"text": "network evaluated"}, "type": "category", "autorange": "reversed"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig
