"""croft_core.data.benchmarks.hub_check / hub_sources: the Hub sources against metadata recorded from their cards.

The fixtures under ``fixtures/hub/`` were written from the public dataset cards, repository and viewer
pages (each says where in ``recorded_from``); nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from croft_core.data.benchmarks import (HUB_SOURCES, check_hub_sources, compare_source, format_source_table,
                                   setup1, setup2)
from croft_core.data.benchmarks.hub_check import sources_of
from croft_core.data.sources import DatasetUnavailableError

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
FAKE_NAMES = [f"class {i}" for i in range(1000)]


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict]:
    records = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    return {r["repo_id"]: r for r in records}


def _by_name(rows):
    return {r.name: r for r in rows}


def test_every_source_matches_what_its_card_says(recorded):
    rows = _by_name(check_hub_sources(builder_info=recorded))
    assert list(rows) == list(HUB_SOURCES)
    assert not [r for r in rows.values() if r.status == "mismatch"], format_source_table(list(rows.values()))
    for name in ("imagenet_sketch", "imagenet_a", "imagenet_r", "pacs"):  # card metadata and sha recorded
        assert rows[name].status == "ok", format_source_table([rows[name]])
    assert rows["imagenet"].status == "gated"
    # no commit recorded (pinned to a named ref) or no card metadata at all: said, not passed as ok
    for name in ("imagenet_v2", "caltech101", "dtd", "flowers", "food101"):
        assert rows[name].status == "unverified"


def test_the_old_definitions_fail_against_the_cards(recorded):
    """The defects issue 14 found, each reported by the comparison."""
    sketch = dataclasses.replace(HUB_SOURCES["imagenet_sketch"], image_column="webp")  # the old column
    row = compare_source("imagenet_sketch", sketch, recorded[sketch.repo_id])
    assert row.status == "mismatch"
    assert any("image column 'webp'" in p and "'jpg'" in p for p in row.problems)
    old_a = dataclasses.replace(HUB_SOURCES["imagenet_a"], label_column="wnid", label_kind="string")
    assert compare_source("imagenet_a", old_a, recorded[old_a.repo_id]).status == "mismatch"
    missing = {"repo_id": "axiong/imagenet-a", "access": "missing", "error": "RepositoryNotFoundError"}
    row = compare_source("imagenet_a", dataclasses.replace(old_a, repo_id="axiong/imagenet-a"), missing)
    assert row.status == "missing" and "fix the definition" in row.message
    # the official keep-list spelling (BACKGROUND_Google is no flwrlabs class)
    raw = dataclasses.replace(HUB_SOURCES["caltech101"], class_names=("BACKGROUND_Google", "Faces_easy"))
    row = compare_source("caltech101", raw, recorded[raw.repo_id])
    assert row.status == "mismatch" and any("1 of 2 names match" in p for p in row.problems)


def test_counts_classes_and_revision_are_compared(recorded):
    pacs = recorded["flwrlabs/pacs"]
    config = pacs["configs"]["default"]
    fewer_rows = {**pacs, "configs": {"default": {**config, "splits": {"train": 9990}}}}
    row = compare_source("pacs", HUB_SOURCES["pacs"], fewer_rows)
    assert row.status == "mismatch" and any("9990 rows, the card says 9991" in p for p in row.problems)
    label = {"names": ["dog", "horse"], "_type": "ClassLabel"}
    two = {**pacs, "configs": {"default": {**config, "features": {**config["features"], "label": label}}}}
    problems = compare_source("pacs", HUB_SOURCES["pacs"], two).problems
    assert any("2 classes, the card says 7" in p for p in problems)
    moved = {**pacs, "sha": "0" * 40}
    assert any(p.startswith("revision") for p in compare_source("pacs", HUB_SOURCES["pacs"], moved).problems)
    no_domain = {**pacs, "configs": {"default": {**config, "features": {"image": {"_type": "Image"}}}}}
    problems = compare_source("pacs", HUB_SOURCES["pacs"], no_domain).problems
    assert any("domain column 'domain'" in p for p in problems) and any("label column" in p for p in problems)


def test_the_table_says_what_to_do(recorded):
    rows = check_hub_sources("setup1", builder_info=recorded)
    assert [r.name for r in rows] == ["imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a",
                                      "imagenet_r"]
    table = format_source_table(rows)
    header, rule = table.splitlines()[:2]
    assert header.split() == ["source", "repository", "@", "revision", "status", "resolved", "commit"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert "ILSVRC/imagenet-1k @ refs/convert/parquet" in table and "gated" in table
    assert "HF_TOKEN" in table and "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in table
    assert "barkermrl/imagenet-a @ 0358b7e" in table
    assert table.rstrip().endswith("3 ok, 1 unverified, 1 gated")


def test_which_sources_a_benchmark_reads():
    assert set(sources_of("setup2")) == {"pacs", "dtd", "food101", "caltech101", "flowers"}
    assert set(sources_of("imagenet_four_ood")) == {"imagenet", "dtd"}
    assert sources_of("shapes") == {}
    with pytest.raises(ValueError, match="Unknown benchmark 'imagenet-21k'"):
        check_hub_sources("imagenet-21k", builder_info={})


def test_offline_check_fails_at_once():
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match=r"HF_HUB_OFFLINE=1.*nothing was checked"):
        check_hub_sources("setup2")
    assert time.monotonic() - start < 2


def test_definitions_read_the_catalogue():
    bench = setup1(classnames=FAKE_NAMES)
    assert (bench.train.source, bench.train.revision) == ("ILSVRC/imagenet-1k", "refs/convert/parquet")
    sketch, imagenet_a = bench.covariate[1], bench.covariate[2]
    assert (sketch.image_column, sketch.label_column) == ("jpg", "cls")
    assert sketch.revision == HUB_SOURCES["imagenet_sketch"].revision
    assert (imagenet_a.source, imagenet_a.split, imagenet_a.label_column) == ("barkermrl/imagenet-a", "train",
                                                                              "label")
    wnids = (Path(__file__).parents[2] / "croft_core/data/vocab/benchmarks/imagenet_wnids.txt").read_text().split()
    assert dict(imagenet_a.class_map)[wnids[6]] == "class 6"  # the 200-class subset maps by wnid
    pacs = setup2("pacs")
    assert (pacs.train.source, pacs.train.revision) == ("flwrlabs/pacs", HUB_SOURCES["pacs"].revision)
    overridden = setup1(classnames=FAKE_NAMES, sources={"imagenet_a": "someone/imagenet-a"}).covariate[2]
    assert overridden.revision is None  # a pinned revision belongs to its own repository


def test_online_metadata_is_read_without_data(monkeypatch):
    """The fetch path with the Hub API and the builder replaced: what it records, and the gate."""
    from croft_core.data.benchmarks import hub_fetch

    features = datasets.Features({"image": datasets.Image(), "domain": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(HUB_SOURCES["pacs"].class_names))})
    builder = SimpleNamespace(config=SimpleNamespace(name="default"), info=SimpleNamespace(
        features=features, splits={"train": SimpleNamespace(num_examples=9991)}))
    info = SimpleNamespace(sha=HUB_SOURCES["pacs"].revision, gated=False,
                           card_data=SimpleNamespace(to_dict=lambda: {"license": "unknown"}))
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", lambda self, repo_id, **kw: info)
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda *a, **kw: builder)
    monkeypatch.setattr(hub_fetch, "hub_unreachable_reason", lambda: None)
    (row,) = [r for r in check_hub_sources("setup2") if r.name == "pacs"]
    assert row.status == "ok" and row.resolved_sha == HUB_SOURCES["pacs"].revision

    def gated(*args, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError("Dataset 'ILSVRC/imagenet-1k' is a gated dataset")

    monkeypatch.setattr(datasets, "load_dataset_builder", gated)
    info.gated = "manual"
    record = hub_fetch.fetch_hub_metadata(HUB_SOURCES["imagenet"])
    assert record["access"] == "gated" and record["gated"] == "manual"
