"""Figures have the traces, shapes and names the app and report rely on."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from croft_core.viz import energy_histogram, probability_bars, roc_curves, training_curves


def test_energy_histogram_groups_threshold_and_score():
    rng = np.random.default_rng(0)
    groups = {
        "ID": rng.normal(10, 1, 50),
        "generated covariate": torch.randn(40) + 8,
        "covariate: sketch": rng.normal(7, 1, 30),
        "semantic: unseen": np.array([]),
    }
    fig = energy_histogram(groups, score=9.0, threshold=8.5)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["ID", "generated covariate", "covariate: sketch"]
    assert all(t.histnorm == "probability density" for t in fig.data)
    assert len({(t.xbins.start, t.xbins.size) for t in fig.data}) == 1  # shared bins
    assert fig.layout.barmode == "overlay"
    shapes = {s.line.dash: s.x0 for s in fig.layout.shapes}
    assert shapes == {"dash": 8.5, "solid": 9.0}
    assert {a.text for a in fig.layout.annotations} == {"threshold", "this image"}
    assert "higher = more in-distribution" in fig.layout.xaxis.title.text


def test_energy_histogram_optional_parts():
    fig = energy_histogram({"ID": [1.0, 1.0, 1.0]})
    assert len(fig.data) == 1 and len(fig.layout.shapes) == 0
    assert len(energy_histogram({"ID": []}, threshold=0.0).data) == 0


def test_roc_curves():
    id_scores = np.arange(10.0, 20.0)
    # noise: of 100 pairs, 50 beat OOD 5..9, 25 are ID 15..19 vs OOD 10..14, 10 + 5 ties / 2 among 10..14
    fig = roc_curves(id_scores, {"unseen": np.arange(0.0, 10.0), "noise": np.arange(5.0, 15.0)})
    assert [t.name for t in fig.data] == ["unseen (AUROC 1.000)", "noise (AUROC 0.875)", "chance"]
    first = fig.data[0]
    assert first.x[0] == 0.0 and first.y[-1] == 1.0 and first.x[-1] == 1.0


def test_probability_bars_sorted_top_k():
    fig = probability_bars({"cat": 0.1, "dog": 0.6, "car": 0.05, "cow": 0.25}, top_k=3)
    assert len(fig.data) == 1
    assert list(fig.data[0].y) == ["dog", "cow", "cat"]
    assert list(fig.data[0].x) == [0.6, 0.25, 0.1]
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        probability_bars({"a": 1.0}, top_k=0)


def test_training_curves():
    history = [{"epoch": e, "loss": 1.0 / e, "val_accuracy": 0.5 + 0.1 * e, "lr": 1e-3, "note": "x"}
               for e in (1, 2, 3)]
    fig = training_curves(history)
    assert [t.name for t in fig.data] == ["loss", "val_accuracy", "lr"]
    assert list(fig.data[0].x) == [1, 2, 3]
    assert fig.layout.yaxis.title.text == "loss" and fig.layout.xaxis3.title.text == "epoch"
    assert fig.layout.template == pio.templates["plotly_white"]
    fig.to_json()  # serialisable, as gr.Plot needs
    assert len(training_curves([]).data) == 0


def test_score_plot_explains_the_decision():
    import json

    from croft_core.viz import score_plot_json

    ref = {"ID reference: 40 rendered photos": np.linspace(10, 14, 40)}
    fig = json.loads(score_plot_json(ref, score=12.1, threshold=12.2, title="t"))
    names = [t["name"] for t in fig["data"]]
    # the reference is named; score and threshold are legend entries with values, so close values
    # cannot produce overlapping labels
    assert names == ["ID reference: 40 rendered photos", "threshold: 12.20", "this image: 12.10"]
    assert {a["text"] for a in fig["layout"]["annotations"]} == {"◀ unknown", "accepted ▶"}
    rects = [s for s in fig["layout"]["shapes"] if s["type"] == "rect"]
    assert [(r["x0"] < r["x1"], r["x1"] == 12.2 or r["x0"] == 12.2) for r in rects] == [(True, True)] * 2
    assert fig["layout"]["legend"]["orientation"] == "h"  # under the plot: fits 400 px
    bars = fig["data"][0]
    assert abs(sum(bars["y"]) - 1.0) < 1e-9  # shares of the reference


def test_score_plot_log_axis_and_no_threshold():
    import json

    from croft_core.viz import score_plot_json

    fig = json.loads(score_plot_json({"ref": [0.5, 0.2, 0.0]}, score=0.002, threshold=0.01, log_x=True))
    marker = next(t for t in fig["data"] if t["name"].startswith("threshold"))
    assert marker["x"] == [-2.0, -2.0] and "0.01" in fig["layout"]["xaxis"]["ticktext"]
    bare = json.loads(score_plot_json(None, score=3.0, threshold=None))
    assert [t["name"] for t in bare["data"]] == ["this image: 3.00"] and bare["layout"]["shapes"] == []


def test_margin_comparison_and_distinct_colours():
    import json

    from croft_core.viz import PALETTE, margin_comparison_json

    fig = json.loads(margin_comparison_json([{"name": "zero-shot", "margin": -1.0, "label": "unknown"},
                                             {"name": "CRoFT · shapes · painting held out", "margin": 0.5,
                                              "label": "circle"}]))
    bar = fig["data"][0]
    assert bar["x"] == [-1.0, 0.5] and bar["y"][1] == "CRoFT · shapes ·<br>painting held out"
    assert bar["marker"]["color"][0] != bar["marker"]["color"][1]
    roc = roc_curves(np.arange(10.0), {f"set {i}": np.arange(10.0) - i for i in range(14)})
    assert len({(t.line.color, t.line.dash) for t in roc.data[:14]}) == 14 and len(set(PALETTE)) == 14
