"""Synthetic feature sets with a known class structure (no images, no backbone)."""

from __future__ import annotations

import torch

from croft_core.clip.features import FeatureSet


def clustered_features(n_per_class: int = 8, k: int = 4, d: int = 16, views: int = 3, seed: int = 0,
                       noise: float = 1.0, name: str = "train"):
    """``views`` noisy views of ``k`` Gaussian class clusters; returns (FeatureSet, text [k, d])."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 2
    labels = torch.arange(k).repeat_interleave(n_per_class)
    base = centres[labels] + noise * torch.randn(len(labels), d, generator=g)
    feats = base + 0.3 * torch.randn(views, len(labels), d, generator=g)
    text = centres + 1.5 * torch.randn(k, d, generator=g)  # imperfect zero-shot classifier
    ids = [f"{name}-{i}" for i in range(len(labels))]
    return FeatureSet(feats, labels, ids, name), text
