"""Metrics: known answers, sklearn cross-checks with ties, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from croft_core.ood.metrics import (
    accuracy,
    aupr,
    auroc,
    fpr_at_tpr,
    full_spectrum_metrics,
    ood_metrics,
    reference_correct_only,
    roc_curve,
    threshold_at_tpr,
)


def test_perfect_separation():
    out = ood_metrics(np.arange(10.0, 20.0), np.arange(0.0, 10.0))
    assert out == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_reversed_separation():
    out = ood_metrics(np.arange(0.0, 10.0), np.arange(10.0, 20.0))
    assert out["auroc"] == 0.0
    assert out["fpr95"] == 1.0


def test_all_tied_is_chance():
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5


def test_auroc_hand_computed_with_tie():
    # pairs (id, ood): (2,1) win, (2,2) tie, (3,1) win, (3,2) win -> 3.5 / 4
    assert auroc([2.0, 3.0], [1.0, 2.0]) == 0.875


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(5, 300, size=2)
    id_scores = rng.normal(0.5, 1.0, n_id).round(1)
    ood_scores = rng.normal(0.0, 1.0, n_ood).round(1)
    y = np.r_[np.ones(n_id), np.zeros(n_ood)]
    s = np.r_[id_scores, ood_scores]
    assert len(np.unique(s)) < len(s)  # the data really has ties
    assert abs(auroc(id_scores, ood_scores) - roc_auc_score(y, s)) < 1e-12
    assert abs(aupr(id_scores, ood_scores, "id") - average_precision_score(y, s)) < 1e-12
    assert abs(aupr(id_scores, ood_scores, "ood") - average_precision_score(1 - y, -s)) < 1e-12
    out = ood_metrics(torch.from_numpy(id_scores), torch.from_numpy(ood_scores))
    assert abs(out["aupr_out"] - average_precision_score(1 - y, -s)) < 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_and_fpr95_match_openood_recipe(seed):
    rng = np.random.default_rng(seed)
    id_scores, ood_scores = rng.normal(1, 1, 150).round(1), rng.normal(0, 1, 120).round(1)
    y, s = np.r_[np.ones(150), np.zeros(120)], np.r_[id_scores, ood_scores]
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = roc_curve(id_scores, ood_scores)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert np.isinf(thr[0])
    # OpenOOD: FPR at the first ROC point whose TPR reaches 95%
    assert fpr_at_tpr(id_scores, ood_scores) == sk_fpr[np.argmax(sk_tpr >= 0.95)]


def test_fpr95_hand_computed():
    id_scores = np.arange(1.0, 21.0)  # 20 scores; keep 19 -> threshold 2.0
    ood_scores = np.array([0.0, 1.0, 1.5, 2.0, 2.5, 30.0, -4.0, 1.99])
    assert threshold_at_tpr(id_scores, 0.95) == 2.0
    assert fpr_at_tpr(id_scores, ood_scores, 0.95) == 3 / 8  # 2.0 (tie counts), 2.5, 30.0
    assert fpr_at_tpr(id_scores, ood_scores, 0.5) == 1 / 8  # threshold 11.0: only 30.0


def test_threshold_at_tpr_rounding():
    assert threshold_at_tpr(np.arange(100.0), 0.95) == 5.0
    assert threshold_at_tpr(np.arange(100.0), 0.9) == 10.0
    assert threshold_at_tpr(np.arange(100.0), 0.07) == 93.0
    assert threshold_at_tpr([4.0, 1.0, 3.0], 1.0) == 1.0


def test_metric_keys_are_fixed_and_fpr95_means_95_percent():
    from croft_core.ood.metrics import FPR_TPR, METRIC_KEYS

    id_scores, ood_scores = np.arange(100.0), np.arange(-50.0, 50.0)
    out = ood_metrics(id_scores, ood_scores)
    assert tuple(out) == METRIC_KEYS == ("auroc", "aupr_in", "aupr_out", "fpr95") and FPR_TPR == 0.95
    assert out["fpr95"] == fpr_at_tpr(id_scores, ood_scores, 0.95) == 0.45
    assert full_spectrum_metrics(id_scores, [], ood_scores) == out


def test_full_spectrum_counts_covariate_as_id():
    id_scores, cov_a, cov_b = np.array([5.0, 6.0]), np.array([1.0, 2.0]), np.array([3.0])
    ood_scores = np.array([0.0, 4.0])
    out = full_spectrum_metrics(id_scores, [cov_a, torch.tensor(cov_b)], ood_scores)
    assert out == ood_metrics(np.r_[id_scores, cov_a, cov_b], ood_scores)
    # 5 positives vs 2 negatives: 0.0 is below all 5, 4.0 is below 5.0 and 6.0 -> 7 of 10 pairs
    assert out["auroc"] == 0.7
    assert ood_metrics(id_scores, ood_scores)["auroc"] == 1.0  # without covariate sets
    assert full_spectrum_metrics(id_scores, [], ood_scores) == ood_metrics(id_scores, ood_scores)
    with pytest.raises(ValueError, match=r"covariate_scores_list\[1\] is empty"):
        full_spectrum_metrics(id_scores, [cov_a, []], ood_scores)
    with pytest.raises(ValueError, match="list of 1-D score arrays"):
        full_spectrum_metrics(id_scores, cov_a, ood_scores)


def test_accuracy_and_correct_only_reference():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert accuracy(logits, labels) == 0.5
    assert accuracy(np.array([0, 1, 1, 1]), labels) == 0.75
    ref = reference_correct_only(torch.tensor([10.0, 20.0, 30.0, 40.0]), logits, labels)
    np.testing.assert_array_equal(ref, [10.0, 20.0])
    with pytest.raises(ValueError, match="no sample is correctly classified"):
        reference_correct_only([1.0, 2.0], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        accuracy(logits, labels[:3])
    with pytest.raises(ValueError, match="same length"):
        reference_correct_only([1.0], logits, labels)


@pytest.mark.parametrize("fn", [auroc, aupr, fpr_at_tpr, ood_metrics])
def test_input_errors(fn):
    good = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match="id_scores is empty.*must contain ID and OOD samples"):
        fn([], good)
    with pytest.raises(ValueError, match="ood_scores is empty"):
        fn(good, np.array([]))
    with pytest.raises(ValueError, match="ood_scores contains NaN"):
        fn(good, np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="id_scores contains NaN or inf"):
        fn(np.array([np.inf, 0.0]), good)
    with pytest.raises(ValueError, match=r"id_scores must be 1-D .*\(2, 2\)"):
        fn(np.zeros((2, 2)), good)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive must be 'id' or 'ood'"):
        aupr([1.0], [0.0], positive="in")
    with pytest.raises(ValueError, match=r"tpr must be in \(0, 1\]"):
        fpr_at_tpr([1.0], [0.0], tpr=1.5)
