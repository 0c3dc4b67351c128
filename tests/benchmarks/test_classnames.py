"""croft_core.data.benchmarks.classnames: class names matched ignoring case and '_', official counts checked."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
import pytest
from datagen import make_tiny_dataset_dict

from croft_core.data.benchmarks import (Benchmark, ClassMatchError, SplitSpec, class_key, materialize,
                                   materialize_from_manifest, read_manifest, replace_spec, setup2,
                                   write_manifest)
from croft_core.data.benchmarks.hub_sources import CALTECH101_CLASSES


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))


@pytest.fixture(scope="module")
def flwrlabs_caltech(tmp_path_factory):
    """A tiny stand-in for flwrlabs/caltech101: its 101 lower-case class names, one image each."""
    root = tmp_path_factory.mktemp("caltech") / "caltech101"
    return str(make_tiny_dataset_dict(root, classes=CALTECH101_CLASSES, domains=("photo",), n=1, size=4,
                                      splits=("train",)))


def test_class_key():
    assert class_key("Faces_easy") == class_key("faces easy") == class_key(" FACES  easy ")
    assert class_key("faces") != class_key("faces_easy")


@pytest.mark.parametrize(("dataset", "official"), [("pacs", 92), ("vlcs", 84)])
def test_caltech_open_set_keeps_the_official_count_from_flwrlabs_names(flwrlabs_caltech, dataset, official):
    # The official keep lists were written in the raw folders' capitalisation; matched exactly against
    # flwrlabs/caltech101's lower-case names they kept 93 / 85 classes. Now: exactly the official count.
    bench = setup2(dataset, root="/unused" if dataset == "vlcs" else None, open_set=("caltech101",),
                   open_set_sources={"caltech101": flwrlabs_caltech})
    (spec,) = bench.semantic
    assert spec.n_classes == official and spec.revision is None
    (caltech,) = materialize(dataclasses.replace(bench, semantic=(dataclasses.replace(
        spec, split="train", layout=None),)), "semantic")
    kept = set(caltech.row_classes)
    assert len(kept) == official and set(caltech.labels.tolist()) == {-1}
    assert not kept & {"faces_easy", "leopards", "motorbikes", "airplanes", "dalmatian", "snoopy"}


def test_official_count_mismatch_fails_loudly(flwrlabs_caltech):
    bench = setup2("pacs", open_set=("caltech101",), open_set_sources={"caltech101": flwrlabs_caltech})
    (spec,) = bench.semantic
    with pytest.raises(ClassMatchError, match=r"keeps 92 classes .* official count is 93"):
        materialize(replace_spec(bench, "semantic", n_classes=93), "semantic")
    with pytest.raises(ClassMatchError, match=r"1 of the 93 classes to keep are not in the data.*BACKGROUND"):
        wrong = replace_spec(bench, "semantic", classes=(*spec.classes, "BACKGROUND_Google"), n_classes=93)
        materialize(wrong, "semantic")
    # without an official count, a keep list may name classes the data lacks (a filter, not a census)
    assert len(materialize(replace_spec(bench, "semantic", classes=("pizza", "nothere"), n_classes=None),
                           "semantic")[0]) == 1


def _one_split_benchmark(source: str, classnames: tuple[str, ...], **spec_fields) -> Benchmark:
    spec = SplitSpec("test", source, split="test", **spec_fields)
    return Benchmark(name="b", classnames=classnames, train=dataclasses.replace(spec, split="train"),
                     val=dataclasses.replace(spec, split="validation"), id_test=spec)


def test_id_classes_match_ignoring_case_and_underscores(tmp_path):
    classes = ("Circle", "SQUARE", "tri_angle", "star")
    source = str(make_tiny_dataset_dict(tmp_path / "d", classes=classes, n=1, domains=("photo",)))
    bench = _one_split_benchmark(source, ("circle", "tri angle", "square"), exclude_classes=("STAR",))
    test = materialize(bench, "id_test")
    assert sorted(test.row_classes) == ["circle", "square", "tri angle"]  # the benchmark's spelling
    assert [bench.classnames[k] for k in test.labels] == test.row_classes
    renamed = _one_split_benchmark(source, ("round", "square", "tri angle"), class_map={"circle": "round"})
    assert "round" in materialize(renamed, "id_test").row_classes  # class_map keys match the same way


def test_names_that_differ_only_in_case_are_ambiguous(tmp_path):
    source = str(make_tiny_dataset_dict(tmp_path / "d", classes=("Faces", "faces", "star"), n=1,
                                        domains=("photo",)))
    with pytest.raises(ClassMatchError, match=r"'Faces' and 'faces' differ only in case"):
        materialize(_one_split_benchmark(source, ("star",)), "id_test")
    fixed = _one_split_benchmark(source, ("star", "face"), class_map={"Faces": "face"})
    assert sorted(set(materialize(fixed, "id_test").row_classes)) == ["face", "star"]


def test_manifest_records_the_revision(tmp_path):
    source = str(make_tiny_dataset_dict(tmp_path / "d", classes=("circle", "square"), n=1,
                                        domains=("photo",)))
    bench = _one_split_benchmark(source, ("circle", "square"))
    plain = materialize(bench, "id_test")
    pinned_bench = replace_spec(bench, "id_test", revision="abc123")  # a local source ignores it on read
    pinned = materialize(pinned_bench, "id_test")
    assert pinned.revision == "abc123" and pinned.fingerprint() != plain.fingerprint()
    path = write_manifest(tmp_path / "m.json", pinned_bench, {"id_test": pinned}, seed=1, shots=None)
    assert read_manifest(path)["splits"]["id_test"]["revision"] == "abc123"
    assert materialize_from_manifest(None, path, "id_test").ids == pinned.ids
    with pytest.raises(ValueError, match=r"read at revision 'abc123', the definition reads None"):
        materialize_from_manifest(bench, path, "id_test")
    assert np.array_equal(pinned.labels, plain.labels)
