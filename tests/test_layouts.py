"""Every protocol on a fabricated miniature copy of its real data layout, end to end and offline.

The copies (``layoutgen.py``) have the real folder trees, class-name files and split JSON formats
with a few 8x8 images per class. The tests check split sizes, class restrictions, the no-overlap
rule, manifest round-trips, metrics, and that missing data fails at once with a useful message.
"""

from __future__ import annotations

import math

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import layoutgen as lg

from croft_core.data.benchmarks import (Benchmark, check_sources, imagenet_classes, imagenet_four_ood,
                                   imagenet_full_spectrum, materialize, materialize_from_manifest,
                                   read_manifest, setup1, setup1_class_split, setup1_published_classes,
                                   setup2, write_setup1_class_lists)
from croft_core.data.sources import DatasetUnavailableError, load_split
from croft_core.runs.pipeline import evaluate_checkpoint, train_and_evaluate
from croft_core.runs.train import method_config

ROLES = ("train", "val", "id_test", "covariate", "semantic")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    lg.make_imagenet_coop(root, lg.imagenet_subset(seed=1))
    lg.make_four_ood(root)
    lg.make_domain_dataset(root, "PACS", lg.PACS_CLASSES, lg.PACS_DOMAINS)
    lg.make_domain_dataset(root, "VLCS", lg.VLCS_CLASSES, lg.VLCS_DOMAINS)
    lg.make_open_sets(root)
    return root


def _all(bench: Benchmark, shots, seed: int = 1) -> dict:
    return {role: materialize(bench, role, shots=shots, seed=seed) for role in ROLES}


def _ids(split) -> set[str]:
    return set(split.ids)


def _labels_match_names(bench: Benchmark, split) -> bool:
    return [bench.classnames[k] for k in split.labels] == split.row_classes


def _quick(method: str = "croft"):
    return method_config(method, seed=1, max_steps=2, epochs=1, batch_size=8)


def _check_results(results: dict, bench: Benchmark) -> None:
    assert 0.0 <= results["id"]["accuracy"] <= 1.0 and results["id"]["n"] > 0
    assert [c["name"] for c in results["covariate"]] == [s.name for s in bench.covariate]
    assert [s["name"] for s in results["semantic"]] == [s.name for s in bench.semantic]
    no_id_side = results.get("detection", {}).get("n") == 0  # nothing classified correctly (Setup-II side)
    for entry in results["semantic"]:
        for score in ("energy", "mcm"):
            metrics = entry["scores"][score]
            if no_id_side:
                assert math.isnan(metrics["auroc"]) and math.isnan(metrics["fpr95"])
            else:
                assert 0.0 <= metrics["auroc"] <= 1.0 and 0.0 <= metrics["fpr95"] <= 1.0
    if bench.covariate:
        assert 0.0 <= results["full_spectrum"]["accuracy"] <= 1.0
        assert 0.0 <= results["full_spectrum"]["energy"]["auroc"] <= 1.0


def _check_manifest_round_trip(path: Path, bench: Benchmark | None = None, *, moved: bool = False) -> None:
    manifest = read_manifest(path)
    for role, records in manifest["splits"].items():
        rebuilt = materialize_from_manifest(bench, manifest, role)
        rebuilt = rebuilt if isinstance(rebuilt, list) else [rebuilt]
        records = records if isinstance(records, list) else [records]
        for record, split in zip(records, rebuilt):
            assert split.ids == record["ids"] and split.labels.tolist() == record["labels"]
            # the fingerprint (a feature-cache key) includes the data's location
            assert (split.fingerprint() == record["fingerprint"]) != moved


# ----------------------------------------------------------------------------------------- Setup-I


def test_setup1_published_class_lists(tmp_path):
    written = write_setup1_class_lists(tmp_path)
    names, _ = imagenet_classes()
    assert len(set(names)) == 1000
    for seed, path in zip((1, 2, 3), written):
        published = setup1_published_classes(seed)
        assert path.read_text().splitlines() == published  # the draw reproduces the shipped files
        assert setup1(seed=seed).classnames == tuple(published)
        id_idx, ood_idx = setup1_class_split(seed)
        assert len(id_idx) == 400 and len(ood_idx) == 600 and not set(id_idx) & set(ood_idx)
    assert setup1_published_classes(1) != setup1_published_classes(2)
    with pytest.raises(ValueError, match="seeds 1, 2 and 3"):
        setup1_published_classes(4)


def test_setup1_coop_layout_splits(data_root):
    bench = setup1(seed=1, root=str(data_root), val_shots=1)
    assert bench.classnames == tuple(setup1_published_classes(1))  # names from imagenet/classnames.txt
    check_sources(bench)
    s = _all(bench, shots=1)
    n_id = 6  # ID classes of seed 1 that have images in the miniature copy
    assert Counter(s["train"].labels.tolist()) == dict.fromkeys(set(s["train"].labels.tolist()), 1)
    assert len(s["train"]) == len(s["val"]) == n_id and len(s["id_test"]) == 2 * n_id
    assert not _ids(s["train"]) & _ids(s["val"])  # val: ImageNet train images the few-shot set left
    assert all(i.startswith("images/train/") for i in s["val"].ids)
    assert all(i.startswith("images/val/") for i in s["id_test"].ids)
    cov = {c.name: c for c in s["covariate"]}
    assert list(cov) == ["imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r"]
    assert len(cov["imagenet-v2"]) == len(cov["imagenet-sketch"]) == n_id  # held-out classes dropped
    id_names = set(bench.classnames)
    for split in (s["train"], s["val"], s["id_test"], *s["covariate"]):
        assert set(split.row_classes) <= id_names and _labels_match_names(bench, split)
    assert 0 < len(cov["imagenet-a"]) < n_id and 0 < len(cov["imagenet-r"]) < n_id  # 200-class subsets
    (ood,) = s["semantic"]
    assert len(ood) == 12 and set(ood.labels.tolist()) == {-1} and not set(ood.row_classes) & id_names
    assert not _ids(ood) & _ids(s["id_test"])
    # parity: the official val is drawn from the ID test split and overlaps it
    parity = setup1(seed=1, root=str(data_root), val_shots=1, official_val=True)
    parity_val = materialize(parity, "val", shots=1, seed=1)
    assert _ids(parity_val) <= _ids(materialize(parity, "id_test", shots=1, seed=1))


def test_setup1_flat_layout(tmp_path):
    _, wnids = imagenet_classes()
    lg.make_imagenet_coop(tmp_path, [0, 1], n_train=2, n_val=1, adversarial=[1], rendition=[0], flat=True)
    bench = setup1(seed=1, root=str(tmp_path), id_fraction=0.5, classnames=[f"c{i}" for i in range(1000)])
    train = materialize(bench, "train", shots=1, seed=1)
    assert set(train.row_classes) <= set(bench.classnames) and len(train) >= 1
    assert bench.train.source == str(tmp_path / "imagenet")
    assert bench.covariate[0].source == str(tmp_path / "imagenetv2")
    assert dict(bench.covariate[2].class_map)[wnids[1]] == "c1"


def test_setup1_end_to_end(data_root, tiny_backbone, tmp_path):
    bench = setup1(seed=1, root=str(data_root), val_shots=1, covariate=("imagenet_v2", "imagenet_a"))
    results = train_and_evaluate(tiny_backbone, bench, _quick(), shots=1, out_dir=tmp_path / "run",
                                 views=1, cache_dir=tmp_path / "cache", progress=False)
    _check_results(results, bench)
    assert results["shots"] == 1 and results["id"]["n"] == 12
    manifest = read_manifest(tmp_path / "run" / "manifest.json")
    assert manifest["seed"] == 1 and manifest["benchmark"]["classnames"] == list(bench.classnames)
    _check_manifest_round_trip(tmp_path / "run" / "manifest.json")


# ---------------------------------------------------------------------------------------- Setup-II


def test_setup2_pacs_layout_splits(data_root):
    bench = setup2("pacs", "sketch", root=str(data_root), val_shots=1,
                   open_set=("dtd", "food101", "caltech101", "flowers"))
    assert bench.train.source == str(data_root / "PACS" / "test_on_sketch.json")
    s = _all(bench, shots=3)
    per_cd = Counter(zip(s["train"].row_classes, s["train"].domains))
    assert len(per_cd) == 7 * 3 and set(per_cd.values()) == {1}  # 3 // 3 domains per (class, domain)
    assert "sketch" not in set(s["train"].domains) | set(s["val"].domains) | set(s["id_test"].domains)
    assert Counter(s["val"].labels.tolist()) == dict.fromkeys(range(7), 1)  # from the JSON's val list
    assert len(s["id_test"]) == 7 * 3 * 2 - len(s["train"]) and not _ids(s["train"]) & _ids(s["id_test"])
    (held_out,) = s["covariate"]
    assert set(held_out.domains) == {"sketch"} and len(held_out) == 7 * 3
    for split in (s["train"], s["val"], s["id_test"], held_out):
        assert _labels_match_names(bench, split)
    sem = {x.name: x for x in s["semantic"]}
    assert all(set(x.labels.tolist()) == {-1} and len(x) == 9 for n, x in sem.items() if n != "caltech101")
    # official filter: the 92 classes the official run kept (CoOp's "airplane", "face", "leopard" and
    # "motorbike" were not in its raw-folder spelled list; "elephant" etc. are dropped for PACS)
    caltech = set(sem["caltech101"].row_classes)
    assert len(caltech) == 92 and {"accordion", "pizza", "chair"} <= caltech
    assert not caltech & {"airplane", "face", "leopard", "motorbike", "elephant", "dalmatian"}
    excl = setup2("pacs", "sketch", root=str(data_root), open_set=("caltech101",), caltech_filter="exclude")
    kept = set(materialize(excl, "semantic")[0].row_classes)
    assert len(kept) == 96 and {"airplane", "face"} <= kept and "elephant" not in kept
    capped = setup2("pacs", "sketch", root=str(data_root), open_set=("dtd",), open_set_max_per_class=2,
                    eval_max_per_class=2)
    assert Counter(materialize(capped, "semantic")[0].row_classes) == dict.fromkeys(lg.DTD_CLASSES, 2)
    assert Counter(materialize(capped, "covariate")[0].labels.tolist()) == dict.fromkeys(range(7), 2)


def test_setup2_samplers(data_root):
    each = setup2("pacs", "photo", root=str(data_root), sampler="per_domain")
    train = materialize(each, "train", shots=2, seed=3)
    assert set(Counter(zip(train.row_classes, train.domains)).values()) == {2}
    official = setup2("pacs", "photo", root=str(data_root), sampler="official")
    train = materialize(official, "train", shots=6, seed=3)  # 7 classes x 3 domains x 6 // 3
    assert len(train) == 7 * 3 * 2 and set(Counter(train.domains).values()) == {7 * 2}
    assert materialize(official, "train", shots=6, seed=3).ids == train.ids  # seeded
    vlcs = setup2("vlcs", "PASCAL", root=str(data_root), sampler="official", val_shots=1, open_set=("dtd",))
    assert vlcs.train.source.endswith("VLCS/test_on_pascal.json")
    s = _all(vlcs, shots=2)
    assert Counter(s["train"].labels.tolist()) == dict.fromkeys(range(5), 2)  # VLCS: per class
    assert set(s["covariate"][0].domains) == {"PASCAL"} and "PASCAL" not in set(s["train"].domains)


def test_setup2_end_to_end_and_moved_data(data_root, tiny_backbone, tmp_path):
    bench = setup2("pacs", "sketch", root=str(data_root), val_shots=1, open_set=("dtd", "caltech101"))
    results = train_and_evaluate(tiny_backbone, bench, _quick(), shots=3, out_dir=tmp_path / "run",
                                 views=1, cache_dir=tmp_path / "cache", progress=False)
    _check_results(results, bench)
    assert results["covariate"][0]["n"] == 21 and results["semantic"][1]["n"] == 92 * 3
    # ids are paths relative to the data, so the manifest still rebuilds after the data moves
    moved = tmp_path / "moved"
    for name in ("PACS", "dtd", "caltech-101"):
        shutil.copytree(data_root / name, moved / name)
    moved_bench = setup2("pacs", "sketch", root=str(moved), val_shots=1, open_set=("dtd", "caltech101"))
    _check_manifest_round_trip(tmp_path / "run" / "manifest.json", moved_bench, moved=True)


# ------------------------------------------------------------------------ four-OOD, full-spectrum


def test_four_ood_and_full_spectrum(data_root, tiny_backbone, tmp_path):
    four = imagenet_four_ood(root=str(data_root), val_shots=1)
    assert len(four.classnames) == 1000 and four.train.source == str(data_root / "imagenet")
    model_results = []
    for bench in (four, imagenet_full_spectrum(root=str(data_root), val_shots=1,
                                               covariate=("imagenet_v2", "imagenet_r"))):
        from croft_core.runs.evaluate import zeroshot_model

        results, _ = evaluate_checkpoint(tiny_backbone, bench, zeroshot_model(tiny_backbone, bench), seed=1,
                                         shots=1, knn=False, cache_dir=tmp_path / "cache")
        _check_results(results, bench)
        assert [(x["name"], x["n"]) for x in results["semantic"]] == [
            ("inaturalist", 3), ("sun", 3), ("places", 3), ("textures", 9)]
        model_results.append(results)
    four_res, fs_res = model_results
    assert [c["name"] for c in fs_res["covariate"]] == ["imagenet-v2", "imagenet-r"]
    assert fs_res["id"] == four_res["id"]  # same ID test set; covariate sets only add to full-spectrum
    sets = [fs_res["id"], *fs_res["covariate"]]  # accuracy over ID + covariate, image-weighted
    expected = sum(x["accuracy"] * x["n"] for x in sets) / sum(x["n"] for x in sets)
    assert fs_res["full_spectrum"]["accuracy"] == pytest.approx(expected)


# ------------------------------------------------------------------------------- fail-fast errors


def test_missing_data_fails_at_once_naming_what_was_expected(data_root, tmp_path):
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        check_sources(setup1(seed=1, root=str(tmp_path)))
    message = str(err.value)
    for expected in ("images/train", "imagenet-sketch", "imagenet-adversarial/imagenet-a",
                     "imagenetv2-matched-frequency-format-val"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match=r"PACS/test_on_sketch\.json"):
        check_sources(setup2("pacs", "sketch", root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"SUN"):
        check_sources(imagenet_four_ood(root=str(tmp_path)), roles=("semantic",))
    with pytest.raises(ValueError, match=r"does not exist.*classnames\.txt"):
        setup1(seed=1, root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"iNaturalist/.*huangrui"):
        imagenet_four_ood()
    # a split file that lists images that are not there
    broken = tmp_path / "PACS"
    broken.mkdir()
    (broken / "images").mkdir()
    (broken / "test_on_sketch.json").write_text(json.dumps(
        {"train": [["photo/dog/x.jpg", 0, "dog"]], "val": [], "test": []}))
    with pytest.raises(FileNotFoundError, match=r"first image 'photo/dog/x\.jpg'"):
        load_split(str(broken / "test_on_sketch.json"), "train", layout="domain_split_json")


def test_unreachable_hub_id_fails_at_once():
    bench = setup2("pacs", "sketch")  # Hub default; tests run with HF_HUB_OFFLINE=1
    with pytest.raises(DatasetUnavailableError, match="flwrlabs/pacs"):
        materialize(bench, "train", shots=1)


def test_layout_readers(data_root):
    ds, names = load_split(str(data_root / "oxford_flowers" / "split_zhou_OxfordFlowers.json"),
                           "train+val+test", layout="split_json")
    assert names == list(lg.FLOWER_CLASSES) and len(ds) == 9 and ds[0]["id"] == "image_00001.jpg"
    ds, names = load_split(str(data_root / "iNaturalist"), ".", label_column=None, layout="folders")
    assert names == [] and len(ds) == 3 and ds[0]["image"].size == (8, 8)
    ds, names = load_split(str(data_root / "VLCS" / "test_on_sun.json"), "test", layout="domain_split_json")
    assert set(ds["domain"]) == {"SUN"} and names == list(lg.VLCS_CLASSES)
    with pytest.raises(ValueError, match=r"Split 'validation' not found.*\['test', 'train', 'val'\]"):
        load_split(str(data_root / "VLCS" / "test_on_sun.json"), "validation", layout="domain_split_json")


def test_walk_follows_no_symlink(tmp_path):
    """A link loop or a linked file inside a dataset folder is skipped, never walked."""
    import os

    from PIL import Image

    from croft_core.data.layouts import _subfolders, _walk_images

    (tmp_path / "cat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "a.png")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    os.symlink(outside, tmp_path / "cat" / "linked.png")
    os.symlink(tmp_path, tmp_path / "cat" / "loop")  # would recurse forever with followlinks=True
    os.symlink(tmp_path / "cat", tmp_path / "dog")
    assert _walk_images(str(tmp_path)) == [str(tmp_path / "cat" / "a.png")]
    assert _subfolders(tmp_path) == ["cat"]
