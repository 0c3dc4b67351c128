"""What the app shows: verdict in words, plot inputs per rule, Lab table in % (croft_app.service.explain)."""

from __future__ import annotations

import numpy as np

from croft_app.service.decision import PlotReference
from croft_app.service.explain import batch_row, caption, lab_headers, lab_rows, margin, plot_inputs, verdict_markdown

REJECTED = {"label": "unknown", "accepted": False, "score": 9.0, "threshold": None, "predicted_class": "horse",
            "probabilities": {"horse": 0.9, "cat": 0.1}, "rule": "negative labels", "neg_score": 0.002,
            "neg_threshold": 0.01, "nearest_negative": "circle", "model": "zero-shot",
            "reason": "the closest known word is 'circle' (not in your list)", "notes": ["n1"], "warnings": []}


def test_one_verdict_with_reason_and_rule():
    text = verdict_markdown(REJECTED)
    assert text.startswith("## unknown") and "'circle' (not in your list)" in text
    assert "**Decided by:** a list of thousands of other words" in text and "horse" in text  # closest class, secondary
    assert "<details>" in text and "90%" not in text.split("<details>")[0]  # no competing headline
    ok = {**REJECTED, "label": "horse", "accepted": True, "reason": ""}
    assert verdict_markdown(ok).startswith("## horse") and "90% of the probability" in verdict_markdown(ok)
    none = {**ok, "rule": "none", "reason": "closed-set answer: loading"}
    assert "⚠️ closed-set answer" in verdict_markdown(none)
    assert caption(REJECTED) == "unknown (looks like 'circle')" and caption(ok) == "horse"


def test_plot_inputs_follow_the_rule():
    neg = plot_inputs(REJECTED, PlotReference(np.ones(3), np.array([0.5, 0.2]), "rendered"), "ref")
    assert (neg.score, neg.threshold, neg.log_x) == (0.002, 0.01, True) and list(neg.reference) == ["ref"]
    assert list(neg.reference["ref"]) == [0.5, 0.2]  # the rule's own score, not the energies
    energy = plot_inputs({**REJECTED, "rule": "energy (calibrated)", "threshold": 10.0},
                         PlotReference(np.array([11.0, 13.0]), np.array([0.5, 0.2]), "checkpoint"), "ref")
    assert (energy.score, energy.threshold, energy.log_x) == (9.0, 10.0, False)
    assert margin(energy) == -1.0  # one reference spread (std 1) below
    assert margin(neg) is not None and margin(neg) < 0
    assert batch_row("a.png", REJECTED) == ["a.png", "unknown", False, "horse", 0.002, 0.01, "negative labels",
                                            REJECTED["reason"]]


def test_lab_table_in_percent_summary_first_two_models():
    res = {"id": {"name": "photo", "accuracy": 0.9, "n": 10},
           "covariate": [{"name": "sketch", "accuracy": 0.5, "n": 5}, {"name": "cartoon", "accuracy": 0.7, "n": 5}],
           "semantic": [{"name": "pentagon", "n": 4, "scores": {"energy": {"auroc": 0.8, "fpr95": 0.5}}}],
           "semantic_all": {"energy": {"auroc": 0.8, "fpr95": 0.5}},
           "full_spectrum": {"accuracy": 0.7, "energy": {"auroc": 0.6, "fpr95": 0.9}}}
    rows = lab_rows({"zero-shot": res, "CRoFT": res})
    assert [r[0] for r in rows[:4]] == ["ID", "covariate (mean)", "semantic (pooled)",
                                        "full spectrum (ID + covariate vs semantic)"]
    assert rows[0][3] == 90.0 and rows[1][3] == 60.0 and rows[2][4:6] == [80.0, 50.0]
    assert len(rows[0]) == len(lab_headers(["zero-shot", "CRoFT"])) == 9
    assert [r[0] for r in rows[4:]] == ["sketch", "cartoon", "pentagon"]


def test_pooled_groups_for_a_two_model_lab_figure():
    from croft_app.service.explain import pooled_groups

    groups = pooled_groups({"ID: photo": [1.0, 2.0], "covariate: sketch": [3.0], "covariate: cartoon": [4.0],
                            "semantic: pentagon": [5.0], "semantic: ring": [6.0, 7.0]})
    assert {k: v.tolist() for k, v in groups.items()} == {"known": [1.0, 2.0], "new styles": [3.0, 4.0],
                                                          "unseen shapes": [5.0, 6.0, 7.0]}


def test_lab_names_each_models_threshold_rule_and_flags_different_kinds():
    from croft_app.service.explain import lab_rule_statement, lab_rules

    def res(tpr=0.95, split="val", value=2.5):
        return {"threshold": {"score": "energy", "tpr": tpr, "value": value, "fitted_on": split}}

    same = lab_rules({"zero-shot": res(value=1.0), "croft": res(value=3.0)})
    assert {r["rule"] for r in same.values()} == {"energy (calibrated)"}
    assert [r["threshold"] for r in same.values()] == [1.0, 3.0]
    text = lab_rule_statement(same)
    assert text.startswith("**Rule: the same for both models**") and "95% of the benchmark's known 'val'" in text
    assert "AUROC and FPR95 do not depend on it" in text
    for other in (res(tpr=0.9), res(split="test"), {"threshold": {}}, {}):
        rules = lab_rules({"zero-shot": res(), "croft": other})
        assert len({r["rule"] for r in rules.values()}) == 2
        assert "not directly comparable" in lab_rule_statement(rules)
    assert lab_rule_statement(lab_rules({"zero-shot": {}})).startswith("**Rule: none**")
