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
