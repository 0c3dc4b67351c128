"""The ``shapes_dg`` benchmark (leave-one-style-out, Setup-II miniature) and the render-folder stamp."""

from __future__ import annotations

import json

import pytest

from croft_core.data.benchmarks.shapes import (FAR_OOD_NAME, ShapesWorldError, check_render_folder, shapes_benchmark,
                                              shapes_dg)
from croft_core.errors import CroftError
from croft_core.data.synth.world import CLASSES, DOMAINS, ID_CLASSES, OOD_CLASSES


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from croft_core.data.synth.dataset import build_shapes_dataset

    root = tmp_path_factory.mktemp("shapes") / "world"
    build_shapes_dataset(root, n_per_class_domain=1, seed=0, size=16)
    return root


@pytest.mark.parametrize("heldout", DOMAINS)
def test_shapes_dg_holds_out_one_style(tiny_world, heldout):
    bench = shapes_dg(heldout=heldout, root=tiny_world)
    sources = tuple(d for d in DOMAINS if d != heldout)
    assert bench.name == f"shapes_dg_{heldout}" and bench.classnames == ID_CLASSES
    for spec in (bench.train, bench.val, bench.id_test):
        assert spec.domains == sources and spec.classes == ID_CLASSES
    assert (bench.train.split, bench.val.split, bench.id_test.split) == ("train", "validation", "test")
    assert [(c.name, c.domains, c.split) for c in bench.covariate] == [(heldout, (heldout,), "test")]
    assert [s.name for s in bench.semantic] == [*OOD_CLASSES, FAR_OOD_NAME]
    assert all(s.domains == DOMAINS and s.classes == (s.name,) for s in bench.semantic[:-1])
    assert bench.far_ood == (FAR_OOD_NAME,)
    assert bench.shots_per == "class_domain"
    assert bench.detection_id == "covariate_correct"  # the paper's Setup-II detection side


def test_shapes_dg_default_is_painting(tiny_world):
    assert shapes_dg(root=tiny_world).covariate[0].name == "painting"


def test_shapes_dg_class_options(tiny_world):
    bench = shapes_dg(root=tiny_world, classes="circle, square", unseen=["ellipse", "rectangle"])
    assert bench.classnames == ("circle", "square")
    assert [s.name for s in bench.semantic] == ["ellipse", "rectangle", FAR_OOD_NAME]
    rest = shapes_dg(root=tiny_world, classes="circle,square")
    assert [s.name for s in rest.semantic] == [*(c for c in CLASSES if c not in ("circle", "square")), FAR_OOD_NAME]


def test_shapes_dg_bad_heldout_names_the_styles():
    with pytest.raises(ShapesWorldError, match=r"heldout='oil'.*\['photo', 'sketch', 'cartoon', 'painting'\]"):
        shapes_dg(heldout="oil")
    assert issubclass(ShapesWorldError, CroftError) and issubclass(ShapesWorldError, ValueError)


def test_shapes_dg_overlapping_classes_are_refused():
    with pytest.raises(ShapesWorldError, match=r"\['square'\] are both ID and unseen; remove them from `unseen`"):
        shapes_dg(classes="circle,square", unseen="square,ring")
    with pytest.raises(ShapesWorldError, match="not shapes of the world"):
        shapes_dg(classes="circle,dodecahedron")


@pytest.mark.parametrize("stamp", [None, {"world_version": "0000000000"}])
def test_render_folder_of_another_world_version_is_refused(tmp_path, tiny_world, stamp):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_world, old)
    (old / "shapes_world.json").unlink()
    if stamp is not None:
        (old / "shapes_world.json").write_text(json.dumps(stamp))
    check_render_folder(tiny_world)  # the fresh render passes
    for build in (lambda: shapes_dg(root=old), lambda: shapes_benchmark(root=old)):
        with pytest.raises(ShapesWorldError, match=rf"re-render it with `croft render-shapes --out {old}`"):
            build()


def test_shapes_dg_is_registered():
    """`croft --benchmark shapes_dg` needs the registry entry (croft_core/data/benchmarks/registry.py)."""
    from croft_core.data.benchmarks import BENCHMARKS
    from croft_core.data.benchmarks.shapes import shapes_dg

    assert BENCHMARKS.get("shapes_dg") is shapes_dg
