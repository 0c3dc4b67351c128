"""Parallel decoding and multi-process extraction: same features and the same cache file as one process.

Runs on CPU with the ``gloo`` backend: a one-process world in this process, and a two-process world
started with ``torch.multiprocessing`` (what ``torchrun`` does with one process per GPU). The two
processes are forked rather than spawned so that they do not re-import torch and open_clip (about
8 s each on a busy 2-core machine); the code under test is the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datagen import tiny_benchmark

from croft_core.runs import torchrun as distributed
from croft_core.data.benchmarks import materialize
from croft_core.clip.features import FeatureSet, extract_features, feature_cache_path

VIEWS, SEED, BATCH = 2, 3, 4


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    bench = tiny_benchmark(tmp_path_factory.mktemp("data"), n=5)
    return materialize(bench, "train", shots=None, seed=1)  # 15 images


def _single(backbone, split, cache_dir):
    fs = extract_features(backbone, split, views=VIEWS, augment=True, seed=SEED, batch_size=BATCH,
                          cache_dir=cache_dir)
    path, _ = feature_cache_path(backbone, split, views=VIEWS, augment=True, seed=SEED, cache_dir=cache_dir)
    return fs, path


@pytest.mark.parametrize("mode", ["contiguous", "strided"])
def test_shards_partition_the_rows(mode):
    for n, world in [(0, 2), (1, 3), (15, 2), (64, 8), (100, 3)]:
        shards = [distributed.shard_rows(n, r, world, mode=mode, batch_size=BATCH) for r in range(world)]
        assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(n))
        if mode == "contiguous":  # whole batches, so each rank sees a single process's batches
            assert all(s[0] % BATCH == 0 for s in shards if len(s))
    with pytest.raises(ValueError, match="outside a world"):
        distributed.shard_rows(4, 2, 2)


def test_worker_processes_give_the_same_features(tiny_backbone, split):
    one = extract_features(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED, batch_size=BATCH)
    two = extract_features(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED, batch_size=BATCH,
                           num_workers=2)
    assert torch.equal(one.features, two.features)
    assert not torch.equal(one.features[0], one.features[1])  # views differ
    other_batches = extract_features(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED, batch_size=6)
    torch.testing.assert_close(other_batches.features, one.features)  # same crops, whatever the batching


@pytest.mark.parametrize("gather", ["files", "object"])
def test_one_process_world_writes_the_single_process_cache(tiny_backbone, split, tmp_path, gather):
    single, single_path = _single(tiny_backbone, split, tmp_path / "single")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        fs = distributed.extract_features(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED,
                                          batch_size=BATCH, cache_dir=tmp_path / "dist", gather=gather)
        again = distributed.extract_features(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED,
                                             batch_size=BATCH, cache_dir=tmp_path / "dist", gather=gather)
    finally:
        dist.destroy_process_group()
    path, _ = feature_cache_path(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED,
                                 cache_dir=tmp_path / "dist")
    assert torch.equal(fs.features, single.features) and torch.equal(again.features, single.features)
    assert path.read_bytes() == single_path.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.name + ".json"])


def _worker(rank, world, init_file, backbone, split, cache_dir, shard, gather, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fs = distributed.extract_features(backbone, split, views=VIEWS, augment=True, seed=SEED,
                                          batch_size=BATCH, cache_dir=cache_dir, shard=shard, gather=gather)
        fs.save(f"{out_dir}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("shard, gather", [("contiguous", "files"), ("strided", "object")])
def test_two_processes_gather_one_identical_cache(tiny_backbone, split, tmp_path, shard, gather):
    single, single_path = _single(tiny_backbone, split, tmp_path / "single")
    mp.start_processes(_worker, nprocs=2, join=True, start_method="fork",
                       args=(2, str(tmp_path / "init"), tiny_backbone, split, str(tmp_path / "cache"),
                             shard, gather, str(tmp_path)))
    ranks = [FeatureSet.load(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    path, _ = feature_cache_path(tiny_backbone, split, views=VIEWS, augment=True, seed=SEED,
                                 cache_dir=tmp_path / "cache")
    merged = FeatureSet.load(path)
    for fs in (*ranks, merged):  # every rank gets everything, in the original row order
        assert fs.ids == single.ids and torch.equal(fs.labels, single.labels)
        torch.testing.assert_close(fs.features, single.features)
    if shard == "contiguous":  # whole batches per rank: bit-identical, the very same file
        assert path.read_bytes() == single_path.read_bytes()
    assert not list(path.parent.glob("*.rank*"))  # shard files cleaned up


def test_prepare_features_mines_the_benchmarks_negatives(tmp_path_factory, tmp_path):
    """The evaluation's ``neglabel`` score reads negatives mined for the benchmark's ID classes."""
    from conftest import write_tiny_model

    from croft_core.clip.backbones import load_backbone
    from croft_core.ood.negatives import LEXICON_FILE

    folder = tmp_path / "model"
    backbone_spec = write_tiny_model(folder, seed=2)
    (folder / LEXICON_FILE).write_text("\n".join(["star", "violin", "glacier", "comet", "Square", "harp",
                                                  "kayak", "anvil", "meteor", "lantern"]))
    backbone = load_backbone(backbone_spec)
    bench = tiny_benchmark(tmp_path_factory.mktemp("negdata"), n=3)
    feats = distributed.prepare_features(backbone, bench, shots=1, seed=1, need_train=False, cache_dir=tmp_path)
    assert feats.negatives.removed == ("square",) and "star" not in feats.negatives.removed
    # the paper's 10,000 negatives exceed this lexicon: every usable word is taken (issue 21)
    assert len(feats.negatives.words) == feats.negatives.usable == 9 and feats.negatives.lexicon.endswith(LEXICON_FILE)
    assert distributed.prepare_features(backbone, bench, shots=1, seed=1, need_train=False, cache_dir=tmp_path,
                                        negatives=False).negatives is None
