"""Plotly figures for the app, the benchmark report and papers.

Energy-score histograms (ID vs generated covariate vs real covariate vs semantic OOD, the CRoFT
paper's energy-distribution plots), ROC curves, class-probability bars and training curves. Each
function returns a ``plotly.graph_objects.Figure`` and has no side effects; scores follow the
"higher = more in-distribution" convention of :mod:`croft_core.metrics`.
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

from croft_core.metrics import auroc, roc_curve, to_numpy

__all__ = ["energy_comparison", "energy_histogram", "energy_histogram_json", "probability_bars", "roc_curves",
           "training_curves"]

logger = logging.getLogger(__name__)

_TEMPLATE = "plotly_white"


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
    for name, ood in ood_sets.items():
        fpr, tpr, _ = roc_curve(id_scores, ood)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUROC {auroc(id_scores, ood):.3f})"))
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
                   "histnorm": "probability density", "opacity": 0.55} for name, values in data.items()]
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
