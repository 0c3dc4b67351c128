"""Classification and OOD-detection metrics as pure functions over score arrays.

Conventions (other tools, the results JSON and the app rely on them):

- Every score is **higher = more in-distribution** (see :mod:`croft_core.ood.scores`).
- ID is the **positive** class for AUROC, AUPR-In and FPR@TPR.
- AUPR-Out treats OOD as the positive class and ranks by the **negated** scores.
- AUROC is the Mann-Whitney statistic: P(ID score > OOD score) + 1/2 P(tie).
- AUPR is average precision, the step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` over distinct score
  thresholds, exactly as ``sklearn.metrics.average_precision_score`` computes it (tied scores are
  one threshold).
- The OOD metric keys are fixed (:data:`METRIC_KEYS`): ``fpr95`` **always** means the FPR at 95% ID
  TPR (:data:`FPR_TPR`), whatever TPR a caller uses for its deployment threshold.
- FPR95 is the fraction of OOD samples scoring **at or above** the threshold that keeps 95% of ID
  samples (the OpenOOD definition). The threshold is :func:`threshold_at_tpr`: the
  ``ceil(tpr * n)``-th largest ID score, so at least ``tpr`` of the ID samples are accepted. The
  same rule calibrates :class:`croft_core.ood.detector.ThresholdDetector`. (The official CRoFT code
  uses ``np.percentile(id, 5)``, which interpolates, and counts OOD with ``S > threshold``; the
  two agree up to ties and interpolation.)

Inputs may be numpy arrays, torch tensors (any device) or lists; outputs are Python floats or
dicts with fixed keys. Nothing here prints or plots.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np

__all__ = [
    "FPR_TPR",
    "METRIC_KEYS",
    "accuracy",
    "aupr",
    "auroc",
    "fpr_at_tpr",
    "full_spectrum_metrics",
    "ood_metrics",
    "reference_correct_only",
    "roc_curve",
    "threshold_at_tpr",
    "to_numpy",
]


METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")
"""The keys of every OOD-metric dict (results JSON, report, app); one place."""

FPR_TPR = 0.95
"""The ID true-positive rate of the ``fpr95`` key."""


def to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor (any device, with or without grad), array or list to numpy."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scores(x: Any, name: str) -> np.ndarray:
    """A validated 1-D, finite, non-empty float64 score array."""
    arr = to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per sample), got shape {arr.shape}; "
                         "compute a score per sample first (e.g. scoring.energy(logits))")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: OOD metrics must contain ID and OOD samples; "
                         "pass at least one score in each array")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; check the model outputs before scoring")
    return arr


def _check_tpr(tpr: float) -> None:
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}; e.g. 0.95 keeps 95% of ID samples")


def _predictions(logits_or_preds: Any) -> np.ndarray:
    arr = to_numpy(logits_or_preds)
    if arr.ndim == 2:
        return arr.argmax(axis=-1)  # [N, K] logits -> [N] predicted class
    if arr.ndim != 1:
        raise ValueError(f"logits_or_preds must be [N, K] logits or [N] predictions, got shape {arr.shape}")
    return arr


def _check_labels(preds: np.ndarray, labels: Any) -> np.ndarray:
    labels = to_numpy(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {labels.shape}")
    if labels.shape[0] != preds.shape[0]:
        raise ValueError(f"predictions and labels must have the same length, got {preds.shape[0]} and {labels.shape[0]}")
    if labels.size == 0:
        raise ValueError("labels is empty: accuracy needs at least one labelled sample")
    return labels


def accuracy(logits_or_preds: Any, labels: Any) -> float:
    """Top-1 accuracy as a fraction in [0, 1].

    Args:
        logits_or_preds: ``[N, K]`` logits (argmax is taken) or ``[N]`` predicted class indices.
        labels: ``[N]`` true class indices.

    Returns:
        The fraction of samples whose prediction equals the label.
    """
    preds = _predictions(logits_or_preds)
    labels = _check_labels(preds, labels)
    return float(np.mean(preds == labels))


def reference_correct_only(scores: Any, logits_or_preds: Any, labels: Any) -> np.ndarray:
    """Keep only the scores of correctly classified samples (the official CRoFT ID reference).

    The official code calibrates the threshold and computes AUROC with only the correctly
    classified ID samples as positives. We report the standard metrics on all ID samples and keep
    this as a parity mode::

        ref = reference_correct_only(id_scores, id_logits, id_labels)
        parity = ood_metrics(ref, ood_scores)          # CRoFT-paper style
        standard = ood_metrics(id_scores, ood_scores)  # all ID samples

    Args:
        scores: ``[N]`` scores of the ID samples.
        logits_or_preds: ``[N, K]`` logits or ``[N]`` predictions for the same samples.
        labels: ``[N]`` true class indices.

    Returns:
        ``[M]`` float64 scores of the M correctly classified samples (M >= 1).
    """
    scores = _scores(scores, "scores")
    preds = _predictions(logits_or_preds)
    labels = _check_labels(preds, labels)
    if preds.shape[0] != scores.shape[0]:
        raise ValueError(f"scores and predictions must have the same length, got {scores.shape[0]} and {preds.shape[0]}")
    correct = preds == labels
    if not correct.any():
        raise ValueError("no sample is correctly classified, so the correct-only reference is empty; "
                         "use all ID scores instead")
    return scores[correct]


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve with ID as the positive class.

    Computed from the Mann-Whitney rank statistic: the fraction of (ID, OOD) pairs in which the ID
    sample scores higher, counting ties as 1/2.

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        ood_scores: ``[M]`` scores of OOD samples.

    Returns:
        AUROC in [0, 1]; 1 = perfect separation, 0.5 = chance.
    """
    pos = _scores(id_scores, "id_scores")
    neg = np.sort(_scores(ood_scores, "ood_scores"))
    below = np.searchsorted(neg, pos, side="left")  # [N] OOD strictly below each ID score
    below_or_tied = np.searchsorted(neg, pos, side="right")  # [N] OOD at or below
    # sum(below + ties/2) = sum(below + below_or_tied) / 2, kept in integers until the division
    wins_x2 = int(below.sum(dtype=np.int64)) + int(below_or_tied.sum(dtype=np.int64))
    return wins_x2 / (2.0 * pos.size * neg.size)


def aupr(id_scores: Any, ood_scores: Any, positive: Literal["id", "ood"] = "id") -> float:
    """Area under the precision-recall curve as average precision.

    Same definition as ``sklearn.metrics.average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n``
    over the distinct score thresholds, highest first, with tied scores forming one threshold.

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        ood_scores: ``[M]`` scores of OOD samples.
        positive: ``"id"`` for AUPR-In, ``"ood"`` for AUPR-Out (OOD positive, scores negated).

    Returns:
        Average precision in [0, 1].
    """
    id_arr = _scores(id_scores, "id_scores")
    ood_arr = _scores(ood_scores, "ood_scores")
    if positive == "id":
        pos, neg = id_arr, ood_arr
    elif positive == "ood":
        pos, neg = -ood_arr, -id_arr
    else:
        raise ValueError(f"positive must be 'id' or 'ood', got {positive!r}")
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size, np.int64), np.zeros(neg.size, np.int64)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # one index per threshold
    tps = np.cumsum(is_pos)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / pos.size
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def threshold_at_tpr(id_scores: Any, tpr: float = 0.95) -> float:
    """The largest threshold that accepts at least a fraction ``tpr`` of the ID scores.

    It is the ``ceil(tpr * n)``-th largest ID score, i.e. ``sorted(id_scores)[floor((1 - tpr) * n)]``
    (computed with a rounding guard so that e.g. 0.95 * 100 gives exactly 95). Samples with
    ``score >= threshold`` are accepted; with 100 distinct scores and tpr 0.95, exactly 95 are.

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        tpr: target true-positive rate in (0, 1].

    Returns:
        The threshold as a float.
    """
    _check_tpr(tpr)
    scores = np.sort(_scores(id_scores, "id_scores"))
    n = scores.size
    n_accept = max(1, math.ceil(round(tpr * n, 9)))  # round() guards 0.95 * n landing a hair above n_accept
    return float(scores[n - n_accept])


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """False-positive rate at the threshold that keeps ``tpr`` of ID samples (FPR95 for 0.95).

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        ood_scores: ``[M]`` scores of OOD samples.
        tpr: target true-positive rate in (0, 1].

    Returns:
        Fraction of OOD samples with ``score >= threshold_at_tpr(id_scores, tpr)``.
    """
    threshold = threshold_at_tpr(id_scores, tpr)
    return float(np.mean(_scores(ood_scores, "ood_scores") >= threshold))


def roc_curve(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points with ID positive, one per distinct threshold, starting at (0, 0).

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        ood_scores: ``[M]`` scores of OOD samples.

    Returns:
        ``(fpr, tpr, thresholds)``, each ``[T + 1]`` for T distinct scores; ``thresholds[0]`` is
        ``inf`` and ``tpr[i]`` / ``fpr[i]`` are the fractions of ID / OOD with ``score >= thresholds[i]``.
    """
    id_arr = np.sort(_scores(id_scores, "id_scores"))
    ood_arr = np.sort(_scores(ood_scores, "ood_scores"))
    thresholds = np.unique(np.concatenate([id_arr, ood_arr]))[::-1]  # distinct, descending
    tpr = (id_arr.size - np.searchsorted(id_arr, thresholds, side="left")) / id_arr.size
    fpr = (ood_arr.size - np.searchsorted(ood_arr, thresholds, side="left")) / ood_arr.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


def ood_metrics(id_scores: Any, ood_scores: Any) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR95 in one dict with the fixed :data:`METRIC_KEYS`.

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        ood_scores: ``[M]`` scores of OOD samples.

    Returns:
        ``{"auroc", "aupr_in", "aupr_out", "fpr95"}``; ``fpr95`` is the FPR at 95% ID TPR. For
        another TPR call :func:`fpr_at_tpr` directly.
    """
    id_arr = _scores(id_scores, "id_scores")
    ood_arr = _scores(ood_scores, "ood_scores")
    values = (auroc(id_arr, ood_arr), aupr(id_arr, ood_arr, positive="id"),
              aupr(id_arr, ood_arr, positive="ood"), fpr_at_tpr(id_arr, ood_arr, FPR_TPR))
    return dict(zip(METRIC_KEYS, values))


def full_spectrum_metrics(id_scores: Any, covariate_scores_list: Sequence[Any],
                          ood_scores: Any) -> dict[str, float]:
    """Full-spectrum OOD detection: covariate-shifted sets count as in-distribution.

    The ID scores and every covariate-shifted set (same classes, new style or domain) are
    concatenated into the positive side; only semantic shift (unseen classes) is OOD.

    Args:
        id_scores: ``[N]`` scores of in-distribution samples.
        covariate_scores_list: sequence of ``[N_i]`` score arrays of covariate-shifted sets.
        ood_scores: ``[M]`` scores of semantic-shift OOD samples.

    Returns:
        The same dict as :func:`ood_metrics`.
    """
    if isinstance(covariate_scores_list, np.ndarray) or hasattr(covariate_scores_list, "detach"):
        raise ValueError("covariate_scores_list must be a list of 1-D score arrays, one per covariate set; "
                         "wrap a single set as [scores]")
    parts = [_scores(id_scores, "id_scores")]
    parts += [_scores(c, f"covariate_scores_list[{i}]") for i, c in enumerate(covariate_scores_list)]
    return ood_metrics(np.concatenate(parts), ood_scores)
