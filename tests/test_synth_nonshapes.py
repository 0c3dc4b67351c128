"""Non-shape images of the world (issue 19): rendering, captions, lexicon, pretraining share, the
dataset's far-OOD test images and the benchmarks' far-OOD set pooled apart from the near one."""

from __future__ import annotations

import re

import numpy as np
import pytest

from croft_core.data.synth.world import (CLASSES, NONSHAPE_KINDS, NONSHAPE_NAMES, NONSHAPE_RATE, lexicon,
                                         nonshape_caption, render_nonshape)


def test_every_kind_renders_deterministic_rgb() -> None:
    assert len(NONSHAPE_KINDS) >= 9 and not set(NONSHAPE_KINDS) & set(CLASSES)
    for kind in NONSHAPE_KINDS:
        a = render_nonshape(kind, np.random.default_rng(3), size=32)
        b = render_nonshape(kind, np.random.default_rng(3), size=32)
        c = render_nonshape(kind, np.random.default_rng(4), size=32)
        assert a.mode == "RGB" and a.size == (32, 32)
        assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes(), kind


def test_kinds_look_like_their_names() -> None:
    def std(kind: str) -> float:
        return float(np.mean([np.asarray(render_nonshape(kind, np.random.default_rng(i))).reshape(-1, 3).std(0).max()
                              for i in range(20)]))

    assert std("blank canvas") < 8.0  # blank or near-blank
    assert std("noise") > 30.0
    assert std("stripes") > 10.0 and std("checkerboard") > 10.0


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(KeyError, match="non-shape kind"):
        render_nonshape("circle", np.random.default_rng(0))


def test_captions_name_the_kind_and_never_a_shape() -> None:
    rng = np.random.default_rng(0)
    for kind in NONSHAPE_KINDS:
        caps = [nonshape_caption(kind, rng) for _ in range(100)]
        assert all(any(name in c for name in NONSHAPE_NAMES[kind]) for c in caps), kind
        assert not any(re.search(rf"\b{re.escape(s)}\b", c) for c in caps for s in CLASSES), kind


def test_lexicon_names_the_non_shapes() -> None:
    words = lexicon()
    assert {n for names in NONSHAPE_NAMES.values() for n in names} <= set(words)
    assert words[:len(CLASSES)] == CLASSES


def test_pretraining_stream_holds_a_modest_share_of_named_non_shapes() -> None:
    from croft_core.runs.pretrain import NONSHAPE, StreamPool

    assert 0.0 < NONSHAPE_RATE <= 0.2
    pool = StreamPool(seed=0, pool_size=300, size=16)
    kinds = [m[0] for m in pool.meta if m[1] == NONSHAPE]
    assert abs(len(kinds) / 300 - NONSHAPE_RATE) < 0.06 and set(kinds) <= set(NONSHAPE_KINDS)
    i = next(i for i, m in enumerate(pool.meta) if m[1] == NONSHAPE)
    assert any(name in pool._caption(i) for name in NONSHAPE_NAMES[pool.meta[i][0]])


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from croft_core.data.synth.dataset import build_shapes_dataset

    root = tmp_path_factory.mktemp("shapes") / "world"
    build_shapes_dataset(root, n_per_class_domain={"train": 1, "validation": 1, "test": 2}, seed=0, size=16)
    return root


def test_non_shapes_are_test_images_only(tiny_world) -> None:
    import datasets

    from croft_core.data.synth.dataset import NO_DOMAIN

    ds = datasets.load_from_disk(str(tiny_world))
    names = ds["test"].features["label"].names
    assert names == [*CLASSES, *NONSHAPE_KINDS]
    first = len(CLASSES)
    for split in ("train", "validation"):
        assert max(ds[split]["label"]) < first
    far = [r for r in ds["test"] if r["label"] >= first]
    assert len(far) == 2 * len(NONSHAPE_KINDS)
    domains = ds["test"].features["domain"].names
    assert {domains[r["domain"]] for r in far} == {NO_DOMAIN}


def test_non_shapes_have_their_own_seed_stream() -> None:
    from croft_core.data.synth.dataset import build_split, nonshape_rng

    split = build_split("test", 1, seed=5, size=16)
    k = NONSHAPE_KINDS.index("stripes")
    row = next(r for r in split if r["label"] == len(CLASSES) + k)
    expected = render_nonshape("stripes", nonshape_rng(5, "test", k, 0), size=16)
    assert row["image"].tobytes() == expected.tobytes()
    other = render_nonshape("stripes", nonshape_rng(6, "test", k, 0), size=16)
    assert other.tobytes() != expected.tobytes()


@pytest.mark.parametrize("which", ["shapes", "shapes_dg"])
def test_benchmarks_carry_the_far_ood_set(tiny_world, which) -> None:
    from croft_core.data.benchmarks import materialize
    from croft_core.data.benchmarks.shapes import FAR_OOD_NAME, shapes_benchmark, shapes_dg

    bench = shapes_benchmark(root=tiny_world) if which == "shapes" else shapes_dg(root=tiny_world)
    assert bench.far_ood == (FAR_OOD_NAME,)
    far = next(s for s in bench.semantic if s.name == FAR_OOD_NAME)
    assert far.split == "test" and far.classes == NONSHAPE_KINDS
    assert FAR_OOD_NAME not in {s.name for s in (bench.train, bench.val, bench.id_test, *bench.covariate)}
    splits = materialize(bench, "semantic", shots=None, seed=1)
    loaded = next(s for s in splits if s.name == FAR_OOD_NAME)
    assert len(loaded.ids) == 2 * len(NONSHAPE_KINDS)
    assert set(loaded.row_classes) == set(NONSHAPE_KINDS) and set(loaded.labels.tolist()) == {-1}


def test_far_ood_names_must_be_semantic_sets(tiny_world) -> None:
    import dataclasses

    from croft_core.data.benchmarks.shapes import shapes_benchmark

    bench = shapes_benchmark(root=tiny_world)
    with pytest.raises(ValueError, match="far_ood names"):
        dataclasses.replace(bench, far_ood=("textures",))
    again = type(bench).from_dict(bench.to_dict())
    assert again.far_ood == bench.far_ood


def test_detection_pools_near_and_far_apart() -> None:
    from croft_core.ood import metrics
    from croft_core.runs.evaluate import _detection

    rng = np.random.default_rng(0)
    id_scores = {"energy": rng.normal(2.0, 1.0, 200)}
    near = {"energy": rng.normal(1.5, 1.0, 50)}
    far = {"energy": rng.normal(-3.0, 1.0, 50)}
    results = {"semantic": [{"name": "pentagon"}, {"name": "non-shapes"}]}
    _detection(results, id_scores, id_scores, [], [near, far], far_ood=("non-shapes",))
    assert [e["group"] for e in results["semantic"]] == ["near", "far"]
    assert results["semantic_far"]["energy"] == metrics.ood_metrics(id_scores["energy"], far["energy"])
    assert results["semantic_near"]["energy"] == metrics.ood_metrics(id_scores["energy"], near["energy"])
    assert results["semantic_far"]["energy"]["auroc"] > 0.99 > results["semantic_near"]["energy"]["auroc"]
    plain = {"semantic": [{"name": "pentagon"}, {"name": "non-shapes"}]}
    _detection(plain, id_scores, id_scores, [], [near, far])
    assert "semantic_far" not in plain and plain["semantic_all"] == results["semantic_all"]


def test_check_has_a_far_ood_target() -> None:
    from croft_core.runs.embedded_check import target_report

    result = {"zs_photo": 95.0, "zs_sketch": 50.0, "zs_cartoon": 70.0, "zs_painting": 30.0,
              "zs_class_circle": 90.0, "auroc_energy": 0.9, "auroc_octagon": 0.7, "auroc_ellipse": 0.8}
    key = "far-OOD neglabel auroc >= 0.97"
    assert target_report(result)[key] is False  # no far-OOD measured: not met
    assert target_report({**result, "far_auroc_neglabel": 0.99})[key] is True
    assert target_report({**result, "far_auroc_neglabel": 0.96})[key] is False
    assert all(v for k, v in target_report({**result, "far_auroc_neglabel": 0.99}).items())


def test_calibrated_accept_still_needs_the_negatives() -> None:
    """The app's rule: a checkpoint's calibrated energy accepts noise as confidently as a shape, so the
    negative labels are asked too; a typed threshold stays the visitor's own rule."""
    from croft_app.service.decision import RULE_CALIBRATED, RULE_NEGATIVES, RULE_USER, decide

    noise = dict(neg_score=0.02, nearest_negative="static", neg_threshold=0.1)
    v = decide("circle", 9.0, user_threshold=None, calibrated_threshold=6.0, **noise)
    assert (v.label, v.accepted, v.rule) == ("unknown", False, RULE_NEGATIVES)
    assert "'static' (not in your list)" in v.reason
    shape = dict(neg_score=0.8, nearest_negative="octagon", neg_threshold=0.1)
    ok = decide("circle", 9.0, user_threshold=None, calibrated_threshold=6.0, **shape)
    assert (ok.label, ok.accepted, ok.rule) == ("circle", True, RULE_CALIBRATED)
    typed = decide("circle", 9.0, user_threshold=6.0, calibrated_threshold=None, **noise)
    assert (typed.label, typed.accepted, typed.rule) == ("circle", True, RULE_USER)
    low = decide("circle", 5.0, user_threshold=None, calibrated_threshold=6.0, **noise)
    assert (low.accepted, low.rule) == (False, RULE_CALIBRATED)
