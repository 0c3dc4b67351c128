"""croft_core.data.benchmarks: definitions as data, materialize, overlap rules, manifests, registry."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections import Counter

import datasets
import numpy as np
import PIL.Image
import pytest
from datagen import (CLASSES, TINY_ID_CLASSES, class_colour, make_tiny_dataset_dict, make_tiny_imagefolder,
                     tiny_benchmark)

from croft_core.data.benchmarks import (BENCHMARKS, Benchmark, LoadedSplit, SplitSpec, get_benchmark, materialize,
                                   materialize_from_manifest, read_classnames, read_manifest, register_benchmark,
                                   replace_spec, setup1, setup2, write_manifest)

N = 4  # images per (split, class, domain) in the tiny data


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Benchmark:
    return tiny_benchmark(tmp_path_factory.mktemp("tiny"), n=N)


def _ids(split: LoadedSplit) -> set[str]:
    return set(split.ids)


def _mean_colour(split: LoadedSplit, i: int) -> np.ndarray:
    return np.asarray(split.image(i), dtype=np.float32).reshape(-1, 3).mean(0)


# ----------------------------------------------------------------------------------- materialize


def test_train_is_few_shot_per_class_in_the_id_domain(tiny):
    train = materialize(tiny, "train", shots=2, seed=1)
    assert Counter(train.labels.tolist()) == {0: 2, 1: 2, 2: 2}
    assert set(train.domains) == {"photo"}
    assert [tiny.classnames[k] for k in train.labels] == train.row_classes
    assert len(train.dataset) == len(train) == 6


def test_train_sampling_is_seeded(tiny):
    a = materialize(tiny, "train", shots=2, seed=1)
    assert materialize(tiny, "train", shots=2, seed=1).ids == a.ids
    assert materialize(tiny, "train", shots=2, seed=2).ids != a.ids
    assert len(materialize(tiny, "train", shots=None, seed=1)) == len(TINY_ID_CLASSES) * N


def test_shots_per_class_domain(tmp_path):
    bench = tiny_benchmark(tmp_path, n=N)
    both = replace_spec(bench, "train", domains=None)
    bench = dataclasses.replace(both, shots_per="class_domain")
    train = materialize(bench, "train", shots=4, seed=0)
    counts = Counter(zip(train.row_classes, train.domains))
    assert len(counts) == 3 * 2 and set(counts.values()) == {2}  # 4 // 2 domains per (class, domain)


def test_eval_sets(tiny):
    id_test = materialize(tiny, "id_test", seed=1)
    (sketch,) = materialize(tiny, "covariate", seed=1)
    (unseen,) = materialize(tiny, "semantic", seed=1)
    assert len(id_test) == 3 * N and set(id_test.domains) == {"photo"}
    assert sketch.name == "sketch" and set(sketch.domains) == {"sketch"}
    assert sorted(set(sketch.labels)) == [0, 1, 2]
    assert unseen.name == "unseen-shapes" and set(unseen.labels) == {-1}
    assert set(unseen.row_classes) == {"star"}
    assert len(unseen) == 2 * N  # both domains of the star class
    assert not (_ids(id_test) & _ids(sketch))


def test_labels_follow_class_names_not_dataset_order(tmp_path):
    # The dataset's ClassLabel order differs from the benchmark's class order.
    shuffled = ("triangle", "star", "circle", "square")
    make_tiny_dataset_dict(tmp_path / "d", classes=shuffled, n=2)
    bench = Benchmark(
        name="order", classnames=("circle", "square", "triangle"),
        train=SplitSpec("train", str(tmp_path / "d"), split="train"),
        val=SplitSpec("val", str(tmp_path / "d"), split="validation"),
        id_test=SplitSpec("test", str(tmp_path / "d"), split="test"),
    )
    test = materialize(bench, "id_test")
    assert len(test) == 3 * 2 * 2  # star dropped
    for i, label in enumerate(test.labels):
        assert test.row_classes[i] == bench.classnames[label]
    photo = [i for i in range(len(test)) if test.dataset[i]["domain"] == "photo"]
    for i in photo:  # each image really shows the class its label names
        assert np.abs(_mean_colour(test, i) - class_colour(bench.classnames[test.labels[i]])).max() < 20


def test_class_map_renames_dataset_classes(tmp_path):
    make_tiny_dataset_dict(tmp_path / "d", classes=("c0", "c1", "c2"), n=2, domains=("photo",))
    spec = SplitSpec("test", str(tmp_path / "d"), class_map={"c0": "circle", "c2": "triangle"})
    bench = Benchmark(
        name="m", classnames=("triangle", "circle"), train=dataclasses.replace(spec, split="train"),
        val=dataclasses.replace(spec, split="validation"), id_test=spec,
    )
    test = materialize(bench, "id_test")
    assert sorted(Counter(test.row_classes).items()) == [("circle", 2), ("triangle", 2)]
    assert all(bench.classnames[k] == c for k, c in zip(test.labels, test.row_classes))


def test_no_benchmark_class_in_set_suggests_class_map(tmp_path):
    make_tiny_dataset_dict(tmp_path / "d", classes=("c0", "c1"), n=1, domains=("photo",))
    spec = SplitSpec("test", str(tmp_path / "d"))
    bench = Benchmark(name="m", classnames=("circle",), train=spec, val=spec, id_test=spec)
    with pytest.raises(ValueError, match=r"None of benchmark 'm'.s classes appear.*class_map"):
        materialize(bench, "id_test")


# --------------------------------------------------------------------------------------- overlap


def test_val_drawn_from_rows_train_did_not_use(tiny):
    shared = replace_spec(tiny, "val", split="train")  # val reads the train split too
    train = materialize(shared, "train", shots=2, seed=5)
    val = materialize(shared, "val", shots=2, seed=5)
    assert Counter(val.labels.tolist()) == {0: 2, 1: 2, 2: 2}
    assert not (_ids(train) & _ids(val))
    # with every train image taken, a shared-split val is empty: a clear error, not silent overlap
    with pytest.raises(ValueError, match=r"val set .* is empty .*removing rows used by train"):
        materialize(shared, "val", shots=None, seed=5)


def test_val_never_overlaps_test_on_a_shared_split(tiny):
    shared = replace_spec(tiny, "val", split="test")  # val and id_test read the test split
    val = materialize(shared, "val", shots=2, seed=1)
    test = materialize(shared, "id_test", shots=2, seed=1)
    assert len(val) == 3 * 2 and len(test) == 3 * N - 3 * 2
    assert not (_ids(val) & _ids(test))
    parity = dataclasses.replace(shared, allow_val_test_overlap=True)  # the official behaviour
    parity_val = materialize(parity, "val", shots=2, seed=1)
    assert _ids(parity_val) <= _ids(materialize(parity, "id_test", shots=2, seed=1))


def test_test_sets_exclude_train_rows_on_a_shared_split(tiny):
    shared = replace_spec(tiny, "id_test", split="train")
    train = materialize(shared, "train", shots=1, seed=0)
    test = materialize(shared, "id_test", shots=1, seed=0)
    assert not (_ids(train) & _ids(test)) and len(test) == 3 * N - 3


# -------------------------------------------------------------------------------------- semantic


def test_semantic_set_must_exclude_id_classes(tiny):
    leaky = replace_spec(tiny, "semantic", classes=None)  # the whole test split, ID classes included
    with pytest.raises(ValueError, match=r"'unseen-shapes' contains .* ID classes.*exclude_classes"):
        materialize(leaky, "semantic")
    fixed = replace_spec(tiny, "semantic", classes=None, exclude_classes=TINY_ID_CLASSES)
    assert set(materialize(fixed, "semantic")[0].row_classes) == {"star"}
    with pytest.raises(ValueError, match="keeps ID classes"):
        replace_spec(tiny, "semantic", classes=("star", "circle"))


def test_caps_are_seeded(tiny):
    capped = replace_spec(tiny, "covariate", max_per_class=2)
    (a,) = materialize(capped, "covariate", seed=1)
    assert Counter(a.labels.tolist()) == {0: 2, 1: 2, 2: 2}
    assert materialize(capped, "covariate", seed=1)[0].ids == a.ids
    total = replace_spec(tiny, "semantic", max_total=3)
    (b,) = materialize(total, "semantic", seed=1)
    assert len(b) == 3 and materialize(total, "semantic", seed=2)[0].ids != b.ids


def test_unknown_domain_lists_available(tiny):
    bad = replace_spec(tiny, "covariate", domains=("clipart",))
    with pytest.raises(ValueError, match=r"domain\(s\) \['clipart'\] not found.*\['photo', 'sketch'\]"):
        materialize(bad, "covariate")


def test_image_folder_benchmark_with_domains(tmp_path):
    root = make_tiny_imagefolder(tmp_path / "if", n=2, splits=("train", "test"))
    source = f"imagefolder:{root}"

    def spec(name, split, doms):
        return SplitSpec(name, source, split=split, domain_column="domain", domains=doms)

    bench = Benchmark(
        name="folder", classnames=("square", "circle"),
        train=spec("photo", "train", ("photo",)), val=spec("photo-val", "train", ("photo",)),
        id_test=spec("photo", "test", ("photo",)), covariate=(spec("sketch", "test", ("sketch",)),),
        semantic=(SplitSpec("star", source, split="test", classes=("star",)),), val_shots=1,
    )
    train = materialize(bench, "train", shots=1, seed=0)
    val = materialize(bench, "val", shots=1, seed=0)
    assert sorted(train.labels.tolist()) == [0, 1] and not (_ids(train) & _ids(val))
    assert all(bench.classnames[k] == c for k, c in zip(train.labels, train.row_classes))
    assert len(materialize(bench, "semantic")[0]) == 2 * 2


# ----------------------------------------------------------------------------------- LoadedSplit


def test_loaded_split_image_and_fingerprint(tiny):
    train = materialize(tiny, "train", shots=1, seed=0)
    img = train.image(0)
    assert isinstance(img, PIL.Image.Image) and img.mode == "RGB"
    assert train.fingerprint() == materialize(tiny, "train", shots=1, seed=0).fingerprint()
    assert train.fingerprint() != materialize(tiny, "train", shots=1, seed=1).fingerprint()
    assert train.ids[0].startswith(f"{tiny.train.source}:train:")


# ------------------------------------------------------------------------------------- manifests


def _all_roles(bench, shots, seed):
    roles = ("train", "val", "id_test", "covariate", "semantic")
    return {role: materialize(bench, role, shots=shots, seed=seed) for role in roles}


def test_manifest_round_trip(tiny, tmp_path):
    splits = _all_roles(tiny, 2, 3)
    path = write_manifest(tmp_path / "run" / "manifest.json", tiny, splits, seed=3, shots=2)
    manifest = read_manifest(path)
    assert manifest["seed"] == 3 and manifest["shots"] == 2
    assert manifest["splits"]["train"]["n"] == 6 and manifest["splits"]["semantic"][0]["classes"] == ["star"]
    for role, original in splits.items():
        rebuilt = materialize_from_manifest(tiny, path, role)
        pairs = zip(original, rebuilt) if isinstance(original, list) else [(original, rebuilt)]
        for a, b in pairs:
            assert (a.name, a.ids, a.domains) == (b.name, b.ids, b.domains)
            assert a.labels.tolist() == b.labels.tolist()
            assert a.fingerprint() == b.fingerprint()


def test_manifest_uses_id_column_and_survives_a_move(tmp_path, caplog):
    make_tiny_dataset_dict(tmp_path / "a" / "tiny", n=N, with_ids=True)
    bench = tiny_benchmark(tmp_path / "a", n=N)
    train = materialize(bench, "train", shots=2, seed=0)
    assert all(i.startswith("train-") for i in train.ids)  # the dataset's own ids
    path = write_manifest(tmp_path / "m.json", bench, {"train": train}, seed=0, shots=2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = tiny_benchmark(tmp_path / "b")
    assert materialize_from_manifest(moved, path, "train").ids == train.ids

    plain = tiny_benchmark(tmp_path / "c", n=N)  # positional ids, then the folder moves
    train = materialize(plain, "train", shots=2, seed=0)
    path = write_manifest(tmp_path / "m2.json", plain, {"train": train}, seed=0, shots=2)
    shutil.copytree(tmp_path / "c", tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="croft_core.data.benchmarks"):
        rebuilt = materialize_from_manifest(tiny_benchmark(tmp_path / "d"), path, "train")
    assert rebuilt.labels.tolist() == train.labels.tolist() and rebuilt.rows.tolist() == train.rows.tolist()
    assert "reading rows by position" in caplog.text


def test_manifest_errors(tiny, tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a CRoFT manifest"):
        read_manifest(tmp_path / "x.json")
    train = materialize(tiny, "train", shots=1)
    path = write_manifest(tmp_path / "m.json", tiny, {"train": train}, seed=1, shots=1)
    with pytest.raises(ValueError, match=r"no 'val' split; it holds \['train'\]"):
        materialize_from_manifest(tiny, path, "val")


# ----------------------------------------------------------------------------------- definitions


FAKE_WNIDS = [f"n{i:08d}" for i in range(1000)]
FAKE_NAMES = [f"class {i}" for i in range(1000)]


def _registered_examples(tmp_path):
    yield setup1(seed=1, classnames=FAKE_NAMES, wnids=FAKE_WNIDS)
    yield setup1(seed=2, root=str(tmp_path), classnames=FAKE_NAMES, wnids=FAKE_WNIDS)
    yield setup2("pacs")
    for dataset in ("pacs", "vlcs"):
        yield setup2(dataset, root=str(tmp_path))
    yield get_benchmark("imagenet_four_ood", root=str(tmp_path), classnames=FAKE_NAMES)


def test_every_definition_round_trips_through_json(tmp_path, tiny):
    for bench in [tiny, *_registered_examples(tmp_path)]:
        path = bench.to_json(tmp_path / f"{bench.name}.json")
        assert Benchmark.from_json(path) == bench
        assert get_benchmark(str(path), seed=3) == bench  # a run seed is ignored for fixed definitions
        assert Benchmark.from_dict(json.loads(json.dumps(bench.to_dict()))) == bench


def test_setup1_class_split():
    bench = setup1(seed=1, classnames=FAKE_NAMES, wnids=FAKE_WNIDS)
    (ood,) = bench.semantic
    assert len(bench.classnames) == 400 and len(ood.classes) == 600
    assert set(bench.classnames).isdisjoint(ood.classes)
    assert set(bench.classnames) | set(ood.classes) == set(FAKE_NAMES)
    assert ood.max_total == 1000 and ood.split == bench.id_test.split == "validation"
    assert setup1(seed=1, classnames=FAKE_NAMES).classnames == bench.classnames
    assert setup1(seed=2, classnames=FAKE_NAMES).classnames != bench.classnames
    assert [s.name for s in bench.covariate] == ["imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r"]
    # val comes from ImageNet train (outside the few-shot set), never from the ID test split
    assert bench.val.key == bench.train.key and bench.val.key != bench.id_test.key and bench.val_shots == 4
    imagenet_a = dict(bench.covariate[2].class_map)
    assert imagenet_a["n00000007"] == "class 7" and bench.id_test.label_names == tuple(FAKE_NAMES)
    assert bench.templates == "croft7" and bench.text_mode == "normalized"


def test_setup1_reads_coop_classnames_file(tmp_path):
    (tmp_path / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(FAKE_WNIDS, FAKE_NAMES)))
    assert read_classnames(tmp_path / "classnames.txt") == (FAKE_NAMES, FAKE_WNIDS)
    bench = setup1(seed=1, root=str(tmp_path))
    assert bench.train.source == str(tmp_path / "imagenet") and bench.train.label_names is None
    assert dict(bench.covariate[0].class_map)["999"] == "class 999"  # ImageNet-V2 folders are label indices
    with pytest.raises(ValueError, match="classnames.txt"):
        setup1(seed=1, root=str(tmp_path / "elsewhere"))


def test_setup2_definitions():
    bench = setup2("pacs", "sketch")
    assert bench.classnames == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    assert bench.train.domains == ("art_painting", "cartoon", "photo")
    assert bench.val.domains == bench.id_test.domains == bench.train.domains
    assert [(s.name, s.domains) for s in bench.covariate] == [("sketch", ("sketch",))]
    assert bench.shots_per == "class_domain" and bench.text_mode == "raw" and bench.val_shots == 16
    assert bench.detection_id == "covariate_correct"  # CROFT_SPEC §3.2: held-out images, correct only
    assert Benchmark.from_dict(bench.to_dict()).detection_id == "covariate_correct"
    with pytest.raises(ValueError, match="detection_id must be one of"):
        dataclasses.replace(bench, detection_id="source")
    semantic = {s.name: s for s in bench.semantic}
    assert list(semantic) == ["dtd", "food101", "caltech101"]
    caltech_excluded = set(semantic["caltech101"].exclude_classes)
    assert {"elephant", "electric_guitar", "dalmatian", "snoopy"} <= caltech_excluded
    assert all(s.max_per_class == 100 for s in bench.semantic)
    vlcs = setup2("vlcs", "PASCAL", open_set=("caltech101",), root="/data")
    assert vlcs.train.domains == ("CALTECH", "LABELME", "SUN")
    assert {"car_side", "chair", "wheelchair", "flamingo", "pigeon"} <= set(vlcs.semantic[0].exclude_classes)
    with pytest.raises(ValueError, match=r"VLCS has no confirmed Hugging Face Hub copy.*root="):
        setup2("vlcs")  # read from the official layout only
    assert setup2("vlcs", source="me/vlcs").train.source == "me/vlcs"
    with pytest.raises(ValueError, match=r"not a pacs domain.*'art_painting'"):
        setup2("pacs", "clipart")
    with pytest.raises(ValueError, match="Unknown Setup-II dataset 'office'"):
        setup2("office")


def test_four_ood_definition(tmp_path):
    bench = get_benchmark("imagenet_four_ood", root=str(tmp_path), classnames=FAKE_NAMES)
    assert len(bench.classnames) == 1000
    assert [s.name for s in bench.semantic] == ["inaturalist", "sun", "places", "textures"]
    assert all(s.label_column is None for s in bench.semantic)
    with pytest.raises(ValueError, match="needs root="):
        get_benchmark("imagenet_four_ood", classnames=FAKE_NAMES)


def test_get_benchmark_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown benchmark 'imagenet-21k'; registered: \[.*'setup2'"):
        get_benchmark("imagenet-21k")
    with pytest.raises(ValueError, match="Benchmark 'setup2' options"):
        get_benchmark("setup2", shots=16)
    assert get_benchmark("setup2", seed=4) == setup2()  # setup2 does not depend on the seed
    path = setup2().to_json(tmp_path / "b.json")
    with pytest.raises(ValueError, match="only apply to registered benchmarks"):
        get_benchmark(str(path), dataset="vlcs")
    assert {"setup1", "setup2", "imagenet_four_ood"} <= set(BENCHMARKS)


def test_register_benchmark_is_an_extension_point(tmp_path, monkeypatch):
    # a name no other test registers (test_app registers its own "tiny" for the whole session)
    monkeypatch.setattr("croft_core.data.benchmarks.registry.BENCHMARKS", dict(BENCHMARKS))
    from croft_core.data.benchmarks import registry

    def tiny_factory(n: int = 2, seed: int = 1) -> Benchmark:
        return dataclasses.replace(tiny_benchmark(tmp_path, n=n), name=f"tiny{n}-seed{seed}")

    register_benchmark("tiny-ext", tiny_factory)
    assert "tiny-ext" in registry.BENCHMARKS and "tiny-ext" not in BENCHMARKS
    assert get_benchmark("tiny-ext", n=1, seed=3).name == "tiny1-seed3"  # options and the run seed pass through
    assert len(materialize(get_benchmark("tiny-ext", n=1), "id_test")) == 3
    with pytest.raises(ValueError, match=r"Benchmark 'tiny-ext' options"):
        get_benchmark("tiny-ext", shots=4)
    register_benchmark("tiny-ext", tiny_factory)  # registering the same factory again is harmless
    with pytest.raises(ValueError, match=r"'tiny-ext' is already registered; pass overwrite=True"):
        register_benchmark("tiny-ext", lambda: None)
    with pytest.raises(ValueError, match=r"'setup1' is already registered"):
        register_benchmark("setup1", tiny_factory)
    register_benchmark("tiny-ext", lambda: tiny_factory(n=3), overwrite=True)
    assert get_benchmark("tiny-ext", seed=5).name == "tiny3-seed1"  # a factory without `seed` gets none


def test_definition_validation(tiny):
    with pytest.raises(ValueError, match=r"list of names, not the string 'star'"):
        SplitSpec("x", "src", classes="star")
    with pytest.raises(ValueError, match="lists domains but no domain_column"):
        SplitSpec("x", "src", domains=("photo",))
    with pytest.raises(ValueError, match=r"Unknown Benchmark key\(s\) \['shots'\]"):
        Benchmark.from_dict({**tiny.to_dict(), "shots": 16})
    with pytest.raises(ValueError, match="shots_per='class_domain' needs train.domain_column"):
        dataclasses.replace(tiny, shots_per="class_domain", train=SplitSpec("t", "src"))
    with pytest.raises(ValueError, match="Unknown split role 'test'"):
        materialize(tiny, "test")
    assert set(CLASSES) - set(TINY_ID_CLASSES) == {"star"}


@pytest.mark.network
def test_hub_sources_match_the_hub():
    """With --network: every Hub source's metadata matches its definition (ImageNet-1k may be gated)."""
    from croft_core.data.benchmarks import check_hub_sources, format_source_table

    rows = check_hub_sources()
    assert all(r.status in ("ok", "unverified", "gated") for r in rows), format_source_table(rows)
