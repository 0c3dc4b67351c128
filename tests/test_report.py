"""Bench summaries and tables: the sweep table (one column per value, plus the average over seeds)."""

from __future__ import annotations

import math

import pytest

from croft_core.report import markdown_table, sweep_summary


def _run(method: str, seed: int, acc: float, cov: float) -> dict:
    return {"benchmark": "b", "backbone": "x", "method": method, "seed": seed, "shots": 1,
            "id": {"accuracy": acc}, "covariate": [{"name": "c", "accuracy": cov}]}


def test_average_is_the_mean_of_the_columns_and_its_std_is_over_seeds():
    runs = {"a": [_run("m", 1, 0.5, 0.1), _run("m", 2, 0.7, 0.3)],
            "b": [_run("m", 1, 0.9, 0.5), _run("m", 2, 0.7, 0.1)]}
    summary = sweep_summary("heldout", runs)
    row = summary["tables"]["id.accuracy"]["methods"]["m"]
    assert math.isclose(row["a"]["mean"], 0.6) and math.isclose(row["b"]["mean"], 0.8)
    assert math.isclose(row["average"]["mean"], 0.7)
    # per-seed averages are 0.7 and 0.7: no spread over seeds, though each column has one
    assert math.isclose(row["average"]["std"], 0.0, abs_tol=1e-12) and row["average"]["n"] == 2
    cov = summary["tables"]["covariate.mean_accuracy"]["methods"]["m"]
    assert math.isclose(cov["average"]["mean"], 0.25)
    assert summary["methods"]["m"]["id.accuracy"] == row["average"]
    table = markdown_table(summary)
    assert "| method | a | b | average |" in table and "| m | 60.0 ± 14.1 | 80.0 ± 14.1 | 70.0 ± 0.0 |" in table


def test_a_metric_missing_from_one_value_has_no_average():
    runs = {"a": [_run("m", 1, 0.5, 0.1)], "b": [{**_run("m", 1, 0.9, 0.5), "covariate": []}]}
    row = sweep_summary("k", runs)["tables"]["covariate.mean_accuracy"]["methods"]["m"]
    assert row["b"] is None and row["average"] is None


def test_sweep_needs_runs():
    with pytest.raises(ValueError, match="no runs"):
        sweep_summary("k", {})
