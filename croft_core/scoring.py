"""OOD scores as pure functions of logits or features.

Every score here follows one sign convention: **higher = more in-distribution**. A detector accepts
a sample when its score is at or above a threshold (see :mod:`croft_core.detector`).

Logits are what a CLIP head returns: ``logits = logit_scale * cos(z_img, z_text_k)``, shape
``[N, K]`` for N images and K classes.

References:
    - Energy: Liu, Wang, Owens, Li. "Energy-based Out-of-distribution Detection", NeurIPS 2020.
      CRoFT's test-time score is the energy at T = 1 on the scaled logits,
      ``S(x) = logsumexp_k(logit_scale * cos(z_img, z_text_k))`` (= minus the free energy).
    - MCM: Ming, Cai, Gu, Sun, Li, Li. "Delving into Out-of-Distribution Detection with
      Vision-Language Representations", NeurIPS 2022. Maximum softmax of cosine similarities / T.
    - MSP: Hendrycks, Gimpel. "A Baseline for Detecting Misclassified and Out-of-Distribution
      Examples in Neural Networks", ICLR 2017.
    - MaxLogit: Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song. "Scaling
      Out-of-Distribution Detection for Real-World Settings", ICML 2022.
    - KNN: Sun, Ming, Zhu, Li. "Out-of-Distribution Detection with Deep Nearest Neighbors",
      ICML 2022.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "SCORES",
    "energy",
    "knn_score",
    "max_logit",
    "mcm",
    "msp",
    "score_logits",
]

_KNN_CHUNK_ROWS = 4096  # query rows per block, so the [chunk, len(bank)] similarity matrix stays small


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}; "
                        "wrap arrays with torch.as_tensor(...)")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, K], got shape {tuple(logits.shape)}; "
                         "for a single image use logits.unsqueeze(0)")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least two classes (K >= 2), got K={logits.shape[1]}; "
                         "an OOD score over one class carries no information")
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN; check the model output before scoring")
    return logits if logits.is_floating_point() else logits.float()


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020).

    With ``temperature=1`` and CLIP's scaled logits this is CRoFT's detection score S(x).

    Args:
        logits: ``[N, K]`` logits, K >= 2.
        temperature: T > 0.

    Returns:
        ``[N]`` scores, higher = more in-distribution.
    """
    logits = _check_logits(logits)
    _check_temperature(temperature)
    return temperature * torch.logsumexp(logits / temperature, dim=-1)


def mcm(logits: torch.Tensor, temperature: float = 1.0,
        logit_scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """Maximum Concept Matching: ``max_k softmax(cos / T)_k`` (Ming et al. 2022).

    MCM is defined on cosine similarities, but our heads return ``logit_scale * cos``. Pass the
    head's ``logit_scale`` (the multiplier itself, e.g. 100.0 for CLIP, i.e.
    ``model.logit_scale.exp()`` and not the raw log parameter) to recover ``cos = logits /
    logit_scale``. With ``logit_scale=None`` the logits are taken to be cosines already. The
    paper's default T = 1 on cosines gives scores close to 1/K; only their ranking matters.

    Args:
        logits: ``[N, K]`` logits, K >= 2.
        temperature: T > 0, applied to the cosines.
        logit_scale: positive multiplier that turned cosines into ``logits``, or None.

    Returns:
        ``[N]`` scores in ``[1/K, 1]``, higher = more in-distribution.
    """
    logits = _check_logits(logits)
    _check_temperature(temperature)
    cos = logits
    if logit_scale is not None:
        if not float(logit_scale) > 0:
            raise ValueError(f"logit_scale must be > 0 (the multiplier, e.g. 100.0), got {float(logit_scale)}")
        cos = logits / logit_scale
    return torch.softmax(cos / temperature, dim=-1).amax(dim=-1)


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel 2017).

    Args:
        logits: ``[N, K]`` logits, K >= 2.

    Returns:
        ``[N]`` scores in ``[1/K, 1]``, higher = more in-distribution.
    """
    return torch.softmax(_check_logits(logits), dim=-1).amax(dim=-1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Maximum logit (Hendrycks et al. 2022).

    Args:
        logits: ``[N, K]`` logits, K >= 2.

    Returns:
        ``[N]`` scores, higher = more in-distribution.
    """
    return _check_logits(logits).amax(dim=-1)


def knn_score(features: torch.Tensor, bank: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Negative distance to the k-th nearest ID neighbour (Sun et al. 2022).

    Both ``features`` and ``bank`` are L2-normalised first. The score is ``-||q - b_(k)||``, the
    negative (not squared) euclidean distance. The official CRoFT/KNN code uses the negative
    *squared* distance; squaring is monotone on distances, so the ranking and every metric
    (AUROC, AUPR, FPR95) are identical. Queries are processed in blocks of 4096 rows, so memory is
    ``O(4096 * len(bank))`` whatever N is. A query that is itself in the bank scores 0 at k=1.

    Args:
        features: ``[N, d]`` query features (raw or normalised).
        bank: ``[M, d]`` in-distribution reference features.
        k: which neighbour, 1 <= k <= M.

    Returns:
        ``[N]`` scores in ``[-2, 0]``, higher = more in-distribution, on ``features.device``.
    """
    for name, x in (("features", features), ("bank", bank)):
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D torch.Tensor [rows, dim], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if torch.isnan(x).any():
            raise ValueError(f"{name} contain NaN; check the feature extractor")
    if features.shape[1] != bank.shape[1]:
        raise ValueError(f"features and bank must have the same width, got {features.shape[1]} "
                         f"and {bank.shape[1]}; build the bank with the same backbone")
    if not isinstance(k, int) or k < 1 or k > bank.shape[0]:
        raise ValueError(f"k must be an integer in [1, len(bank)] = [1, {bank.shape[0]}], got {k}; "
                         "use a smaller k or a larger ID bank")
    dtype = torch.promote_types(features.dtype, bank.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    queries = F.normalize(features.to(dtype), dim=-1)
    refs = F.normalize(bank.to(device=features.device, dtype=dtype), dim=-1)
    out = []
    for start in range(0, queries.shape[0], _KNN_CHUNK_ROWS):
        q = queries[start:start + _KNN_CHUNK_ROWS]  # [c, d]
        sims = q @ refs.T  # [c, M]; for unit vectors ||q - b||^2 = 2 - 2 q.b
        idx = sims.topk(k, dim=-1).indices[:, -1]  # [c] index of the k-th nearest neighbour
        # recompute the distance from the difference: exact 0 when the query is in the bank
        out.append(-(q - refs[idx]).norm(dim=-1))
    if not out:
        return queries.new_zeros(0)
    return torch.cat(out)


SCORES: dict[str, Callable[..., torch.Tensor]] = {
    "energy": energy,
    "mcm": mcm,
    "msp": msp,
    "max_logit": max_logit,
}
"""Logit-based scores by name; each maps ``[N, K]`` logits to ``[N]`` scores."""


def score_logits(name: str, logits: torch.Tensor, **kwargs) -> torch.Tensor:
    """Compute the logit-based score called ``name``.

    Args:
        name: a key of :data:`SCORES` (``energy``, ``mcm``, ``msp``, ``max_logit``).
        logits: ``[N, K]`` logits.
        **kwargs: passed to the score (e.g. ``temperature``, ``logit_scale`` for ``mcm``).

    Returns:
        ``[N]`` scores, higher = more in-distribution.
    """
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(sorted(SCORES))}")
    return SCORES[name](logits, **kwargs)
