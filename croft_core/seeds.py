"""Named seed streams.

Every random draw in the project is seeded from a user seed *and* a stream constant, so that two
consumers of the same user seed (few-shot sampling, augmentation, epoch order, rendering,
pretraining, app reference images) never draw the same numbers. The constants live here, named,
instead of as magic numbers at their call sites. Changing one changes results: they are part of the
reproducibility contract (cached features and shipped checkpoints depend on them).
"""

from __future__ import annotations

ITEM_STRIDE = 1_000_003
"""Per-image transform seed: ``seed * ITEM_STRIDE + row`` (independent of batching and sharding)."""

VIEW_STRIDE = 1000
"""Augmentation seed of view ``v`` of a run seeded ``seed``: ``seed * VIEW_STRIDE + v``."""

EPOCH_STRIDE = 100_003
"""Epoch shuffling seed of the trainer: ``seed * EPOCH_STRIDE + epoch``."""

REFERENCE_STREAM = 0xC11F_A99
"""Rendered reference images of the app's zero-shot calibration."""

PRETRAIN_STREAM = 0xC11F_0001
"""The embedded CLIP's pretraining stream."""

EXAMPLE_STREAM = 7
"""The app's example images (rendered once at start-up)."""

DATASET_STREAM = 0x5EED_DA7A
"""The rendered shapes dataset (train/val/test images)."""

NONSHAPE_STREAM = 0x5EED_FA12
"""The rendered shapes dataset's non-shape (far-OOD) test images."""

_MAX_TORCH_SEED = 2**63 - 1


def item_seed(seed: int, row: int) -> int:
    """The torch seed of the transform of ``row`` under ``seed``."""
    return (int(seed) * ITEM_STRIDE + int(row)) % _MAX_TORCH_SEED


def view_seed(seed: int, view: int) -> int:
    """The augmentation seed of view ``view`` of a run seeded ``seed``."""
    return int(seed) * VIEW_STRIDE + int(view)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of ``epoch`` of a training run seeded ``seed``."""
    return int(seed) * EPOCH_STRIDE + int(epoch)
