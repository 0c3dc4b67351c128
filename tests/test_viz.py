"""Figures have the traces, shapes and names the app and report rely on."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from croft_core.runs.figures import energy_histogram, probability_bars, roc_curves, training_curves


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

    from croft_core.runs.figures import score_plot_json

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

    from croft_core.runs.figures import score_plot_json

    fig = json.loads(score_plot_json({"ref": [0.5, 0.2, 0.0]}, score=0.002, threshold=0.01, log_x=True))
    marker = next(t for t in fig["data"] if t["name"].startswith("threshold"))
    assert marker["x"] == [-2.0, -2.0] and "0.01" in fig["layout"]["xaxis"]["ticktext"]
    bare = json.loads(score_plot_json(None, score=3.0, threshold=None))
    assert [t["name"] for t in bare["data"]] == ["this image: 3.00"] and bare["layout"]["shapes"] == []


def test_margin_comparison_and_distinct_colours():
    import json

    from croft_core.runs.figures import PALETTE, margin_comparison_json

    fig = json.loads(margin_comparison_json([{"name": "zero-shot", "margin": -1.0, "label": "unknown"},
                                             {"name": "CRoFT · shapes · painting held out", "margin": 0.5,
                                              "label": "circle"}]))
    bar = fig["data"][0]
    assert bar["x"] == [-1.0, 0.5] and bar["y"][1] == "CRoFT · shapes ·<br>painting held out"
    assert bar["marker"]["color"][0] != bar["marker"]["color"][1]
    roc = roc_curves(np.arange(10.0), {f"set {i}": np.arange(10.0) - i for i in range(14)})
    assert len({(t.line.color, t.line.dash) for t in roc.data[:14]}) == 14 and len(set(PALETTE)) == 14


def _lab_runs():
    rng = np.random.default_rng(0)
    groups = {"known": rng.normal(11, 1, 300), "new styles": rng.normal(6, 2, 900),
              "unseen shapes": rng.normal(8.5, 1.5, 420)}
    return {"zero-shot": groups, "CRoFT · shapes · painting held out": {k: v + 0.3 for k, v in groups.items()}}


def test_lab_histograms_one_row_per_model_few_groups_shared_x():
    from croft_core.runs.figures import lab_histograms

    runs = _lab_runs()
    fig = lab_histograms(runs, thresholds={"zero-shot": 9.31, "CRoFT · shapes · painting held out": 9.68})
    groups = [t for t in fig.data if t.legendgroup != "threshold"]
    lines = [t for t in fig.data if t.legendgroup == "threshold"]
    # one facet per model, three groups each (not six overlaid), a threshold line in each facet
    assert [(t.yaxis, t.name) for t in groups] == [(y, g) for y in ("y", "y2")
                                                  for g in ("known", "new styles", "unseen shapes")]
    assert [(t.yaxis, t.x[0]) for t in lines] == [("y", 9.31), ("y2", 9.68)]
    assert {t.xaxis for t in fig.data} <= {"x", "x2"} and fig.layout.xaxis.matches == "x2"  # shared x
    # the legend lists each group once, in the same colour in both facets, and the threshold once
    assert [t.name for t in fig.data if t.showlegend is not False] == ["known", "new styles", "unseen shapes",
                                                                       "threshold"]
    colours = {(t.name, t.line.color) for t in groups}
    assert len(colours) == 3 and len({c for _, c in colours}) == 3
    # titles name the score and each model (with its threshold)
    titles = [a.text for a in fig.layout.annotations]
    assert any("zero-shot" in t and "9.31" in t for t in titles)
    assert any("painting held out" in t and "9.68" in t for t in titles)
    assert "energy" in fig.layout.title.text.lower() and "energy score" in fig.layout.xaxis2.title.text
    assert fig.layout.yaxis.title.text == fig.layout.yaxis2.title.text == "share of images"
    assert fig.layout.legend.orientation == "h"  # under the plot: fits 400 px
    for t in groups:  # steps from 0 back to 0; each bin's height is a share of the group's own images
        assert t.y[0] == t.y[-1] == 0.0 and t.y[-2] == t.y[-3] and abs(sum(t.y[1:-2]) - 1.0) < 1e-9
    fig.to_json()


def test_lab_histograms_one_model_without_threshold_and_detail_groups():
    from croft_core.runs.figures import lab_histograms

    groups = {"ID: photo": [10.0, 11.0, 12.0], "covariate: sketch": [5.0, 6.0], "covariate: painting": [7.0],
              "generated covariate": [11.5], "semantic: all 14 unseen set(s)": [8.0, 9.0], "empty": []}
    fig = lab_histograms({"zero-shot": groups}, thresholds={"zero-shot": None})
    assert [t.name for t in fig.data] == list(groups)[:-1]  # empty groups left out, no threshold line
    assert len({t.line.color for t in fig.data}) == 5  # every group its own colour
    assert "yaxis2" not in fig.layout and "zero-shot" in fig.layout.annotations[0].text
    assert len(lab_histograms({}).data) == 0


def test_lab_roc_colour_per_model_dash_per_kind():
    from croft_core.runs.figures import lab_roc

    ids, sem, cov = np.arange(10.0, 20.0), np.arange(0.0, 10.0), np.arange(5.0, 15.0)
    curves = {m: {"vs known": (ids + d, sem), "vs known + new styles": (np.concatenate([ids, cov]) + d, sem)}
              for m, d in (("zero-shot", 0.0), ("CRoFT", -5.0))}
    fig = lab_roc(curves)
    lines = [t for t in fig.data if t.name != "chance"]
    assert len(lines) == 4 and fig.data[-1].name == "chance"
    assert [(t.legendgroup, t.line.dash) for t in lines] == [("zero-shot", "solid"), ("zero-shot", "dash"),
                                                            ("CRoFT", "solid"), ("CRoFT", "dash")]
    assert lines[0].line.color == lines[1].line.color != lines[2].line.color == lines[3].line.color
    assert lines[0].legendgrouptitle.text == "zero-shot" and lines[0].name == "vs known (AUROC 1.000)"
    assert lines[2].name == "vs known (AUROC 0.875)"
    assert "false-positive" in fig.layout.xaxis.title.text and "true-positive" in fig.layout.yaxis.title.text
    assert fig.layout.legend.orientation == "h"


def test_lab_roc_one_model_colour_per_set():
    from croft_core.runs.figures import lab_roc

    ids = np.arange(10.0, 20.0)
    fig = lab_roc({"zero-shot": {f"set {i}": (ids, ids - i) for i in range(5)}})
    lines = fig.data[:-1]
    assert [t.name.split(" (")[0] for t in lines] == [f"set {i}" for i in range(5)]
    assert len({t.line.color for t in lines}) == 5 and {t.line.dash for t in lines} == {"solid"}
    assert lines[0].legendgrouptitle.text == "zero-shot"  # the model is named over the legend
    assert fig.layout.title.text == "ROC of the energy score: unseen vs known"
