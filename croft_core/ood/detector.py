"""Threshold calibration for open-set rejection.

A :class:`ThresholdDetector` is fitted on scores of in-distribution samples (higher = more
in-distribution, see :mod:`croft_core.ood.scores`) so that a target fraction ``tpr`` of them is
accepted, then flags every sample scoring below the threshold as unknown. The threshold rule is
:func:`croft_core.ood.metrics.threshold_at_tpr`, the same one FPR95 uses, so a detector fitted at
tpr 0.95 rejects exactly the OOD samples that FPR95 does not count.

Scoring and thresholding stay separate, in the spirit of pytorch-ood's ``Detector`` API
(``fit`` returns ``self``, ``__call__`` forwards to ``predict``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from croft_core.errors import CroftError
from croft_core.ood.metrics import threshold_at_tpr, to_numpy

__all__ = ["NotFittedError", "ThresholdDetector"]

logger = logging.getLogger(__name__)


class NotFittedError(CroftError, RuntimeError):
    """Raised when a detector is used before :meth:`ThresholdDetector.fit`."""


class ThresholdDetector:
    """Reject samples whose score is below a threshold calibrated on ID scores.

    Args:
        tpr: fraction of ID samples to accept, in (0, 1].

    Attributes:
        threshold_: the fitted threshold (set by :meth:`fit` or :meth:`from_threshold`).
    """

    def __init__(self, tpr: float = 0.95) -> None:
        if not 0 < tpr <= 1:
            raise ValueError(f"tpr must be in (0, 1], got {tpr}; e.g. 0.95 accepts 95% of ID samples")
        self.tpr: float | None = tpr
        self.threshold_: float | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tpr={self.tpr}, threshold_={self.threshold_})"

    @classmethod
    def from_threshold(cls, value: float, tpr: float | None = None) -> ThresholdDetector:
        """Build a fitted detector from a stored threshold (e.g. from a checkpoint's config.json).

        Args:
            value: the threshold; samples with ``score >= value`` are accepted.
            tpr: the TPR it was calibrated at, if known (kept for reporting only).

        Returns:
            A detector ready for :meth:`predict`.
        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"threshold must be a finite number, got {value}")
        detector = cls(tpr=0.95 if tpr is None else tpr)
        detector.tpr = tpr
        detector.threshold_ = value
        return detector

    def fit(self, id_scores: Any) -> ThresholdDetector:
        """Choose the threshold so that at least a fraction ``tpr`` of ``id_scores`` is accepted.

        The threshold is the ``ceil(tpr * n)``-th largest ID score (equivalently the sorted scores
        at index ``floor((1 - tpr) * n)``), a lower empirical quantile with no interpolation: with
        100 distinct scores and tpr 0.95, exactly 95 are accepted; ties at the threshold are all
        accepted, so ties can only raise the accepted fraction.

        Args:
            id_scores: ``[N]`` scores of in-distribution samples (numpy or torch), N >= 1.

        Returns:
            ``self``.
        """
        self.threshold_ = threshold_at_tpr(id_scores, self.tpr if self.tpr is not None else 0.95)
        logger.debug("fitted threshold %.6g at tpr %s", self.threshold_, self.tpr)
        return self

    def _scores(self, scores: Any) -> np.ndarray:
        if self.threshold_ is None:
            raise NotFittedError("call fit() before predict()")
        arr = to_numpy(scores).astype(np.float64)
        if np.isnan(arr).any():
            raise ValueError("scores contain NaN; a NaN score cannot be accepted or rejected")
        return arr

    def predict(self, scores: Any) -> np.ndarray:
        """Flag unknown samples.

        Args:
            scores: scores of any shape (``[N]`` or a scalar), numpy or torch.

        Returns:
            Boolean numpy array of the same shape, True = unknown (``score < threshold_``).
        """
        return self._scores(scores) < self.threshold_

    def accept(self, scores: Any) -> np.ndarray:
        """Complement of :meth:`predict`: True = accepted as in-distribution (``score >= threshold_``)."""
        return self._scores(scores) >= self.threshold_

    def __call__(self, scores: Any) -> np.ndarray:
        return self.predict(scores)
