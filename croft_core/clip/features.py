"""Image-feature extraction with an on-disk cache of augmented views.

CRoFT never changes the image encoder, so every method and hyper-parameter can train on features
computed once (DESIGN.md, performance principles). Training sets get ``V`` augmented views per image
(the official augmentation: random resized crop + flip); evaluation sets get one view with the
model's own transform. Features are stored as safetensors (``features [V, N, d]``, ``labels [N]``)
with the manifest (ids, backbone, seed, transform, precision) in the file's metadata and in a JSON
sidecar.

Extraction streams: images are decoded batch by batch in ``num_workers`` worker processes (the
split only needs to be picklable, which a :class:`~croft_core.data.benchmarks.LoadedSplit` is), so memory
is flat in the dataset size apart from the ``[N, d]`` output; on CUDA the encoder runs under
autocast (fp16 by default). The random augmentation of image ``i`` in view ``v`` is seeded by
``(seed, v, i)`` alone, so features do not depend on the number of workers, the batch size or how
rows are sharded across GPUs (:mod:`croft_core.runs.torchrun`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from croft_core.clip.backbones import encode_image_with_local
from croft_core.seeds import item_seed, view_seed

logger = logging.getLogger(__name__)

FEATURE_FORMAT_VERSION = 2  # 2: per-image augmentation seeds, precision in the cache key
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / (||x|| + eps)`` along the last dimension — the normalisation of the official code."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


@dataclass
class FeatureSet:
    """Cached image features of one split.

    Attributes:
        features: ``[V, N, d]`` raw (unnormalised) CLIP image embeddings, V views per image.
        labels: ``[N]`` benchmark class indices (-1 for semantic-shift sets).
        ids: N stable row ids (the split manifest).
        name: split name, e.g. ``"photo"`` or ``"semantic: unseen shapes"``.
        local: ``[V, N, P, d]`` local (attention-pool position or patch) features in half precision,
            or None (opt-in: ``extract_features(..., local=True)``; GL-MCM and LoCoOp read them).
    """

    features: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    local: torch.Tensor | None = None

    def __post_init__(self):
        if self.features.dim() == 2:
            self.features = self.features.unsqueeze(0)  # [1, N, d]
        if self.local is not None and self.local.dim() == 3:
            self.local = self.local.unsqueeze(0)  # [1, N, P, d]
        if self.local is not None and (self.local.dim() != 4 or self.local.shape[:2] != self.features.shape[:2]
                                       or self.local.shape[3] != self.features.shape[2]):
            raise ValueError(f"feature set {self.name!r}: local features {tuple(self.local.shape)} must be "
                             f"[V, N, P, d] with [V, N, d] = {tuple(self.features.shape)}")
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

    def first_view_local(self) -> torch.Tensor | None:
        """``[N, P, d]`` float32 local features of the first view, or None."""
        return None if self.local is None else self.local[0].float()

    @property
    def local_bytes(self) -> int:
        """Bytes of the cached local features (0 without)."""
        return 0 if self.local is None else self.local.numel() * self.local.element_size()

    def to(self, device: str | torch.device) -> "FeatureSet":
        return FeatureSet(self.features.to(device), self.labels.to(device), self.ids, self.name,
                          self.meta, None if self.local is None else self.local.to(device))

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors) and ``path.json`` (the manifest), atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {"name": self.name, "ids": self.ids, "format": FEATURE_FORMAT_VERSION, **self.meta}
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # concurrent writers: own tmp each
        tensors = {"features": self.features.detach().cpu().contiguous(),
                   "labels": self.labels.detach().cpu().long().contiguous()}
        if self.local is not None:
            tensors["local"] = self.local.detach().cpu().half().contiguous()
        save_file(tensors, str(tmp), metadata={"manifest": json.dumps(manifest)})
        os.replace(tmp, path)
        path.with_name(path.name + ".json").write_text(json.dumps(manifest, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            manifest = json.loads(fh.metadata()["manifest"])
            features, labels = fh.get_tensor("features"), fh.get_tensor("labels")
            local = fh.get_tensor("local") if "local" in fh.keys() else None
        name, ids = manifest.pop("name"), manifest.pop("ids")
        manifest.pop("format", None)
        return cls(features, labels, ids, name, manifest, local)


class _ImageDataset(Dataset):
    """Row ``rows[i]`` of ``split``, decoded and transformed with its own seed (picklable)."""

    def __init__(self, split, transform: Callable, seed: int, rows=None):
        self.split, self.transform, self.seed = split, transform, seed
        self.rows = None if rows is None else [int(r) for r in rows]

    def __len__(self) -> int:
        return len(self.split) if self.rows is None else len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        row = i if self.rows is None else self.rows[i]
        torch.manual_seed(item_seed(self.seed, row))  # torchvision's random transforms use torch's RNG
        return self.transform(self.split.image(row))


def _cache_path(cache_dir: Path, key_parts: list[str]) -> Path:
    key = hashlib.sha1("\x1f".join(key_parts).encode()).hexdigest()
    return cache_dir / "features" / f"{key}.safetensors"


def precision_of(backbone, amp: bool = True, amp_dtype: str = "fp16") -> str:
    """The precision the encoder runs in: ``amp_dtype`` under autocast on CUDA, else ``"fp32"``."""
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_dtype!r}")
    return amp_dtype if amp and backbone.device.type == "cuda" else "fp32"


@torch.no_grad()
def encode_split(backbone, split, transform: Callable, *, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, amp: bool = True, amp_dtype: str = "fp16", rows=None,
                 desc: str = "", local: bool = False):
    """Encode images of ``split`` once with ``transform``; returns ``[n, d]`` float32 (CPU).

    Streams batches into a preallocated output (memory flat in dataset size except the output),
    decodes in ``num_workers`` worker processes, and uses ``amp_dtype`` autocast on CUDA when
    ``amp``. The transform of row ``i`` is seeded by ``item_seed(seed, i)``: the same ``seed`` gives
    the same crops whatever the workers, batch size or ``rows``.

    Args:
        rows: positions of the rows to encode (a shard), in output order; None encodes all rows.
        local: also return the local features ``[n, P, d]`` in float16
            (:func:`~croft_core.clip.backbones.encode_image_with_local`): ``(global, local)``.
    """
    device = backbone.device
    dataset = _ImageDataset(split, transform, seed, rows)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        prefetch_factor=4 if num_workers > 0 else None)
    precision = precision_of(backbone, amp, amp_dtype)
    autocast = (torch.autocast("cuda", dtype=AMP_DTYPES[precision]) if precision != "fp32"
                else contextlib.nullcontext())
    out = torch.empty(len(dataset), backbone.embed_dim)  # [n, d]
    out_local = None  # [n, P, d] float16, allocated once P is known
    done = 0
    with torch.random.fork_rng(devices=[]):  # in-process transforms reseed the global RNG
        for pixels in tqdm(loader, desc=desc or "encoding", leave=False, disable=None):
            with autocast:
                if local:
                    emb, loc = encode_image_with_local(backbone.model, pixels.to(device, non_blocking=True))
                    if out_local is None:
                        out_local = torch.empty(len(dataset), loc.shape[1], loc.shape[2], dtype=torch.float16)
                    out_local[done:done + len(emb)] = loc.half().cpu()
                else:
                    emb = backbone.model.encode_image(pixels.to(device, non_blocking=True))
            out[done:done + len(emb)] = emb.float().cpu()
            done += len(emb)
    assert done == len(dataset)
    if local:
        if out_local is None:  # an empty split
            out_local = torch.empty(0, 0, backbone.embed_dim, dtype=torch.float16)
        return out, out_local
    return out


def feature_cache_path(backbone, split, *, views: int = 1, augment: bool = False, seed: int = 0,
                       amp: bool = True, amp_dtype: str = "fp16", cache_dir: str | Path | None = None,
                       local: bool = False) -> tuple[Path | None, dict[str, Any]]:
    """The cache file of a split's features and the manifest stored with them.

    Returns:
        ``(path, meta)``; ``path`` is None when caching is off (no ``cache_dir``, or a backbone
        without ``cache_id``, e.g. random weights).
    """
    transform = backbone.train_transform() if augment else backbone.preprocess
    meta = {"backbone": backbone.spec, "split_fingerprint": split.fingerprint(), "views": views,
            "augment": augment, "seed": seed, "transform": repr(transform),
            "precision": precision_of(backbone, amp, amp_dtype)}
    if local:  # only then: the key of a file without local features is unchanged
        meta["local"] = True
    path = None
    if cache_dir is not None and backbone.cache_id is not None:
        # cache_id names the weights, their revision and the load precision (backbones.py)
        path = _cache_path(Path(cache_dir), [backbone.cache_id, json.dumps(meta, sort_keys=True),
                                             str(FEATURE_FORMAT_VERSION)])
    return path, meta


class Sharding:
    """How :func:`extract_features` splits its work between processes: here, not at all.

    :class:`croft_core.runs.torchrun.TorchrunSharding` overrides the three methods to encode a
    shard per rank and gather the shards into the one cache file; the extraction itself is the same.
    """

    def all_agree(self, flag: bool) -> bool:
        """True only if ``flag`` holds in every process (so all take the same branch)."""
        return flag

    def rows(self, n: int, batch_size: int):
        """Positions of this process's rows, or None for all of them."""
        return None

    def finish(self, local: torch.Tensor, rows, path: Path | None,
               make: Callable[[torch.Tensor], "FeatureSet"]) -> "FeatureSet":
        """The full :class:`FeatureSet` from this process's ``[V, n, d]`` features, cached at ``path``."""
        features = make(local)
        if path is not None:
            features.save(path)
        return features


def extract_features(backbone, split, *, views: int = 1, augment: bool = False, seed: int = 0,
                     batch_size: int = 64, num_workers: int = 0, amp: bool = True,
                     amp_dtype: str = "fp16", cache_dir: str | Path | None = None,
                     sharding: Sharding | None = None, local: bool = False) -> FeatureSet:
    """Features of a :class:`~croft_core.data.benchmarks.LoadedSplit`, computed once and cached.

    Args:
        backbone: a :class:`~croft_core.clip.backbones.Backbone`.
        split: anything with ``__len__``, ``image(i)``, ``labels``, ``ids``, ``name`` and
            ``fingerprint()`` (a ``LoadedSplit``).
        views: augmented views per image (training sets); 1 for evaluation sets.
        augment: use the official training augmentation instead of the evaluation transform.
        seed: seeds the augmentation of view ``v`` as :func:`~croft_core.seeds.view_seed`.
        batch_size, num_workers, amp, amp_dtype: see :func:`encode_split`.
        cache_dir: cache root; ``None`` (or a backbone without ``cache_id``) disables the cache.
        sharding: how the rows are split between processes (default: one process encodes all;
            :mod:`croft_core.runs.torchrun` passes its own under ``torchrun``).
        local: also cache the local features (``FeatureSet.local [views, N, P, d]``, float16; a
            separate cache file; its size is logged; one process only).

    Returns:
        A :class:`FeatureSet` with ``features [views, N, d]`` (the full set in every process).
    """
    check_views(views, augment)
    sharding = Sharding() if sharding is None else sharding
    path, meta = feature_cache_path(backbone, split, views=views, augment=augment, seed=seed, amp=amp,
                                    amp_dtype=amp_dtype, cache_dir=cache_dir, local=local)
    if sharding.all_agree(path is not None and path.is_file()):
        logger.info("feature cache hit for %s (%s)", split.name, path.name)
        return FeatureSet.load(path)

    rows = sharding.rows(len(split), batch_size)
    transform = backbone.train_transform() if augment else backbone.preprocess
    per_view = [encode_split(backbone, split, transform, batch_size=batch_size,
                             num_workers=num_workers, seed=view_seed(seed, v), amp=amp,
                             amp_dtype=amp_dtype, rows=rows, desc=f"{split.name} view {v + 1}/{views}",
                             local=local)
                for v in range(views)]
    labels = torch.as_tensor(split.labels, dtype=torch.long)
    if not local:
        return sharding.finish(torch.stack(per_view), rows, path,  # [V, n, d]
                               lambda features: FeatureSet(features, labels, list(split.ids), split.name, meta))
    features = FeatureSet(torch.stack([v[0] for v in per_view]), labels, list(split.ids), split.name, meta,
                          torch.stack([v[1] for v in per_view]))
    logger.info("local features of %s: %s, %.2f MB (float16)", split.name,
                tuple(features.local.shape), features.local_bytes / 2**20)
    if path is not None:
        features.save(path)
    return features


def check_views(views: int, augment: bool) -> None:
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if not augment and views > 1:
        raise ValueError("several views only make sense with augment=True")
