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


# The matrix heatmap on a small screen: every cell wide enough for its accuracy (when
# written in the cells) and every label shown, so the plot scrolls sideways in its box
# instead of shrinking. Label widths are estimated from their length at FONT's size.
MATRIX_CELL_PX = (40, 26)  # width, height of a cell with its accuracy written in it
MATRIX_CELL_MIN_PX = 8  # a bigger matrix writes nothing in its cells
LABEL_CHAR_PX = 7.0
MATRIX_COLORBAR_PX = 90


def _label_px(labels: Sequence[str]) -> int:
    return int(LABEL_CHAR_PX * max((len(str(x)) for x in labels), default=0)) + 30


def matrix_size(labels: Sequence[str]) -> tuple[int, int]:
    """(minimum width, height) of the heatmap in CSS pixels for these axis labels."""
    n = len(labels)
    if not n:
        return 0, 420
    text = n <= TEXT_IN_CELLS_MAX
    cell_w = MATRIX_CELL_PX[0] if text else MATRIX_CELL_MIN_PX
    cell_h = MATRIX_CELL_PX[1] if text else 18
    label = _label_px(labels)
    width = label + MATRIX_COLORBAR_PX + cell_w * n
    # The column labels are drawn at 45 degrees: about 0.75 of their length in height.
    height = max(420, min(1600, int(0.75 * label) + 80 + cell_h * n))
    return width, height


def matrix_min_width(networks: Sequence[dict[str, Any]], ladder: Sequence[int]) -> int:
    return matrix_size(matrix_labels(networks, ladder))[0]


# {a}: the row network, {b}: the column network, {ab}: a on b's images, {ba}: b on a's.
PAIR_HOVER = {
    "pair": "<b>{a}</b> on <b>{b}</b>'s adversarial images: {ab}<br><b>{b}</b> on <b>{a}</b>'s adversarial images: {ba}",
    "diagonal": "<b>{a}</b> on its own adversarial images: {ab}<br>(white-box accuracy, the diagonal)",
}


def matrix_figure(matrix: dict[str, Any], ladder: Sequence[int]) -> Any:
    """The cross-attack matrix: M[a][b] = accuracy of a (row) on adv(b) (column).

    Hover: off the diagonal both directions of the pair, each saying whose network on
    whose adversarial images; on the diagonal one line, the white-box accuracy. Plotly
    has no per-cell hovertemplate for heatmaps, so the wording travels once in the trace's
    `meta` (PAIR_HOVER) and site.js writes each cell's hover text in the browser; the
    page does not carry n² strings. `hovertemplate` is the fallback (off-diagonal form).
    """
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
                "<b>%{y}</b> on <b>%{x}</b>'s adversarial images: %{z:.1%}<br>"
                "<b>%{x}</b> on <b>%{y}</b>'s adversarial images: %{customdata:.1%}<extra></extra>"
            ),
            meta={"pair_hover": PAIR_HOVER},
            xgap=1 if n <= 40 else 0,
            ygap=1 if n <= 40 else 0,
        )
    )
    if 0 < n <= TEXT_IN_CELLS_MAX:
        fig.update_traces(texttemplate="%{z:.0%}", textfont={"size": 10})
    # Every label, whatever the width (Plotly would thin them out on a phone).
    every = {"tickmode": "array", "tickvals": labels, "ticktext": labels, "automargin": True}
    fig.update_layout(
        font=FONT,
        height=matrix_size(labels)[1],
        margin={"l": 20, "r": 20, "t": 20, "b": 20},
        xaxis={"title": {"text": "adversarial images of … (whose attack)"}, "type": "category",
               "tickangle": -45, "side": "bottom", **every},
        yaxis={"title": {"text": "network evaluated"}, "type": "category", "autorange": "reversed", **every},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig
