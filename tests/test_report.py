"""Bench summaries and tables: the sweep table (one column per value, plus the average over seeds)."""

from __future__ import annotations

import math

import numpy as np

import pytest

from croft_core.runs.report import markdown_table, sweep_summary


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


def _bench_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"croft_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shapes_results_uses_the_library_sweep_tables_for_both_run_layouts(tmp_path):
    """bench/shapes_results.py reads one-style folders and `croft bench` sweep folders alike."""
    import json

    results = _bench_script("shapes_results")

    def write(folder, style, method, seed, cov):
        folder.mkdir(parents=True, exist_ok=True)
        run = {**_run(method, seed, 0.9, cov), "benchmark": f"shapes_dg_{style}",
               "covariate": [{"name": style, "accuracy": cov}]}
        (folder / f"{method}_seed{seed}.json").write_text(json.dumps(run))

    for seed, cov in ((1, 0.4), (2, 0.6)):
        write(tmp_path / "shapes_dg_painting" / "sgd", "painting", "croft", seed, cov)  # one style
        write(tmp_path / "shapes_dg" / "sgd" / "sketch", "sketch", "croft", seed, cov + 0.2)  # a sweep
        write(tmp_path / "shapes_dg" / "fixed" / "sketch", "sketch", "zeroshot", seed, 0.5)
    runs = results.dg_runs(tmp_path)
    assert sorted(runs) == ["painting", "sketch"] and len(runs["sketch"]) == 4
    text = results.dg_tables(runs)
    assert "| method | sketch | painting | average |" in text
    assert "| zeroshot | 50.0 [50.0, 50.0] | – | – |" in text  # zero-shot was not run with painting held out
    # mean [95% t-interval] over 2 seeds: t(0.975, 1) = 12.706, standard error 0.1 (sketch 0.6, 0.8;
    # painting 0.4, 0.6; the average per seed 0.5, 0.7)
    assert "| croft | 70.0 [-57.1, 197.1] | 50.0 [-77.1, 177.1] | 60.0 [-67.1, 187.1] |" in text
    assert "paired differences" in text.lower()
    assert text.index("| zeroshot |") < text.index("| croft |")  # the method order of the tables


def test_shapes_results_pairs_crofts_ablations_with_croft():
    """The ablation table is each ablation minus CRoFT, seed by seed; other methods stay out of it."""
    results = _bench_script("shapes_results")
    per_seed = {"croft": {1: {"k": 0.5}, 2: {"k": 0.7}}, "croft_noedr": {1: {"k": 0.4}, 2: {"k": 0.6}},
                "croft_clean": {1: {"k": 0.6}, 2: {"k": 0.7}}, "zeroshot": {1: {"k": 0.9}, 2: {"k": 0.9}}}
    text = results.ablation_markdown(per_seed, ["k"])
    assert "| k | croft_noedr | -10.0 [-10.0, -10.0] worse |" in text
    assert "| k | croft_clean | +5.0 [-58.5, +68.5] no detectable difference |" in text
    assert "zeroshot" not in text and "best other" not in text
    assert results.ablation_markdown({"zeroshot": per_seed["zeroshot"]}, ["k"]) == ""


# ---- intervals and paired differences ------------------------------------------------------------

def test_t_interval_known_value():
    from croft_core.runs.report import summarize, t_interval

    lo, hi = t_interval([0.1, 0.2, 0.3])  # mean 0.2, sd 0.1, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert lo == pytest.approx(0.2 - half, abs=1e-6) and hi == pytest.approx(0.2 + half, abs=1e-6)
    assert t_interval([0.5]) is None
    runs = [_run("m", s, a, 0.0) for s, a in ((1, 0.1), (2, 0.2), (3, 0.3))]
    assert summarize(runs)["methods"]["m"]["id.accuracy"]["ci95"] == pytest.approx([0.2 - half, 0.2 + half])


def test_paired_difference_is_per_seed_and_says_better_only_outside_zero():
    from croft_core.runs.report import NO_DIFFERENCE, paired_difference, summarize

    # a beats b by exactly 0.02 on every seed although the seeds spread by 0.3: paired -> better
    a = {1: 0.52, 2: 0.72, 3: 0.92}
    b = {1: 0.50, 2: 0.70, 3: 0.90}
    d = paired_difference(a, b, "id.accuracy")
    assert d["mean"] == pytest.approx(0.02) and d["verdict"] == "better" and d["n"] == 3
    assert paired_difference(b, a, "id.accuracy")["verdict"] == "worse"
    assert paired_difference(a, b, "semantic_all.energy.fpr95")["verdict"] == "worse"  # lower is better
    noisy = paired_difference({1: 0.6, 2: 0.5, 3: 0.7}, {1: 0.5, 2: 0.6, 3: 0.6}, "id.accuracy")
    assert noisy["verdict"] == NO_DIFFERENCE and noisy["ci95"][0] < 0 < noisy["ci95"][1]
    assert paired_difference({1: 0.9}, {1: 0.1}, "id.accuracy")["verdict"] == NO_DIFFERENCE  # one seed
    assert paired_difference({1: 0.9}, {2: 0.1}, "id.accuracy") is None  # no common seed

    runs = [_run(m, s, acc[s], 0.0) for m, acc in (("zeroshot", b), ("croft", a), ("other", {1: 0.4, 2: 0.9, 3: 0.6}))
            for s in (1, 2, 3)]
    paired = summarize(runs)["paired"]["id.accuracy"]
    assert paired["croft"]["vs_zeroshot"]["verdict"] == "better"
    assert paired["croft"]["vs_best_other"]["other"] == "zeroshot"  # 0.70 mean beats other's 0.633
    assert paired["zeroshot"]["vs_best_other"]["other"] == "croft"
    assert "vs_zeroshot" not in paired["zeroshot"]
    text = markdown_table(summarize(runs))
    assert "| croft |" in text


def test_statistics_markdown_shows_intervals_verdicts_and_search():
    from croft_core.runs.report import statistics_markdown, summarize

    runs = []
    for s, (z, c) in enumerate(((0.5, 0.52), (0.7, 0.72), (0.9, 0.92)), start=1):
        runs.append(_run("zeroshot", s, z, 0.0))
        runs.append({**_run("croft", s, c, 0.0), "search": {"budget": 2, "chosen": {"lr": 0.02, "lambda2": 5.0},
                                                             "on_edge": ["lr"], "val_accuracy": 0.8}})
    text = statistics_markdown(summarize(runs))
    assert "| croft | 72.0 [" in text  # mean [interval]
    assert "+2.0 [+2.0, +2.0] better" in text
    assert "| croft | 1 | lr=0.02, lambda2=5 | lr | 80.0 |" in text


def test_report_gives_each_unseen_sets_rejection_at_95_acceptance():
    """Constructed scores with a known answer: 100 known images scored 0..99 (95% accepted at >= 5);
    the set 'far' scores below every known image (all rejected), the set 'half' has 50 (seed 1) and
    25 (seed 2) of 100 images above the threshold: rejected 0.5 and 0.75, mean 0.625."""
    from croft_core.ood.metrics import ood_metrics
    from croft_core.runs.report import rejection_at_tpr95, statistics_markdown, summarize, sweep_summary

    known = np.arange(100.0)
    runs = []
    for seed, above in ((1, 50), (2, 25)):
        half = np.r_[np.full(above, 50.0), np.full(100 - above, 4.0)]  # 4 < the threshold 5
        semantic = [{"name": "far", "scores": {"energy": ood_metrics(known, np.full(30, -1.0))}},
                    {"name": "half", "scores": {"energy": ood_metrics(known, half)}}]
        runs.append({**_run("croft", seed, 0.8, 0.0), "semantic": semantic})
    table = rejection_at_tpr95(runs)["croft"]["energy"]
    assert table["far"]["mean"] == 1.0 and table["half"]["mean"] == pytest.approx(0.625)
    assert table["half"]["n"] == 2 and table["half"]["std"] == pytest.approx(np.std([0.5, 0.75], ddof=1))
    summary = summarize(runs)
    assert summary["rejection_at_tpr95"]["croft"]["energy"]["half"]["mean"] == pytest.approx(0.625)
    text = statistics_markdown(summary)
    assert "| method | score | far | half |" in text and "| croft | energy | 100.0 [100.0, 100.0] | 62.5 [" in text
    swept = sweep_summary("heldout", {"a": runs, "b": runs})
    assert swept["rejection_at_tpr95"]["croft"]["energy"]["half (heldout=b)"]["mean"] == pytest.approx(0.625)
