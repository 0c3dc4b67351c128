"""Image-feature extraction with an on-disk cache of augmented views.

CRoFT never changes the image encoder, so every method and hyper-parameter can train on features
computed once (DESIGN.md, performance principles). Training sets get ``V`` augmented views per image
(the official augmentation: random resized crop + flip); evaluation sets get one view with the
model's own transform. Features are stored as safetensors (``features [V, N, d]``, ``labels [N]``)
with the manifest (ids, backbone, seed, transform) in the file's metadata and in a JSON sidecar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

FEATURE_FORMAT_VERSION = 1


@dataclass
class FeatureSet:
    """Cached image features of one split.

    Attributes:
        features: ``[V, N, d]`` raw (unnormalised) CLIP image embeddings, V views per image.
        labels: ``[N]`` benchmark class indices (-1 for semantic-shift sets).
        ids: N stable row ids (the split manifest).
        name: split name, e.g. ``"photo"`` or ``"semantic: unseen shapes"``.
    """

    features: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.features.dim() == 2:
            self.features = self.features.unsqueeze(0)  # [1, N, d]
        if self.features.shape[1] != len(self.labels) or len(self.ids) != len(self.labels):
            raise ValueError(f"feature set {self.name!r}: {self.features.shape[1]} features, "
                             f"{len(self.labels)} labels and {len(self.ids)} ids must agree")

    def __len__(self) -> int:
        return self.features.shape[1]

    @property
    def views(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    def first_view(self) -> torch.Tensor:
        """``[N, d]``: the first view (the only one for evaluation sets)."""
        return self.features[0]

    def to(self, device: str | torch.device) -> "FeatureSet":
        return FeatureSet(self.features.to(device), self.labels.to(device), self.ids, self.name,
                          self.meta)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors) and ``path.json`` (the manifest), atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {"name": self.name, "ids": self.ids, "format": FEATURE_FORMAT_VERSION, **self.meta}
        tmp = path.with_name(path.name + ".tmp")
        save_file({"features": self.features.detach().cpu().contiguous(),
                   "labels": self.labels.detach().cpu().long().contiguous()},
                  str(tmp), metadata={"manifest": json.dumps(manifest)})
        os.replace(tmp, path)
        path.with_name(path.name + ".json").write_text(json.dumps(manifest, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            manifest = json.loads(fh.metadata()["manifest"])
            features, labels = fh.get_tensor("features"), fh.get_tensor("labels")
        name, ids = manifest.pop("name"), manifest.pop("ids")
        manifest.pop("format", None)
        return cls(features, labels, ids, name, manifest)


class _ImageDataset(Dataset):
    def __init__(self, split, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.split.image(i))


def _cache_path(cache_dir: Path, key_parts: list[str]) -> Path:
    key = hashlib.sha1("\x1f".join(key_parts).encode()).hexdigest()
    return cache_dir / "features" / f"{key}.safetensors"


@torch.no_grad()
def encode_split(backbone, split, transform: Callable, *, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, amp: bool = True, desc: str = "") -> torch.Tensor:
    """Encode every image of ``split`` once with ``transform``; returns ``[N, d]`` float32 (CPU).

    Streams batches (memory flat in dataset size except the output), decodes in ``num_workers``
    worker processes, and uses fp16 autocast on CUDA when ``amp``. Random transforms are seeded:
    the same ``seed`` gives the same crops.
    """
    device = backbone.device
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(_ImageDataset(split, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, generator=generator,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    autocast = (torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda"
                else contextlib.nullcontext())
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # seeds in-process (num_workers=0) transforms
        for pixels in tqdm(loader, desc=desc or "encoding", leave=False, disable=None):
            with autocast:
                out.append(backbone.model.encode_image(pixels.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, backbone.embed_dim)


def extract_features(backbone, split, *, views: int = 1, augment: bool = False, seed: int = 0,
                     batch_size: int = 64, num_workers: int = 0, amp: bool = True,
                     cache_dir: str | Path | None = None) -> FeatureSet:
    """Features of a :class:`~croft_core.benchmarks.LoadedSplit`, computed once and cached.

    Args:
        backbone: a :class:`~croft_core.backbones.Backbone`.
        split: anything with ``__len__``, ``image(i)``, ``labels``, ``ids``, ``name`` and
            ``fingerprint()`` (a ``LoadedSplit``).
        views: augmented views per image (training sets); 1 for evaluation sets.
        augment: use the official training augmentation instead of the evaluation transform.
        seed: seeds the augmentation of view ``v`` as ``seed * 1000 + v``.
        batch_size, num_workers, amp: see :func:`encode_split`.
        cache_dir: cache root; ``None`` (or a backbone without ``cache_id``) disables the cache.

    Returns:
        A :class:`FeatureSet` with ``features [views, N, d]``.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if not augment and views > 1:
        raise ValueError("several views only make sense with augment=True")
    transform = backbone.train_transform() if augment else backbone.preprocess
    meta = {"backbone": backbone.spec, "split_fingerprint": split.fingerprint(), "views": views,
            "augment": augment, "seed": seed, "transform": repr(transform)}
    path = None
    if cache_dir is not None and backbone.cache_id is not None:
        path = _cache_path(Path(cache_dir), [backbone.cache_id, json.dumps(meta, sort_keys=True),
                                             str(FEATURE_FORMAT_VERSION)])
        if path.is_file():
            logger.info("feature cache hit for %s (%s)", split.name, path.name)
            return FeatureSet.load(path)

    per_view = [encode_split(backbone, split, transform, batch_size=batch_size,
                             num_workers=num_workers, seed=seed * 1000 + v, amp=amp,
                             desc=f"{split.name} view {v + 1}/{views}")
                for v in range(views)]
    labels = torch.as_tensor(split.labels, dtype=torch.long)
    features = FeatureSet(torch.stack(per_view), labels, list(split.ids), split.name, meta)
    if path is not None:
        features.save(path)
    return features
