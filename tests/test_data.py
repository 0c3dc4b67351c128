"""croft_core.data: sources (save_to_disk, image folders, Hub ids), errors, few-shot sampling."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter

import datasets
import numpy as np
import pytest
from datagen import CLASSES, DOMAINS, make_tiny_dataset_dict, make_tiny_imagefolder

from croft_core import data
from croft_core.data import DatasetUnavailableError, column_array, few_shot_indices, load_split


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    # Image folders are converted to Arrow in the datasets cache: keep that out of ~/.cache.
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory):
    return make_tiny_dataset_dict(tmp_path_factory.mktemp("dd") / "tiny", n=3)


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    return make_tiny_imagefolder(tmp_path_factory.mktemp("if") / "shapes", n=2)


# ---------------------------------------------------------------------------------------- sources


def test_load_split_from_saved_dataset_dict(dict_dir):
    ds, names = load_split(str(dict_dir), "validation")
    assert names == list(CLASSES)
    assert len(ds) == len(CLASSES) * len(DOMAINS) * 3
    assert set(ds.column_names) >= {"image", "label", "domain"}
    assert ds[0]["image"].size == (16, 16)


def test_load_split_concatenates_splits(dict_dir):
    ds, _ = load_split(str(dict_dir), "train+test")
    assert len(ds) == 2 * len(CLASSES) * len(DOMAINS) * 3


def test_single_saved_dataset_offers_one_split(tmp_path, dict_dir):
    single = datasets.load_from_disk(str(dict_dir))["test"]
    single.save_to_disk(str(tmp_path / "one"))
    ds, names = load_split(str(tmp_path / "one"), "train")  # no .split recorded -> "train"
    assert len(ds) == len(single) and names == list(CLASSES)
    with pytest.raises(ValueError, match=r"available splits: \['train'\]"):
        load_split(str(tmp_path / "one"), "test")


def test_image_folder_with_metadata_encodes_string_labels(folder_dir):
    ds, names = load_split(f"imagefolder:{folder_dir}", "test")
    assert names == sorted(CLASSES)  # string labels -> ClassLabel with sorted names
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert set(column_array(ds, "domain")) == set(DOMAINS)
    # the label of each row is its folder name
    paths = ds.cast_column("image", datasets.Image(decode=False))["image"]
    folders = [os.path.basename(os.path.dirname(p["path"])) for p in paths]
    assert [names[i] for i in column_array(ds, "label")] == folders


def test_plain_local_folder_of_class_folders(tmp_path):
    root = make_tiny_imagefolder(tmp_path / "flat", classes=("cat", "dog"), n=2, splits=None, metadata=False)
    ds, names = load_split(str(root), "train")  # no split folders: everything is "train"
    assert names == ["cat", "dog"] and len(ds) == 2 * 2 * len(DOMAINS)


def test_label_names_name_integer_labels(dict_dir):
    ds = datasets.load_from_disk(str(dict_dir))["train"]
    plain = ds.cast_column("label", datasets.Value("int64"))
    plain.save_to_disk(str(dict_dir.parent / "int-labels"))
    with pytest.raises(ValueError, match=r"not a ClassLabel.*label_names"):
        load_split(str(dict_dir.parent / "int-labels"), "train")
    ds2, names = load_split(str(dict_dir.parent / "int-labels"), "train", label_names=["a", "b", "c", "d"])
    assert names == ["a", "b", "c", "d"] and ds2.features["label"].names == names
    with pytest.raises(ValueError, match="label_names has 2 names"):
        load_split(str(dict_dir), "train", label_names=["a", "b"])


def test_unlabelled_source(dict_dir):
    ds, names = load_split(str(dict_dir), "test", label_column=None)
    assert names == [] and len(ds) > 0


# ----------------------------------------------------------------------------------------- errors


def test_missing_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*save_to_disk.*<class>"):
        load_split(str(tmp_path / "nope"), "train")
    with pytest.raises(FileNotFoundError, match=r"Image folder .*nope.* does not exist"):
        load_split(f"imagefolder:{tmp_path / 'nope'}", "train")


def test_empty_local_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No data files found.*one sub-folder per class"):
        load_split(f"imagefolder:{tmp_path / 'empty'}", "train")


def test_missing_split_lists_available(dict_dir):
    with pytest.raises(ValueError, match=r"Split 'valid' not found.*\['test', 'train', 'validation'\]"):
        load_split(str(dict_dir), "valid")


def test_missing_column_lists_columns(dict_dir):
    with pytest.raises(ValueError, match=r"\['img'\] not found.*columns are \['image', 'label', 'domain'\]"):
        load_split(str(dict_dir), "train", image_column="img")
    with pytest.raises(ValueError, match=r"\['fine_label'\] not found"):
        load_split(str(dict_dir), "train", label_column="fine_label")


def test_offline_hub_id_fails_fast():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest.py
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match=r"'someone/not-here'.*HF_HUB_OFFLINE.*save_to_disk"):
        load_split("someone/not-here", "train")
    assert time.monotonic() - start < 5
    assert issubclass(DatasetUnavailableError, RuntimeError)


def test_unresolvable_hub_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.setattr(data, "_hub_offline", lambda: False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match=r"'org/name'.*unreachable"):
        load_split("org/name", "test")
    assert time.monotonic() - start < 2


# -------------------------------------------------------------------------------------- sampling


def _labels_domains(n_per_group=10, classes=4, domains=3):
    labels = np.repeat(np.arange(classes), n_per_group * domains)
    doms = np.tile(np.repeat([f"d{i}" for i in range(domains)], n_per_group), classes)
    return labels, doms


def test_few_shot_per_class_counts_and_determinism():
    labels, _ = _labels_domains()
    picked = few_shot_indices(labels, 5, seed=1)
    assert Counter(labels[picked].tolist()) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert picked == sorted(set(picked))  # sorted, no duplicates
    assert few_shot_indices(labels, 5, seed=1) == picked
    assert few_shot_indices(labels, 5, seed=2) != picked


def test_few_shot_per_class_domain_splits_the_budget():
    labels, doms = _labels_domains(domains=3)
    picked = few_shot_indices(labels, 16, seed=0, domains=doms)
    counts = Counter(zip(labels[picked].tolist(), doms[picked].tolist()))
    assert set(counts.values()) == {16 // 3} and len(counts) == 4 * 3  # 5 per (class, domain)
    with pytest.raises(ValueError, match="fewer than the 3 domains"):
        few_shot_indices(labels, 2, seed=0, domains=doms)


def test_few_shot_respects_pool_and_string_labels():
    labels = np.array(["b", "a", "b", "a", "b", "a"], dtype=object)
    pool = [0, 1, 2, 3]
    picked = few_shot_indices(labels, 1, seed=3, pool=pool)
    assert set(picked) <= set(pool) and sorted(labels[picked]) == ["a", "b"]


def test_few_shot_small_class_takes_all_with_warning(caplog):
    labels = np.array([0, 0, 0, 1])
    with caplog.at_level(logging.WARNING, logger="croft_core.data"):
        picked = few_shot_indices(labels, 2, seed=0)
    assert 3 in picked and len(picked) == 3
    assert "fewer than the 2 requested" in caplog.text


def test_few_shot_all_and_bad_shots():
    labels = np.array([0, 1, 1])
    assert few_shot_indices(labels, None, seed=0) == [0, 1, 2]
    assert few_shot_indices(labels, -1, seed=0, pool=[2, 0]) == [0, 2]
    with pytest.raises(ValueError, match="shots must be >= 1"):
        few_shot_indices(labels, 0, seed=0)


def test_few_shot_groups_are_independent():
    # A class's draw depends only on the seed and its own rows, not on which other classes exist.
    labels, _ = _labels_domains(classes=3)
    picked_all = few_shot_indices(labels, 4, seed=7)
    picked_sub = few_shot_indices(labels, 4, seed=7, pool=np.flatnonzero(labels != 2))
    assert [i for i in picked_all if labels[i] != 2] == picked_sub
