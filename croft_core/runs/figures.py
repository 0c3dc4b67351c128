"""Plotly figures for the app, the benchmark report and papers.

Energy-score histograms (ID vs generated covariate vs real covariate vs semantic OOD, the CRoFT
paper's energy-distribution plots), ROC curves, class-probability bars and training curves. Each
function returns a ``plotly.graph_objects.Figure`` and has no side effects; scores follow the
"higher = more in-distribution" convention of :mod:`croft_core.ood.metrics`.
"""

from __future__ import annotations

import functools
import json
import logging
import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from croft_core.ood.metrics import auroc, roc_curve, to_numpy

__all__ = ["PALETTE", "energy_comparison", "energy_histogram", "energy_histogram_json", "lab_histograms", "lab_roc",
           "margin_comparison_json", "probability_bars", "roc_curves", "score_plot_json", "training_curves"]

logger = logging.getLogger(__name__)

_TEMPLATE = "plotly_white"
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#88CCEE")
"""Okabe-Ito's colour-blind-safe eight, then Tol's muted: 14 distinct colours before any repeats."""
_DASHES = ("solid", "dash", "dot", "dashdot")  # after 14 lines, the dash tells repeats apart
ACCEPT_FILL, REJECT_FILL = "rgba(0, 158, 115, 0.10)", "rgba(213, 94, 0, 0.10)"
SCORE_COLOUR, THRESHOLD_COLOUR = "#D55E00", "#000000"


def style(i: int) -> dict[str, str]:
    """Colour and dash of the ``i``-th line: distinct for the first 56."""
    return {"color": PALETTE[i % len(PALETTE)], "dash": _DASHES[(i // len(PALETTE)) % len(_DASHES)]}


def _finite(values: Any, name: str) -> np.ndarray:
    arr = to_numpy(values).astype(np.float64).ravel()
    keep = np.isfinite(arr)
    if not keep.all():
        logger.warning("dropping %d non-finite values from %r", int((~keep).sum()), name)
    return arr[keep]


def energy_histogram(groups: Mapping[str, Any], score: float | None = None, threshold: float | None = None,
                     title: str = "Energy score distribution",
                     xaxis: str = "energy score S(x) (higher = more in-distribution)",
                     nbins: int = 40) -> go.Figure:
    """Overlaid, density-normalised histograms of scores per named group, on shared bins.

    Args:
        groups: name -> ``[N_i]`` scores, e.g. ``{"ID": ..., "generated covariate": ...,
            "covariate: sketch": ..., "semantic: unseen": ...}``. Empty groups are skipped.
        score: one image's score, drawn as a solid vertical line annotated "this image".
        threshold: the detector threshold, drawn as a dashed vertical line annotated "threshold".
        title: figure title.
        xaxis: x-axis title.
        nbins: number of shared bins over the range of all groups.

    Returns:
        A figure with one histogram trace per non-empty group and one shape per vertical line.
    """
    return go.Figure(json.loads(energy_histogram_json(groups, score, threshold, title, xaxis, nbins)))


def roc_curves(id_scores: Any, ood_sets: Mapping[str, Any], title: str = "ROC curves (ID = positive)") -> go.Figure:
    """ROC curve (TPR vs FPR, ID positive) for each OOD set, AUROC in the legend.

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        ood_sets: name -> ``[M_i]`` scores of an OOD set.
        title: figure title.

    Returns:
        A figure with one line per OOD set plus a dashed "chance" diagonal.
    """
    fig = go.Figure()
    for i, (name, ood) in enumerate(ood_sets.items()):
        fpr, tpr, _ = roc_curve(id_scores, ood)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUROC {auroc(id_scores, ood):.3f})",
                                 line=style(i)))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(dash="dash", color="gray")))
    fig.update_layout(template=_TEMPLATE, title=title, xaxis_title="false-positive rate (OOD accepted)",
                      yaxis_title="true-positive rate (ID accepted)", xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def probability_bars(probs: Mapping[str, float], top_k: int = 5, title: str = "Class probabilities") -> go.Figure:
    """Horizontal bars of the ``top_k`` most probable classes, highest on top.

    Args:
        probs: class name -> probability.
        top_k: how many classes to show (>= 1).
        title: figure title.

    Returns:
        A figure with one bar trace.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    top = sorted(probs.items(), key=lambda kv: float(kv[1]), reverse=True)[:top_k]
    names = [name for name, _ in top]
    values = [float(p) for _, p in top]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", text=[f"{p:.1%}" for p in values],
                           textposition="auto", name="probability"))
    fig.update_layout(template=_TEMPLATE, title=title, xaxis_title="probability", xaxis_range=[0, 1],
                      yaxis_title="class", yaxis_autorange="reversed")
    return fig


def training_curves(history: Sequence[Mapping[str, Any]], title: str = "Training curves") -> go.Figure:
    """One subplot per numeric metric in ``history`` (everything except ``epoch``) against epoch.

    Args:
        history: rows like ``{"epoch": 1, "loss": 0.9, "val_accuracy": 0.7, "lr": 1e-3}``; a row
            without ``epoch`` uses its 1-based position; non-numeric values are ignored.
        title: figure title.

    Returns:
        A figure with stacked subplots sharing the epoch axis, one line trace per metric.
    """
    def numeric(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    keys: list[str] = []
    for row in history:
        keys += [k for k, v in row.items() if k != "epoch" and numeric(v) and k not in keys]
    if not keys:
        fig = go.Figure()
        fig.update_layout(template=_TEMPLATE, title=title, xaxis_title="epoch")
        return fig
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, subplot_titles=keys, vertical_spacing=0.08)
    for i, key in enumerate(keys, start=1):
        points = [(row.get("epoch", pos), row[key]) for pos, row in enumerate(history, start=1)
                  if numeric(row.get(key))]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=key), row=i, col=1)
        fig.update_yaxes(title_text=key, row=i, col=1)
    fig.update_xaxes(title_text="epoch", row=len(keys), col=1)
    fig.update_layout(template=_TEMPLATE, title=title, height=max(300, 220 * len(keys)))
    return fig


def energy_comparison(panels: Mapping[str, Mapping[str, Any]], title: str = "Energy score: model comparison",
                      xaxis: str = "energy score S(x)", nbins: int = 40) -> go.Figure:
    """Side-by-side energy histograms, one subplot per model, each with its own image score and threshold.

    Energies of different heads live on different scales (adapters move them), so each model gets
    its own x-axis rather than one shared histogram.

    Args:
        panels: model name -> ``{"reference": [N] ID scores or None, "score": float or None,
            "threshold": float or None}``.
        title: figure title.
        xaxis: x-axis title of every subplot.
        nbins: bins per subplot.

    Returns:
        A figure with ``len(panels)`` subplots in one row; a histogram trace per non-empty reference,
        a solid "this image" line and a dashed "threshold" line per subplot when given.
    """
    names = list(panels)
    fig = make_subplots(rows=1, cols=max(len(names), 1), subplot_titles=names or None)
    for col, name in enumerate(names, start=1):
        panel = panels[name]
        ref = panel.get("reference")
        values = _finite(ref, name) if ref is not None else np.zeros(0)
        if values.size:
            lo, hi = float(values.min()), float(values.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            fig.add_trace(go.Histogram(x=values, name=f"{name}: ID reference", histnorm="probability density",
                                       xbins=dict(start=lo, end=hi, size=(hi - lo) / max(int(nbins), 1)),
                                       opacity=0.6), row=1, col=col)
        if panel.get("threshold") is not None:
            fig.add_vline(x=float(panel["threshold"]), line_dash="dash", line_color="black",
                          annotation_text="threshold", annotation_position="top left", row=1, col=col,
                          exclude_empty_subplots=False)
        if panel.get("score") is not None:
            fig.add_vline(x=float(panel["score"]), line_dash="solid", line_color="crimson", line_width=3,
                          annotation_text="this image", annotation_position="top right", row=1, col=col,
                          exclude_empty_subplots=False)
        fig.update_xaxes(title_text=xaxis, row=1, col=col)
    fig.update_yaxes(title_text="density", row=1, col=1)
    fig.update_layout(template=_TEMPLATE, title=title, barmode="overlay", legend_title_text="set")
    return fig


@functools.lru_cache(maxsize=4)
def _template_json(name: str) -> dict[str, Any]:
    """A plotly template as plain JSON data, built once (validating a template costs ~15 ms).

    Callers must not mutate the returned dict (it is shared).
    """
    return json.loads(json.dumps(pio.templates[name].to_plotly_json()))


def _vline(x: float, line: dict[str, Any], text: str, xanchor: str) -> tuple[dict, dict]:
    """The shape and annotation that ``Figure.add_vline(annotation_position="top left|right")`` makes."""
    shape = {"type": "line", "line": line, "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1,
             "yref": "y domain"}
    note = {"showarrow": False, "text": text, "x": x, "xanchor": xanchor, "xref": "x", "y": 1,
            "yanchor": "top", "yref": "y domain"}
    return shape, note


def energy_histogram_json(groups: Mapping[str, Any], score: float | None = None, threshold: float | None = None,
                          title: str = "Energy score distribution",
                          xaxis: str = "energy score S(x) (higher = more in-distribution)",
                          nbins: int = 40) -> str:
    """:func:`energy_histogram` as a plotly JSON string (its one implementation), built without
    plotly's object validation.

    Building it as plain JSON takes about a millisecond instead of the ~35 ms that ``go.Figure`` + ``add_vline`` +
    the template cost, which matters when a web server draws one per request.
    ``plotly.io.from_json`` (or ``go.Figure(json.loads(...))``) turns it back into a figure.

    Args:
        groups, score, threshold, title, xaxis, nbins: as :func:`energy_histogram`.

    Returns:
        The figure as a JSON string (``{"data": [...], "layout": {...}}``).
    """
    data = {name: _finite(values, name) for name, values in groups.items()}
    data = {name: values for name, values in data.items() if values.size}
    traces = []
    if data:
        lo = min(float(v.min()) for v in data.values())
        hi = max(float(v.max()) for v in data.values())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = {"start": lo, "end": hi, "size": (hi - lo) / max(int(nbins), 1)}
        traces = [{"type": "histogram", "x": values.tolist(), "name": name, "xbins": bins,
                   "histnorm": "probability density", "opacity": 0.55,
                   "marker": {"color": PALETTE[i % len(PALETTE)]}}
                  for i, (name, values) in enumerate(data.items())]
    lines = []
    if threshold is not None:
        lines.append(_vline(float(threshold), {"color": "black", "dash": "dash"}, "threshold", "right"))
    if score is not None:
        lines.append(_vline(float(score), {"color": "crimson", "dash": "solid", "width": 3}, "this image",
                            "left"))
    layout = {"title": {"text": title}, "barmode": "overlay", "xaxis": {"title": {"text": xaxis}},
              "yaxis": {"title": {"text": "density"}}, "legend": {"title": {"text": "set"}},
              "shapes": [shape for shape, _ in lines], "annotations": [note for _, note in lines],
              "template": _template_json(_TEMPLATE)}
    return json.dumps({"data": traces, "layout": layout})


def _regions(threshold: float, lo: float, hi: float, accept_word: str) -> tuple[list[dict], list[dict]]:
    """Shaded reject (left) / accept (right) rectangles and their labels, on either side of the threshold.

    Each label sits above the centre of its own region (a region under a fifth of the axis gets
    none, its shading still shows), so they never overlap each other or leave the plot; the
    threshold's own value goes in the legend, not in a floating label.
    """
    rect = {"type": "rect", "xref": "x", "yref": "y domain", "y0": 0, "y1": 1, "line": {"width": 0},
            "layer": "below"}
    shapes = [{**rect, "x0": lo, "x1": threshold, "fillcolor": REJECT_FILL},
              {**rect, "x0": threshold, "x1": hi, "fillcolor": ACCEPT_FILL}]
    note = {"showarrow": False, "xref": "x", "yref": "y domain", "y": 1.0, "yanchor": "bottom",
            "xanchor": "center"}
    notes = []
    for text, a, b, colour in (("◀ unknown", lo, threshold, "#A04000"), (f"{accept_word} ▶", threshold, hi, "#00704F")):
        if b - a >= 0.2 * (hi - lo):  # a label over its own region's centre: the two never overlap
            notes.append({**note, "text": text, "x": (a + b) / 2, "font": {"size": 12, "color": colour}})
    return shapes, notes


def _marker(x: float, top: float, name: str, colour: str, dash: str, symbol: str) -> dict[str, Any]:
    """A vertical marker line as a legend entry (its name carries the value: labels cannot collide)."""
    return {"type": "scatter", "x": [x, x], "y": [0, top], "mode": "lines+markers", "name": name,
            "line": {"color": colour, "dash": dash, "width": 3},
            "marker": {"symbol": ["line-ew", symbol], "size": [1, 12], "color": colour},
            "hovertemplate": f"{name}<extra></extra>"}


def score_plot_json(reference: Mapping[str, Any] | None, score: float | None, threshold: float | None, *,
                    score_name: str = "this image", xaxis: str = "energy score (higher = more like your classes)",
                    title: str = "", log_x: bool = False, nbins: int = 30, accept_word: str = "accepted",
                    extra_scores: Mapping[str, float] | None = None) -> str:
    """One image's score against a named reference distribution, with the decision regions shaded.

    Readable at 400 px: the title is short, the legend sits under the plot, the image's score and the
    threshold are legend entries with their values (never floating labels that can overlap), and
    the reject / accept regions are shaded on either side of the threshold.

    Args:
        reference: legend name -> ``[N]`` scores (e.g. ``{"ID reference: 200 rendered photos": ...}``);
            None or empty: no histogram (the markers and regions still explain the decision).
        score: the image's score, or None.
        threshold: the decision threshold, or None (no shading).
        score_name: the image's legend name (its value is appended).
        xaxis: x-axis title.
        title: figure title (keep it short).
        log_x: log-scale x-axis (the negative-label score lives in (0, 1), threshold 0.01).
        nbins: histogram bins.
        accept_word: the label of the accept region.
        extra_scores: more named scores drawn as markers (Compare puts both models on one plot).

    Returns:
        The figure as plotly JSON (``{"data": [...], "layout": {...}}``).
    """
    data = {name: _finite(v, name) for name, v in (reference or {}).items()}
    data = {name: v[v > 0] if log_x else v for name, v in data.items()}
    data = {name: v for name, v in data.items() if v.size}

    def at(v: Any) -> Any:  # plot coordinate: a log axis is drawn as log10 on a linear axis
        return np.log10(np.maximum(v, 1e-12)) if log_x else v

    marks = {score_name: score} if score is not None else {}
    marks.update({k: v for k, v in (extra_scores or {}).items() if v is not None})
    points = [float(at(v)) for v in [*marks.values(), *([threshold] if threshold is not None else [])]]
    points += [float(x) for v in data.values() for x in (at(v).min(), at(v).max())]
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - pad, hi + pad
    traces = []
    for i, (name, values) in enumerate(data.items()):
        counts, edges = np.histogram(at(values), bins=max(int(nbins), 1), range=(lo, hi))
        traces.append({"type": "bar", "x": ((edges[:-1] + edges[1:]) / 2).tolist(),
                       "y": (counts / counts.sum()).tolist(), "width": float(edges[1] - edges[0]),
                       "name": name, "opacity": 0.6, "marker": {"color": PALETTE[(i + 4) % len(PALETTE)]},
                       "hovertemplate": "%{y:.0%} of the reference<extra></extra>"})
    top = max([max(t["y"]) for t in traces] + [0.2]) * 1.05
    shapes, notes = [], []
    if threshold is not None:
        shapes, notes = _regions(float(at(threshold)), lo, hi, accept_word=accept_word)
        traces.append(_marker(float(at(threshold)), top, f"threshold: {_fmt(threshold)}", THRESHOLD_COLOUR,
                              "dash", "line-ew"))
    symbols = ("triangle-down", "diamond", "circle", "square")
    for i, (name, value) in enumerate(marks.items()):
        colour = SCORE_COLOUR if i == 0 else PALETTE[i % len(PALETTE)]
        traces.append(_marker(float(at(value)), top * (1.0 - 0.08 * i), f"{name}: {_fmt(value)}", colour,
                              "solid", symbols[i % len(symbols)]))
    layout = {"title": {"text": title, "font": {"size": 14}}, "barmode": "overlay", "bargap": 0.02,
              "xaxis": _score_axis(xaxis, lo, hi, log_x), "yaxis": {"title": {"text": "share of images"}, "rangemode": "tozero",
                                               "tickformat": ".0%"},
              "legend": {"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0},
              "margin": {"l": 50, "r": 20, "t": 60, "b": 40}, "height": 400,
              "shapes": shapes, "annotations": notes, "template": _template_json(_TEMPLATE)}
    return json.dumps({"data": traces, "layout": layout})


def _score_axis(title: str, lo: float, hi: float, log_x: bool) -> dict[str, Any]:
    """The x-axis over ``[lo, hi]``; a log axis is drawn linear in log10 with at most ~5 labelled decades."""
    axis: dict[str, Any] = {"title": {"text": title}, "range": [lo, hi], "zeroline": False}
    if log_x:
        ticks = list(range(int(np.floor(lo)), int(np.ceil(hi)) + 1))
        ticks = ticks[::-(-len(ticks) // 5)][::-1] if len(ticks) > 5 else ticks
        ticks = sorted(set(ticks) | {0})
        axis.update(tickvals=ticks, ticktext=[_fmt(10.0 ** t) for t in ticks])
    return axis


def _wrap(name: str, width: int = 18) -> str:
    """A long name over several lines (``<br>``), broken at spaces, for a narrow plot."""
    lines, line = [], ""
    for word in name.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def _fmt(value: float) -> str:
    value = float(value)
    return f"{value:.3g}" if abs(value) < 0.1 else f"{value:.2f}"


def margin_comparison_json(rows: Sequence[Mapping[str, Any]], title: str = "How far each model is from its threshold") -> str:
    """Several models' decisions on one plot: each model's margin over its own threshold, one bar each.

    Energies of different heads (and the negative-label score) live on different scales, so the
    shared axis is the margin in units of the model's own reference spread: 0 is every model's
    threshold, right of it is accepted, left of it "unknown".

    Args:
        rows: ``{"name", "margin" (float or None: no threshold), "label"}`` per model.
        title: figure title.

    Returns:
        Plotly JSON: one horizontal bar per model, the threshold at 0, regions shaded.
    """
    names = [_wrap(str(r["name"])) for r in rows]
    margins = [None if r.get("margin") is None else float(r["margin"]) for r in rows]
    known = [abs(m) for m in margins if m is not None] + [1.0]
    span = 1.15 * max(known)
    bars = {"type": "bar", "orientation": "h", "y": names, "x": [m or 0.0 for m in margins],
            "text": [f"{r['label']}" + ("" if m is not None else " (no threshold)") for r, m in zip(rows, margins)],
            "textposition": "auto", "name": "margin",
            "marker": {"color": ["#999999" if m is None else (PALETTE[2] if m >= 0 else PALETTE[5])
                                 for m in margins]}, "hoverinfo": "x+y"}
    shapes, notes = _regions(0.0, -span, span, "accepted")
    shapes.append({"type": "line", "xref": "x", "yref": "y domain", "x0": 0, "x1": 0, "y0": 0, "y1": 1,
                   "line": {"color": THRESHOLD_COLOUR, "dash": "dash"}})
    layout = {"title": {"text": title, "font": {"size": 14}}, "showlegend": False,
              "xaxis": {"title": {"text": "margin over own threshold"},
                        "range": [-span, span], "zeroline": False},
              "yaxis": {"autorange": "reversed", "automargin": True},
              "margin": {"l": 20, "r": 20, "t": 60, "b": 40}, "height": 120 + 60 * max(len(rows), 1),
              "shapes": shapes, "annotations": notes, "template": _template_json(_TEMPLATE)}
    return json.dumps({"data": [bars], "layout": layout})


# --------------------------------------------------------------------------------------------------
# Lab: a whole benchmark, one model or several
# --------------------------------------------------------------------------------------------------

_KNOWN_PREFIXES, _UNSEEN_PREFIXES = ("ID", "known"), ("semantic", "unseen")
_OTHER_COLOURS = tuple(PALETTE[i] for i in (2, 3, 4, 1, 7, 8, 9, 10, 11, 12, 13, 6))  # orange late: near vermilion


def _group_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per group name: known (``ID...``, ``known...``) blue, unseen (``semantic...``,
    ``unseen...``) vermilion, any other group (covariate sets) the next free Okabe-Ito colour."""
    out: dict[str, str] = {}
    others = iter(_OTHER_COLOURS * (1 + len(names) // len(_OTHER_COLOURS)))
    for name in names:
        if name in out:
            continue
        colour = PALETTE[0] if name.startswith(_KNOWN_PREFIXES) else PALETTE[5] if name.startswith(_UNSEEN_PREFIXES) \
            else None
        if colour is None or colour in out.values():
            colour = next(c for c in others if c not in out.values())
        out[name] = colour
    return out


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def lab_histograms(models: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, float | None] | None = None, *,
                   score: str = "energy", title: str | None = None, nbins: int = 40,
                   xaxis: str | None = None) -> go.Figure:
    """Score distributions of a whole benchmark: one row per model on a shared x axis and shared bins.

    Each row overlays its model's groups as outlined, lightly filled step histograms (share of the
    group's images per bin), so three or four groups stay readable where overlaid bars would not;
    a group has the same colour and one legend entry in every row. A model's threshold is a dashed
    line in its row (one "threshold" legend entry) and its value is in the row's title.

    Args:
        models: model name -> group name -> ``[N]`` scores (e.g. ``{"known": ..., "new styles":
            ..., "unseen shapes": ...}``); empty groups are left out. Colours: a group named
            ``ID...`` / ``known...`` is blue, ``semantic...`` / ``unseen...`` vermilion, others
            (covariate sets) the next free colour.
        thresholds: model name -> its decision threshold (or None: no line).
        score: the score's name, used in the titles.
        title: figure title (default: "<Score> score distributions").
        nbins: shared bins over the range of every model's scores.
        xaxis: x-axis title (default: "<score> score (higher = looks known)"; short, for 400 px).

    Returns:
        A figure with ``len(models)`` rows sharing the x axis: a trace per non-empty group and per
        threshold, legend under the plot.
    """
    thresholds = thresholds or {}
    names = list(models)
    data = {m: {g: _finite(v, f"{m}: {g}") for g, v in models[m].items()} for m in names}
    data = {m: {g: v for g, v in groups.items() if v.size} for m, groups in data.items()}
    title = title or f"{score[:1].upper()}{score[1:]} score distributions"
    xaxis = xaxis or f"{score} score (higher = looks known)"
    if not names:
        fig = go.Figure()
        fig.update_layout(template=_TEMPLATE, title=title, xaxis_title=xaxis)
        return fig
    lines = {m: float(thresholds[m]) for m in names if thresholds.get(m) is not None}
    values = [v for groups in data.values() for v in groups.values()]
    points = [float(x) for v in values for x in (v.min(), v.max())] + list(lines.values())
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, max(int(nbins), 1) + 1)
    colours = _group_colours([g for groups in data.values() for g in groups])
    row_titles = [m + (("<br>" if len(m) > 24 else " · ") + f"threshold {_fmt(lines[m])}" if m in lines else "")
                  for m in names]  # a long name and its threshold on two lines: fits 400 px
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=row_titles,
                        vertical_spacing=min(0.15, 0.3 / len(names)))
    shown: set[str] = set()
    for row, m in enumerate(names, start=1):
        top = 0.0
        for g, v in data[m].items():
            counts, _ = np.histogram(v, bins=edges)
            share = counts / counts.sum()
            top = max(top, float(share.max()))
            fig.add_trace(go.Scatter(
                x=[edges[0], *edges, edges[-1]], y=[0.0, *share, share[-1], 0.0], mode="lines", line_shape="hv",
                name=g, legendgroup=g, showlegend=g not in shown, fill="tozeroy",
                line={"color": colours[g], "width": 2}, fillcolor=_rgba(colours[g], 0.12),
                hovertemplate=f"{m} · {g}<br>%{{y:.1%}} of the images from %{{x:.2f}}<extra></extra>"),
                row=row, col=1)
            shown.add(g)
        if m in lines:
            fig.add_trace(go.Scatter(
                x=[lines[m], lines[m]], y=[0.0, 1.08 * top if top else 1.0], mode="lines", name="threshold",
                legendgroup="threshold", showlegend="threshold" not in shown,
                line={"color": THRESHOLD_COLOUR, "dash": "dash", "width": 2},
                hovertemplate=f"{m}: threshold {_fmt(lines[m])}<extra></extra>"), row=row, col=1)
            shown.add("threshold")
        fig.update_yaxes(title_text="share of images", tickformat=".0%", rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text=xaxis, range=[lo, hi], row=len(names), col=1)
    fig.update_xaxes(showticklabels=True, zeroline=False)
    for note in fig.layout.annotations:  # row titles: left-aligned, so a long model name fits 400 px
        note.update(x=0, xanchor="left", align="left", font={"size": 13})
    top = 70 + (16 if "<br>" in row_titles[0] else 0)
    bottom = 130 + 22 * max(0, len(shown) - 4)  # a longer legend wraps at 400 px: room for it
    height = top + bottom + (300 if len(names) == 1 else 260) * len(names)
    plot_height = height - top - bottom
    fig.update_layout(template=_TEMPLATE, title={"text": title, "font": {"size": 15}}, height=height,
                      margin={"l": 60, "r": 20, "t": top, "b": bottom}, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "top", "y": -70 / plot_height, "x": 0})
    return fig


def lab_roc(curves: Mapping[str, Mapping[str, tuple[Any, Any]]], *, score: str = "energy",
            title: str | None = None) -> go.Figure:
    """ROC curves (ID positive) of one model or several, AUROC in the legend.

    One model: a colour per curve (e.g. one per unseen set). Several models: a colour per model
    and a line style per curve kind (solid, dashed, ...). The legend, under the plot, is titled
    with the model's name (grouped under each model's name when there are several).

    Args:
        curves: model name -> curve name -> ``(positive scores, negative scores)``, e.g.
            ``{"vs known": (ID, all semantic), "vs known + new styles": (ID and covariate, all semantic)}``.
        score: the score's name, used in the default title.
        title: figure title (default: "ROC of the <score> score: unseen vs known").

    Returns:
        A figure with a line per curve and a grey dotted "chance" diagonal last.
    """
    names = list(curves)
    several = len(names) > 1
    fig = go.Figure()
    for i, m in enumerate(names):
        for j, (kind, (pos, neg)) in enumerate(curves[m].items()):
            fpr, tpr, _ = roc_curve(pos, neg)
            line = ({"color": PALETTE[i % len(PALETTE)], "dash": _DASHES[j % len(_DASHES)]} if several
                    else style(j))
            extra = {"legendgroup": m, "legendgrouptitle": {"text": _wrap(m, 28 if several else 40)}}
            fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{kind} (AUROC {auroc(pos, neg):.3f})",
                                     line={**line, "width": 2.5 if several else 2}, **extra,
                                     hovertemplate=f"{m} · {kind}<br>TPR %{{y:.2f}} at FPR %{{x:.2f}}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", hoverinfo="skip",
                             line={"dash": "dot", "color": "gray", "width": 1}))
    if title is None:
        title = f"ROC of the {score} score: unseen vs known"
    rows = 0 if several or not names else len(curves[names[0]])  # one model: a legend line per curve
    fig.update_layout(template=_TEMPLATE, title={"text": title, "font": {"size": 15}},
                      xaxis={"title": {"text": "false-positive rate (unseen accepted)"}, "range": [0, 1],
                             "constrain": "domain"},
                      yaxis={"title": {"text": "true-positive rate (known accepted)"}, "range": [0, 1.02]},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0, "groupclick": "toggleitem"},
                      margin={"l": 60, "r": 20, "t": 70, "b": 40},
                      height=(650 if several else 540) + 20 * rows)
    return fig
