"""Baseline heads that run on the same cached features and trainer as CRoFT.

Every head maps raw CLIP image features ``f [N, d]`` and class text features ``t [K, d]`` to logits
``[N, K]``, and exposes ``embed_image(f) -> [N, d]`` (unit vectors) for feature-space scores (KNN).

- :class:`ZeroShotHead` — CLIP zero-shot: ``tau * cos(f, t)``.
- :class:`ClipAdapterHead` — CLIP-Adapter (Gao et al., IJCV 2024): image-side bottleneck MLP
  (reduction 4, ReLU) mixed residually with ratio 0.2, as in the CRoFT repo's baseline.
- :class:`TipAdapterHead` — Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of the
  few-shot training features with trainable keys; ``alpha=1, beta=1.17`` defaults as the repo.
- :class:`LinearProbeHead` — a linear classifier on normalised features: the CLIP paper's linear
  probe, fitted by L-BFGS logistic regression (:mod:`croft_core.heads.probe`); before fitting it holds the
  zero-shot text classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from croft_core.clip.features import l2n


class ZeroShotHead(nn.Module):
    """Zero-shot CLIP; no trainable parameters. Class-agnostic."""

    class_agnostic = True

    def __init__(self, logit_scale: float = 100.0):
        super().__init__()
        self.logit_scale = logit_scale

    def embed_image(self, f: torch.Tensor) -> torch.Tensor:
        return l2n(f)

    def forward(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.embed_image(f) @ l2n(t).T  # [N, K]


class ClipAdapterHead(nn.Module):
    """CLIP-Adapter: ``z = n(ratio * mlp(f) + (1 - ratio) * f)``. Class-agnostic."""

    class_agnostic = True

    def __init__(self, embed_dim: int, logit_scale: float = 100.0, ratio: float = 0.2,
                 reduction: int = 4):
        super().__init__()
        self.logit_scale, self.ratio = logit_scale, ratio
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(embed_dim // reduction, embed_dim, bias=False), nn.ReLU(inplace=True))

    def embed_image(self, f: torch.Tensor) -> torch.Tensor:
        f = l2n(f)
        return l2n(self.ratio * self.mlp(f) + (1 - self.ratio) * f)

    def forward(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.embed_image(f) @ l2n(t).T


class TipAdapterHead(nn.Module):
    """Tip-Adapter-F: zero-shot logits + ``alpha * exp(-beta (1 - f k^T)) v``.

    ``keys [M, d]`` (trainable) start as the normalised training features, ``values [M, K]`` are their
    one-hot labels. Tied to the training classes.
    """

    class_agnostic = False

    def __init__(self, embed_dim: int, num_classes: int, cache_size: int, logit_scale: float = 100.0,
                 alpha: float = 1.0, beta: float = 1.17):
        super().__init__()
        self.logit_scale, self.alpha, self.beta = logit_scale, alpha, beta
        self.keys = nn.Parameter(torch.zeros(cache_size, embed_dim))
        self.register_buffer("values", torch.zeros(cache_size, num_classes))

    @torch.no_grad()
    def init_cache(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the cache from training features ``[M, d]`` (raw) and labels ``[M]``."""
        self.keys.copy_(l2n(features))
        self.values.copy_(F.one_hot(labels.long(), self.values.shape[1]).float())

    def embed_image(self, f: torch.Tensor) -> torch.Tensor:
        return l2n(f)

    def forward(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] != self.values.shape[1]:
            raise ValueError(f"Tip-Adapter was trained on {self.values.shape[1]} classes; it cannot "
                             f"score a vocabulary of {t.shape[0]}")
        z = l2n(f)
        affinity = z @ self.keys.T  # [N, M]
        cache_logits = torch.exp(-self.beta * (1 - affinity)) @ self.values  # [N, K]
        return self.logit_scale * z @ l2n(t).T + self.alpha * cache_logits


class LinearProbeHead(nn.Module):
    """Linear classifier on ``n(f)`` (fitted by :func:`croft_core.heads.probe.fit_linear_probe`; starts as
    the zero-shot classifier). Tied to its classes."""

    class_agnostic = False

    def __init__(self, embed_dim: int, num_classes: int, logit_scale: float = 100.0):
        super().__init__()
        self.logit_scale = logit_scale
        self.linear = nn.Linear(embed_dim, num_classes)

    @torch.no_grad()
    def init_from_text(self, t: torch.Tensor) -> None:
        self.linear.weight.copy_(self.logit_scale * l2n(t))
        self.linear.bias.zero_()

    def embed_image(self, f: torch.Tensor) -> torch.Tensor:
        return l2n(f)

    def forward(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] != self.linear.out_features:
            raise ValueError(f"the linear probe was trained on {self.linear.out_features} classes; it "
                             f"cannot score a vocabulary of {t.shape[0]}")
        return self.linear(l2n(f))
