"""OOD scores as pure functions of logits or features.

Every score here follows one sign convention: **higher = more in-distribution**. A detector accepts
a sample when its score is at or above a threshold (see :mod:`croft_core.ood.detector`).

Logits are what a head returns, shape ``[N, K]`` for N images and K classes: for CLIP-like heads
``logit_scale * cos(z_img, z_text_k)``, but not for every head (Tip-Adapter adds a cache term, a
linear probe has its own weights). Scores that are defined on **cosines** (MCM, NegLabel) therefore
take the cosines to the class texts, never logits divided by a scale.

:data:`SCORES` is the one registry of named scores; :func:`score_all` computes every score that a
:class:`ScoreInputs` has the inputs for (what the evaluation loops over).

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
    - GL-MCM: Miyai, Yu, Irie, Aizawa. "Zero-Shot In-Distribution Detection in Multi-Object
      Settings Using Vision-Language Foundation Models" (GL-MCM), 2023: MCM of the global feature
      plus the largest MCM over the local features.
    - NegLabel: Jiang, Liu, Wang, Yang, Han. "Negative Label Guided OOD Detection with Pretrained
      Vision-Language Models", ICLR 2024 (the negatives are mined in :mod:`croft_core.ood.negatives`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "SCORES",
    "ScoreInputs",
    "energy",
    "glmcm",
    "knn_score",
    "max_logit",
    "mcm",
    "msp",
    "neglabel",
    "score_all",
]

_KNN_CHUNK_ROWS = 4096  # query rows per block, so the [chunk, len(bank)] similarity matrix stays small


def _check_logits(logits: torch.Tensor, min_classes: int = 2) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}; "
                        "wrap arrays with torch.as_tensor(...)")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, K], got shape {tuple(logits.shape)}; "
                         "for a single image use logits.unsqueeze(0)")
    if logits.shape[1] < min_classes:
        why = ("an OOD score over one class carries no information" if min_classes == 2
               else "give the class texts' cosines")
        raise ValueError(f"logits need at least {'two classes (K >= 2)' if min_classes == 2 else 'one class'}, "
                         f"got K={logits.shape[1]}; {why}")
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


def mcm(cosines: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Maximum Concept Matching: ``max_k softmax(cos / T)_k`` (Ming et al. 2022).

    MCM is defined on the cosine similarities between the (embedded) image and the class texts, for
    every head: pass those cosines, not a head's logits (Tip-Adapter's logits include a cache term,
    so ``logits / logit_scale`` is not a cosine). The paper's default T = 1 gives scores close to
    1/K; only their ranking matters.

    Args:
        cosines: ``[N, K]`` cosine similarities, K >= 2.
        temperature: T > 0.

    Returns:
        ``[N]`` scores in ``[1/K, 1]``, higher = more in-distribution.
    """
    cosines = _check_logits(cosines)
    _check_temperature(temperature)
    return torch.softmax(cosines / temperature, dim=-1).amax(dim=-1)


def glmcm(cosines: torch.Tensor, local_cosines: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """GL-MCM: ``MCM(global) + max_p max_k softmax(cos_p / T)_k`` (Miyai et al. 2023).

    Args:
        cosines: ``[N, K]`` cosines of the global image features to the class texts.
        local_cosines: ``[N, P, K]`` cosines of the P local features (attention-pool positions or
            patches) of each image to the same class texts.
        temperature: T > 0 (the paper's 1).

    Returns:
        ``[N]`` scores in ``[2/K, 2]``, higher = more in-distribution.
    """
    global_mcm = mcm(cosines, temperature)
    if local_cosines.ndim != 3 or local_cosines.shape[0] != cosines.shape[0] \
            or local_cosines.shape[2] != cosines.shape[1] or not local_cosines.shape[1]:
        raise ValueError(f"local_cosines must be [N, P, K] with N, K = {tuple(cosines.shape)} and P >= 1, "
                         f"got {tuple(local_cosines.shape)}")
    local = torch.softmax(local_cosines.to(global_mcm.dtype) / temperature, dim=-1)  # [N, P, K]
    return global_mcm + local.amax(dim=(1, 2))


def neglabel(cosines: torch.Tensor, negative_cosines: torch.Tensor, temperature: float = 0.01,
             groups: torch.Tensor | None = None) -> torch.Tensor:
    """NegLabel score ``sum_ID exp(cos/T) / sum_{ID u neg} exp(cos/T)`` (Jiang et al. 2024).

    With ``groups`` (the paper's grouping strategy) the negatives are split into G groups, the score
    is computed against each group alone and the G scores are averaged. Each group's ratio is
    computed stably as ``sigmoid(logsumexp(cos_ID / T) - logsumexp(cos_group / T))``.

    Args:
        cosines: ``[N, K]`` cosines of the embedded images to the K class texts.
        negative_cosines: ``[N, M]`` cosines to the M negative labels.
        temperature: T > 0 (the paper's 0.01).
        groups: ``[G, g]`` long tensor of indices into the M negatives, or None for one group.

    Returns:
        ``[N]`` scores in ``(0, 1)``, higher = more in-distribution.
    """
    cosines = _check_logits(cosines, min_classes=1)  # one class vs the negatives is still informative
    _check_temperature(temperature)
    if negative_cosines.ndim != 2 or negative_cosines.shape[0] != cosines.shape[0] or not negative_cosines.shape[1]:
        raise ValueError(f"negative_cosines must be [N, M] with N = {cosines.shape[0]} and M >= 1, got "
                         f"{tuple(negative_cosines.shape)}")
    pos = torch.logsumexp(cosines / temperature, dim=-1)  # [N]
    neg = negative_cosines.to(pos.dtype) / temperature  # [N, M]
    if groups is None:
        return torch.sigmoid(pos - torch.logsumexp(neg, dim=-1))
    grouped = neg[:, groups.to(neg.device)]  # [N, G, g]
    return torch.sigmoid(pos[:, None] - torch.logsumexp(grouped, dim=-1)).mean(dim=-1)


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


@dataclass(frozen=True)
class ScoreInputs:
    """What a head produced for N images; each registered score reads the fields it needs.

    Attributes:
        logits: ``[N, K]`` the head's logits.
        cosines: ``[N, K]`` cosines of the embedded images to the (adapted) class texts.
        embedded: ``[N, d]`` embedded image features (KNN), or None.
        bank: ``[B, d]`` embedded ID reference features (KNN), or None (no KNN score).
        negative_cosines: ``[N, M]`` cosines to negative labels (NegLabel), or None.
        local_cosines: ``[N, P, K]`` cosines of local features to the class texts (GL-MCM), or None.
        negative_groups: ``[G, g]`` NegLabel's groups of negatives, or None for one group.
        knn_k: KNN's neighbour rank (capped at ``len(bank)``).
        mcm_temperature: MCM's temperature on the cosines.
        neg_temperature: NegLabel's temperature on the cosines.
    """

    logits: torch.Tensor
    cosines: torch.Tensor
    embedded: torch.Tensor | None = None
    bank: torch.Tensor | None = None
    negative_cosines: torch.Tensor | None = None
    negative_groups: torch.Tensor | None = None
    local_cosines: torch.Tensor | None = None
    knn_k: int = 1
    mcm_temperature: float = 1.0
    neg_temperature: float = 0.01


def _knn(s: ScoreInputs) -> torch.Tensor | None:
    if s.bank is None or not len(s.bank) or s.embedded is None:
        return None
    return knn_score(s.embedded, s.bank, k=min(s.knn_k, len(s.bank)))


def _neglabel(s: ScoreInputs) -> torch.Tensor | None:
    if s.negative_cosines is None:
        return None
    return neglabel(s.cosines, s.negative_cosines, s.neg_temperature, s.negative_groups)


SCORES: dict[str, Callable[[ScoreInputs], torch.Tensor | None]] = {
    "energy": lambda s: energy(s.logits),
    "mcm": lambda s: mcm(s.cosines, s.mcm_temperature),
    "msp": lambda s: msp(s.logits),
    "max_logit": lambda s: max_logit(s.logits),
    "knn": _knn,
    "neglabel": _neglabel,
    "glmcm": lambda s: None if s.local_cosines is None else glmcm(s.cosines, s.local_cosines, s.mcm_temperature),
}
"""Every OOD score by name: ``ScoreInputs -> [N]`` scores, or None when its inputs are absent."""


def score_all(inputs: ScoreInputs, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Every score of :data:`SCORES` (or of ``names``) that ``inputs`` has the inputs for.

    Args:
        inputs: the head's outputs for N images.
        names: a subset of :data:`SCORES` (default: all, in registry order).

    Returns:
        ``{name: [N] scores}``, higher = more in-distribution; scores whose inputs are absent
        (no bank, no negatives) are left out.
    """
    unknown = [n for n in names or () if n not in SCORES]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; choose from {', '.join(SCORES)}")
    out = {}
    for name in names or tuple(SCORES):
        value = SCORES[name](inputs)
        if value is not None:
            out[name] = value
    return out
