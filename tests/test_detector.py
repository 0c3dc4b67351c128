"""ThresholdDetector: exact acceptance counts and the fitted/unfitted contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from croft_core.ood.detector import NotFittedError, ThresholdDetector
from croft_core.ood.metrics import fpr_at_tpr


def test_exactly_95_of_100_distinct_scores_accepted():
    scores = np.random.default_rng(0).permutation(np.arange(100, dtype=float))
    det = ThresholdDetector(tpr=0.95).fit(scores)
    assert det.threshold_ == 5.0
    assert det.accept(scores).sum() == 95
    assert det.predict(scores).sum() == 5


@pytest.mark.parametrize("tpr, n, accepted", [(0.9, 100, 90), (0.8, 10, 8), (0.95, 10, 10), (1.0, 7, 7), (0.5, 3, 2)])
def test_at_least_tpr_accepted(tpr, n, accepted):
    scores = np.linspace(-1.0, 1.0, n)
    assert ThresholdDetector(tpr).fit(scores).accept(scores).sum() == accepted


def test_torch_input_and_numpy_bool_output():
    det = ThresholdDetector(0.5).fit(torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True))
    out = det(torch.tensor([0.0, 3.0, 5.0]))
    assert isinstance(out, np.ndarray) and out.dtype == bool
    assert out.tolist() == [True, False, False]
    assert det.accept(torch.tensor([0.0, 3.0, 5.0])).tolist() == [False, True, True]


def test_scalar_score():
    det = ThresholdDetector.from_threshold(1.5)
    assert bool(det.predict(1.0)) is True
    assert bool(det.accept(1.5)) is True


def test_predict_before_fit_raises():
    det = ThresholdDetector()
    with pytest.raises(NotFittedError, match=r"call fit\(\) before predict\(\)"):
        det.predict([1.0])
    with pytest.raises(NotFittedError):
        det.accept([1.0])
    assert issubclass(NotFittedError, RuntimeError)


def test_fit_errors():
    with pytest.raises(ValueError, match="empty"):
        ThresholdDetector().fit([])
    with pytest.raises(ValueError, match="NaN"):
        ThresholdDetector().fit([1.0, float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        ThresholdDetector().fit([1.0]).predict([float("nan")])


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.01])
def test_bad_tpr(tpr):
    with pytest.raises(ValueError, match=r"tpr must be in \(0, 1\]"):
        ThresholdDetector(tpr)


def test_from_threshold():
    det = ThresholdDetector.from_threshold(2.5, tpr=0.9)
    assert det.threshold_ == 2.5 and det.tpr == 0.9
    assert det.predict(np.array([2.0, 2.5, 3.0])).tolist() == [True, False, False]
    assert ThresholdDetector.from_threshold(1.0).tpr is None
    with pytest.raises(ValueError, match="finite"):
        ThresholdDetector.from_threshold(float("nan"))


def test_detector_agrees_with_fpr95():
    rng = np.random.default_rng(3)
    id_scores, ood_scores = rng.normal(1, 1, 200).round(1), rng.normal(0, 1, 300).round(1)
    det = ThresholdDetector(0.95).fit(id_scores)
    assert det.accept(ood_scores).mean() == fpr_at_tpr(id_scores, ood_scores, 0.95)
