"""croft_core.data.sources: sources (save_to_disk, image folders, Hub ids) and their errors."""

from __future__ import annotations

import os
import socket
import time

import datasets
import pytest
from datagen import CLASSES, DOMAINS, make_tiny_dataset_dict, make_tiny_imagefolder

from croft_core.data import sources as data
from croft_core.data.sources import DatasetUnavailableError, column_array, load_split


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
