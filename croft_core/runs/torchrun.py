"""Benchmark feature extraction, sharded across GPUs under ``torchrun`` and gathered into one cache.

CRoFT trains on cached features (DESIGN.md, performance principles), so the only GPU-heavy stage is
encoding images once. :func:`prepare_features` materialises a benchmark's splits and encodes each
(the input of :func:`croft_core.runs.evaluate.evaluate` and of training); :func:`extract_benchmarks` fills
the cache for a grid of seeds and shots (``croft extract``). The evaluation depends on this module,
never the other way round. Under ``torchrun --nproc_per_node=G`` (environment ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), :func:`init_distributed` joins the process group and puts each rank on its own GPU;
:func:`extract_features` then has each rank encode its shard of the rows and gathers the shards into
**one** cache file, byte-identical to the one a single process writes:

- ``shard="contiguous"`` (default) gives each rank a run of whole batches, so every batch holds the
  same images as in a single-process run and the encoder sees identical inputs; ``"strided"``
  interleaves rows (rank ``r`` takes rows ``r, r + G, ...``); both give the same features, because
  each image's augmentation is seeded by its row (:func:`croft_core.clip.features.item_seed`);
- ``gather="files"`` (the default when there is a cache directory, which must then be shared by the
  ranks, as on one node) writes per-rank shard files that rank 0 merges; ``gather="object"``
  exchanges the features with ``torch.distributed.all_gather_object``.

Every rank returns the full :class:`~croft_core.clip.features.FeatureSet`. Outside a process group this is
:func:`croft_core.clip.features.extract_features`. Typical use (see ``docs/REPRODUCE.md``)::

    torchrun --nproc_per_node=8 -m croft_core.cli extract ...   # init_distributed(), extract_benchmarks(...)

after which training and evaluation run in one process and read only the cache.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from croft_core.clip import features as _features
from croft_core.clip.backbones import DEFAULT_CACHE_DIR
from croft_core.clip.features import FeatureSet, Sharding
from croft_core.ood.negatives import NegativeLabels

logger = logging.getLogger(__name__)

SHARD_MODES = ("contiguous", "strided")
GATHER_MODES = ("auto", "files", "object")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (``world_size == 1`` outside ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank, world size and local rank, from the process group if joined, else from the environment."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local_rank)


def init_distributed(backend: str | None = None, timeout_minutes: float = 60.0) -> torch.device:
    """Join the ``torchrun`` process group (a no-op in a single process); return this rank's device.

    Args:
        backend: ``"nccl"`` (default with CUDA) or ``"gloo"`` (default on CPU).
        timeout_minutes: collective timeout; rank 0 merges shards while the others wait.

    Returns:
        ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``. Load the backbone there.
    """
    info = dist_info()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(info.local_rank)
    if info.world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
        logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(),
                    backend)
    return torch.device(f"cuda:{info.local_rank}") if cuda else torch.device("cpu")


def shard_rows(n: int, rank: int, world_size: int, *, mode: str = "contiguous",
               batch_size: int = 64) -> np.ndarray:
    """The rows rank ``rank`` encodes.

    Args:
        n: rows in the split.
        rank, world_size: this rank and the number of ranks.
        mode: ``"contiguous"``: whole batches of ``batch_size`` rows, split as evenly as possible
            (a single-process run's batches, so identical encoder inputs); ``"strided"``: rows
            ``rank, rank + world_size, ...``.
        batch_size: the batch size of the contiguous split.

    Returns:
        Sorted row positions, ``int64 [n_rank]``; the shards of all ranks partition ``range(n)``.
    """
    if mode not in SHARD_MODES:
        raise ValueError(f"shard mode must be one of {SHARD_MODES}, got {mode!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    if mode == "strided":
        return np.arange(rank, n, world_size, dtype=np.int64)
    n_batches = math.ceil(n / batch_size) if n else 0
    first = rank * n_batches // world_size
    last = (rank + 1) * n_batches // world_size
    return np.arange(first * batch_size, min(last * batch_size, n), dtype=np.int64)


class TorchrunSharding(Sharding):
    """:func:`croft_core.clip.features.extract_features` across the ranks of a process group.

    Args:
        shard: ``"contiguous"`` or ``"strided"`` (:func:`shard_rows`).
        gather: ``"files"`` (per-rank shard files in the shared cache directory, merged by rank 0),
            ``"object"`` (``all_gather_object``), or ``"auto"`` (files when there is a cache path).
    """

    def __init__(self, shard: str = "contiguous", gather: str = "auto"):
        if gather not in GATHER_MODES:
            raise ValueError(f"gather must be one of {GATHER_MODES}, got {gather!r}")
        self.shard, self.gather, self.info = shard, gather, dist_info()

    def all_agree(self, flag: bool) -> bool:
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        if dist.get_backend() == "nccl":
            value = value.cuda()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def rows(self, n: int, batch_size: int) -> np.ndarray:
        return shard_rows(n, self.info.rank, self.info.world_size, mode=self.shard, batch_size=batch_size)

    def finish(self, local: torch.Tensor, rows, path: Path | None,
               make: Callable[[torch.Tensor], FeatureSet]) -> FeatureSet:
        if self.gather == "object" or (self.gather == "auto" and path is None):
            shards: list = [None] * self.info.world_size
            dist.all_gather_object(shards, (rows, local))
            result = make(_assemble(shards, sum(len(r) for r, _ in shards)))
            if self.info.is_main and path is not None:
                result.save(path)
            dist.barrier()
            return result
        if path is None:
            raise ValueError("gather='files' needs a cache_dir shared by the ranks (and a backbone with a "
                             "cache_id); use gather='object' without one")
        _gather_files(path, rows, local, self.info, make)
        return FeatureSet.load(path)


def extract_features(backbone, split, *, shard: str = "contiguous", gather: str = "auto",
                     **kwargs: Any) -> FeatureSet:
    """:func:`croft_core.clip.features.extract_features`, sharded over the ranks of a process group
    (:class:`TorchrunSharding`); without an initialised process group, the single-process function.

    Every rank must call it with the same arguments and a split with the same rows (materialize
    the benchmark on every rank: the draw is seeded). Returns the full set on every rank.
    """
    sharding = TorchrunSharding(shard, gather) if dist.is_available() and dist.is_initialized() else None
    if sharding is not None and kwargs.get("local"):
        raise ValueError("local features are extracted in one process; run without torchrun for them")
    if sharding is None and gather not in GATHER_MODES:
        raise ValueError(f"gather must be one of {GATHER_MODES}, got {gather!r}")
    return _features.extract_features(backbone, split, sharding=sharding, **kwargs)


def _assemble(shards: Sequence[tuple[np.ndarray, torch.Tensor]], n: int) -> torch.Tensor:
    views, _, dim = shards[0][1].shape
    full = torch.empty(views, n, dim)  # [V, N, d]
    seen = np.zeros(n, dtype=bool)
    for rows, feats in shards:
        full[:, torch.as_tensor(rows, dtype=torch.long)] = feats.cpu()
        seen[rows] = True
    assert seen.all(), "the shards do not cover every row"
    return full


def _gather_files(path: Path, rows: np.ndarray, local: torch.Tensor, info: DistInfo,
                  make: Callable[[torch.Tensor], FeatureSet]) -> None:
    from safetensors.torch import load_file, save_file

    def shard_path(rank: int) -> Path:
        return path.with_name(f"{path.name}.rank{rank}-of-{info.world_size}")

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"rows": torch.as_tensor(rows, dtype=torch.long), "features": local.contiguous()},
              str(shard_path(info.rank)))
    dist.barrier()
    if info.is_main:
        shards = []
        for rank in range(info.world_size):
            data = load_file(str(shard_path(rank)))
            shards.append((data["rows"].numpy(), data["features"]))
        make(_assemble(shards, sum(len(r) for r, _ in shards))).save(path)
        for rank in range(info.world_size):
            shard_path(rank).unlink(missing_ok=True)
    dist.barrier()


@dataclass
class BenchmarkFeatures:
    """Cached features of every split of one (benchmark, shots, seed).

    ``negatives`` are the negative labels mined for the benchmark's ID classes (the ``neglabel``
    score), or None when they were not prepared.
    """

    train: FeatureSet
    val: FeatureSet
    id_test: FeatureSet
    covariate: list[FeatureSet] = field(default_factory=list)
    semantic: list[FeatureSet] = field(default_factory=list)
    splits: dict[str, Any] = field(default_factory=dict)  # role -> LoadedSplit(s), for the manifest
    negatives: NegativeLabels | None = None
    far_ood: tuple[str, ...] = ()  # names of the semantic sets that are far-OOD (Benchmark.far_ood)


def prepare_features(backbone, benchmark, *, shots: int | None, seed: int, views: int = 8,
                     cache_dir: str | Path | None = DEFAULT_CACHE_DIR, batch_size: int = 64,
                     num_workers: int = 0, need_train: bool = True, amp: bool = True,
                     amp_dtype: str = "fp16", negatives: bool = True,
                     local: bool = False) -> BenchmarkFeatures:
    """Materialise the benchmark's splits and extract (or load cached) features for each.

    Every source is checked first (:func:`~croft_core.data.benchmarks.check_sources`), so a missing
    folder or an unreachable Hub id fails before any image is encoded. Under ``torchrun`` (after
    :func:`init_distributed`) each split is encoded in shards across the ranks and gathered into the
    same cache files a single process writes; every rank gets every feature.

    Args:
        backbone: the frozen backbone.
        benchmark: a :class:`~croft_core.data.benchmarks.Benchmark`.
        shots: few-shot training images per class (``None`` = all).
        seed: seeds the few-shot sample, the validation sample and the augmentations.
        views: augmented views per training image (1 plain view when the benchmark sets
            ``train_augment=False``).
        cache_dir: feature and text cache root (``None`` disables caching).
        batch_size: images per encoder call.
        num_workers: image-decoding worker processes.
        need_train: False skips the training split (zero-shot evaluation only needs val and test).
        amp, amp_dtype: autocast precision on CUDA (see :func:`croft_core.clip.features.encode_split`).
        negatives: mine NegLabel's negative labels for the benchmark's classes
            (:meth:`croft_core.ood.negatives.NegativeLabels.fit`, with the backbone's own lexicon).
        local: also cache every split's local features (float16; GL-MCM and LoCoOp need them).
    """
    from croft_core.data.benchmarks import ROLES, check_sources, materialize

    check_sources(benchmark, ROLES if need_train else tuple(r for r in ROLES if r != "train"))

    def encode(split, **kw):
        return extract_features(backbone, split, cache_dir=cache_dir, batch_size=batch_size,
                                num_workers=num_workers, amp=amp, amp_dtype=amp_dtype, local=local, **kw)

    roles = ("val", "id_test", "covariate", "semantic") + (("train",) if need_train else ())
    splits = {role: materialize(benchmark, role, shots=shots, seed=seed) for role in roles}
    augment = benchmark.train_augment  # False: the benchmark's images do not survive random crops
    train = (encode(splits["train"], views=views if augment else 1, augment=augment, seed=seed)
             if need_train
             else FeatureSet(torch.zeros(1, 0, backbone.embed_dim), torch.zeros(0, dtype=torch.long), []))
    negs = NegativeLabels.fit(backbone, benchmark.classnames, cache_dir=cache_dir) if negatives else None
    return BenchmarkFeatures(
        train=train, val=encode(splits["val"]), id_test=encode(splits["id_test"]),
        covariate=[encode(s) for s in splits["covariate"]],
        semantic=[encode(s) for s in splits["semantic"]], splits=splits, negatives=negs,
        far_ood=tuple(benchmark.far_ood))


def extract_benchmarks(backbone, benchmark_for_seed: Callable[[int], object], *, seeds: Sequence[int],
                       shots: Sequence[int | None], views: int = 8, cache_dir=None, batch_size: int = 64,
                       num_workers: int = 0, need_train: bool = True) -> None:
    """Fill the feature cache for every (seed, shots) of a grid, sharded when under ``torchrun``.

    What ``croft extract`` runs: afterwards ``croft train`` / ``croft bench`` with the same backbone,
    benchmark, seeds, shots, views and cache directory read every feature from the cache.

    Args:
        backbone: loaded on :func:`init_distributed`'s device.
        benchmark_for_seed: ``seed -> Benchmark`` (Setup-I draws its classes per seed).
        seeds, shots: the grid.
        views, cache_dir, batch_size, num_workers, need_train: as :func:`prepare_features`.
    """
    for seed in seeds:
        benchmark = benchmark_for_seed(seed)
        for k in shots:
            logger.info("extracting %s seed %d shots %s", getattr(benchmark, "name", "?"), seed, k)
            # negatives=False: every rank would encode the lexicon into the same cache file; the
            # single-process run that trains or evaluates mines them (a text-only, cached step)
            prepare_features(backbone, benchmark, shots=k, seed=seed, views=views, cache_dir=cache_dir,
                             batch_size=batch_size, num_workers=num_workers, need_train=need_train,
                             negatives=False)
