"""Plotly figures of the issue-15 analysis: ROC curves, perturbation-size histograms,
energy in the principal components against noise, and the 2-D projection.

Built like leaderboard.plots (plotly.graph_objects server-side, JSON through
plots.script_json, every label escaped: network names come from users).
"""

from __future__ import annotations

from typing import Any, Sequence

from django.utils.html import escape

from leaderboard.analysis_selectors import DETECTOR_NAMES, Projection, SetView
from leaderboard.plots import FONT

NORMS = (("l0", "share of pixels changed (L0)"), ("l2", "L2 norm of the perturbation"),
         ("linf", "L∞ norm of the perturbation"))
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def _layout(fig: Any, *, height: int, legend: bool = True) -> Any:
    fig.update_layout(
        font=FONT, height=height, margin={"l": 56, "r": 16, "t": 40, "b": 48},
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", showlegend=legend,
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}},
    )
    return fig


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def roc_figure(sets: Sequence[SetView], detectors: Sequence[str]) -> Any:
    """One panel per detector, one curve per set (a set keeps its colour across panels;
    clicking its legend entry hides it everywhere), the chance diagonal dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(detectors), subplot_titles=[escape(DETECTOR_NAMES[d]) for d in detectors],
                        shared_yaxes=True, horizontal_spacing=0.06)
    for col, name in enumerate(detectors, start=1):
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                                 name="chance", legendgroup="chance", showlegend=col == 1, hoverinfo="skip"),
                      row=1, col=col)
        for i, s in enumerate(sets):
            d = s.detection.get(name)
            if not d:
                continue
            label = escape(s.label)
            fig.add_trace(go.Scatter(
                x=d["fpr"], y=d["tpr"], mode="lines", line={"color": _colour(i), "shape": "hv"},
                name=label, legendgroup=label, showlegend=col == 1,
                hovertemplate=f"<b>{label}</b><br>AUC {d['auc']:.3f}<br>false positives %{{x:.0%}}, "
                              f"detected %{{y:.0%}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="false positive rate (clean flagged)", range=[0, 1], tickformat=".0%",
                         row=1, col=col)
    fig.update_yaxes(title_text="detection rate", range=[0, 1.02], tickformat=".0%", row=1, col=1)
    return _layout(fig, height=420)


def norms_figure(sets: Sequence[SetView]) -> Any:
    """Histograms of the perturbation sizes, as shares of each set's images."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in NORMS], horizontal_spacing=0.07)
    for col, (key, title) in enumerate(NORMS, start=1):
        for i, s in enumerate(sets):
            h = s.vectorspace["norms"][key]
            edges, counts = h["edges"], h["counts"]
            total = max(1, sum(counts))
            centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            label = escape(s.label)
            fig.add_trace(go.Scatter(
                x=centres, y=[c / total for c in counts], mode="lines", line={"color": _colour(i), "shape": "hvh"},
                name=label, legendgroup=label, showlegend=col == 1,
                hovertemplate=f"<b>{label}</b><br>{escape(title)} ≈ %{{x:.3g}}: %{{y:.1%}} of the images<extra></extra>"),
                row=1, col=col)
        fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text="share of images", row=1, col=1)
    return _layout(fig, height=360, legend=len(sets) > 1)


def energy_figure(sets: Sequence[SetView]) -> Any:
    """Per k: each set's mean share of ‖δ‖² in the top-k components (95% interval), with
    the share for Gaussian noise of the same norm as a dashed line (it is ~k/D for every set)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if len(sets) == 1:
        return _energy_one(sets[0])
    ks = [e["k"] for e in sets[0].vectorspace["energy"]] if sets else []
    fig = make_subplots(rows=1, cols=max(1, len(ks)), subplot_titles=[f"top {k} components" for k in ks],
                        shared_yaxes=True, horizontal_spacing=0.05)
    labels = [escape(s.label) for s in sets]
    for col, k in enumerate(ks, start=1):
        adv, noise = [], []
        for s in sets:
            e = next((e for e in s.vectorspace["energy"] if e["k"] == k), None)
            adv.append(e["adversarial"] if e else None)
            noise.append(e["noise"] if e else None)
        y = [a["mean"] if a else None for a in adv]
        fig.add_trace(go.Bar(
            x=labels, y=y, marker_color=[_colour(i) for i in range(len(sets))], name="attack", showlegend=col == 1,
            error_y={"type": "data", "symmetric": False,
                     "array": [(a["high"] - a["mean"]) if a else 0 for a in adv],
                     "arrayminus": [(a["mean"] - a["low"]) if a else 0 for a in adv]},
            hovertemplate="%{x}: %{y:.1%} of the perturbation's energy<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=labels, y=[n["mean"] if n else None for n in noise], mode="lines+markers", name="noise, same norm",
            line={"dash": "dash", "color": "#333"}, marker={"symbol": "line-ew-open", "size": 14},
            showlegend=col == 1, hovertemplate="%{x}: noise %{y:.1%}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(tickangle=-40, row=1, col=col)
    fig.update_yaxes(title_text="share of ‖δ‖²", tickformat=".0%", range=[0, 1], row=1, col=1)
    _layout(fig, height=440)
    # Below the rotated set names, not over them.
    return fig.update_layout(margin={"b": 120}, legend={"y": -0.45})


def _energy_one(s: SetView) -> Any:
    """One set (a network page): per k, the attack's share beside noise's, both with intervals."""
    import plotly.graph_objects as go

    energy = [e for e in s.vectorspace["energy"] if e["adversarial"] and e["noise"]]
    x = [f"top {e['k']}" for e in energy]
    fig = go.Figure()
    for key, name, colour in (("adversarial", "attack", _colour(0)), ("noise", "Gaussian noise, same norm", "#9aa3ad")):
        parts = [e[key] for e in energy]
        fig.add_trace(go.Bar(
            x=x, y=[p["mean"] for p in parts], name=name, marker_color=colour,
            error_y={"type": "data", "symmetric": False, "array": [p["high"] - p["mean"] for p in parts],
                     "arrayminus": [p["mean"] - p["low"] for p in parts]},
            hovertemplate=f"{name}, %{{x}} components: %{{y:.1%}} of ‖δ‖²<extra></extra>"))
    fig.update_layout(barmode="group", yaxis={"title": {"text": "share of ‖δ‖²"}, "tickformat": ".0%", "range": [0, 1]},
                      title={"text": "energy in the top principal components", "font": {"size": 14}, "x": 0.02})
    return _layout(fig, height=380)


def projection_figure(p: Projection, class_names: Sequence[str], *, title: str = "") -> Any:
    """Clean images (circles, coloured by true class) and adversarial images (crosses,
    coloured by target class, or by true class for the universal set) on the first two
    principal components of the train images; arrows from clean to adversarial for a few."""
    import plotly.graph_objects as go

    names = [escape(str(n)) for n in class_names]
    fig = go.Figure()
    classes = sorted(set(int(c) for c in p.clean_class) | set(int(c) for c in p.adv_class))
    adv_word = "adversarial, target" if p.by_target else "adversarial, true class"
    for c in classes:
        name = names[c] if c < len(names) else str(c)
        mine = p.clean_class == c
        fig.add_trace(go.Scatter(
            x=p.clean_xy[mine, 0].round(3).tolist(), y=p.clean_xy[mine, 1].round(3).tolist(), mode="markers",
            marker={"color": _colour(c), "size": 6, "opacity": 0.55, "symbol": "circle"},
            name=f"clean, class {name}", legendgroup=f"class {c}",
            hovertemplate=f"clean image of class {name}<extra></extra>"))
        theirs = p.adv_class == c
        fig.add_trace(go.Scatter(
            x=p.adv_xy[theirs, 0].round(3).tolist(), y=p.adv_xy[theirs, 1].round(3).tolist(), mode="markers",
            marker={"color": _colour(c), "size": 7, "symbol": "x-thin", "line": {"width": 1.5, "color": _colour(c)}},
            name=f"{adv_word} {name}", legendgroup=f"class {c}", showlegend=False,
            hovertemplate=f"{adv_word} {name}<extra></extra>"))
    for x0, y0, x1, y1 in p.arrows:
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=2, arrowsize=1, arrowwidth=1.4, arrowcolor="#222", opacity=0.8, text="")
    fig.update_layout(title={"text": escape(title), "font": {"size": 14}, "x": 0.02} if title else None,
                      xaxis={"title": {"text": "principal component 1"}, "zeroline": False},
                      yaxis={"title": {"text": "principal component 2"}, "zeroline": False})
    return _layout(fig, height=460, legend=True)
