"""`croft bench --quick` on the embedded model and the shapes benchmark (issue 3's CI mode).

Renders the shapes dataset into the session cache on first use (about a minute on one core) and
checks the results JSON, the per-style and per-OOD-class breakdown, and that the shipped model keeps
the benchmark's intended shape (issues 9, 19): zero-shot is competent on photos, the other styles carry
the headroom, the unseen shapes are mostly but not entirely separable, and the non-shapes are rejected.
"""

from __future__ import annotations

import json
import time

import pytest

from croft_core.cli import main
from croft_core.data.synth.world import CLASSES, DOMAINS, ID_CLASSES


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    start = time.perf_counter()
    code = main(["bench", "--backbone", "embedded", "--benchmark", "shapes", "--quick", "--seeds", "1",
                 "--methods", "zeroshot,clip_adapter,tip_adapter,croft,croft_clean", "--out", str(out),
                 "--quiet"])
    return code, out, time.perf_counter() - start


def test_quick_bench_writes_every_file(quick_bench):
    code, out, seconds = quick_bench
    assert code == 0
    for method in ("zeroshot", "clip_adapter", "tip_adapter", "croft", "croft_clean"):
        assert (out / f"{method}_seed1.json").is_file()
        assert (out / f"{method}_seed1" / "model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "shapes" and summary["seeds"] == [1]
    assert "plotly" in (out / "report.html").read_text()


def test_quick_bench_results_breakdown(quick_bench):
    _, out, _ = quick_bench
    zs = json.loads((out / "zeroshot_seed1.json").read_text())
    assert zs["id"]["name"] == "photo" and zs["id"]["n"] == 10 * 30
    assert [c["name"] for c in zs["covariate"]] == [d for d in DOMAINS if d != "photo"]
    unseen = sorted(c for c in CLASSES if c not in ID_CLASSES)
    assert sorted(s["name"] for s in zs["semantic"]) == sorted([*unseen, "non-shapes"])
    assert all(s["n"] == 30 and s["group"] == "near" for s in zs["semantic"] if s["name"] in unseen)
    far = next(s for s in zs["semantic"] if s["name"] == "non-shapes")
    assert far["n"] == 9 * 30 and far["group"] == "far"
    # the shipped model's intended regime (issues 9, 19): competent on photos, headroom in the styles,
    # unseen shapes mostly separable, non-shapes nearly all
    assert zs["id"]["accuracy"] >= 0.90
    assert 0.85 <= zs["semantic_near"]["energy"]["auroc"] <= 0.97
    assert zs["semantic_far"]["neglabel"]["auroc"] >= 0.97
    below = [c for c in zs["covariate"] if c["accuracy"] <= zs["id"]["accuracy"] - 0.15]
    assert len(below) >= 2
    near = {s["name"]: s["scores"]["energy"]["auroc"] for s in zs["semantic"] if s["name"] in unseen}
    # octagon (a hexagon look-alike) and ellipse (a mildly flattened circle) are near on every render,
    # rectangle (a square look-alike) third (PRETRAIN.md); every other unseen shape is well separated
    assert near["octagon"] < 0.75 and near["ellipse"] < 0.8
    assert sorted(near, key=near.get)[:2] == ["octagon", "ellipse"]
    croft = json.loads((out / "croft_seed1.json").read_text())
    assert croft["train_config"]["epochs"] == 5
    assert croft["id"]["accuracy"] > 0.5


def test_check_embedded_meets_the_targets(quick_bench):  # after the bench: the dataset is rendered
    from croft_core.data.synth import EMBEDDED_DIR
    from croft_core.runs import embedded_check as check

    result = check.evaluate(EMBEDDED_DIR)
    report = check.target_report(result)
    # seed 0 is the benchmark's render, not the one that chose the snapshot (PRETRAIN.md): all six targets
    # hold on it, three unseen shapes under 0.85
    missed = [name for name, ok in report.items() if not ok]
    assert missed == [], check.format_table(result)
    assert result["auroc_octagon"] == pytest.approx(0.557, abs=0.001)
    assert result["auroc_ellipse"] == pytest.approx(0.632, abs=0.001)
    assert result["auroc_rectangle"] == pytest.approx(0.804, abs=0.001)
    assert result["zs_photo"] == pytest.approx(99.0, abs=0.01)  # the README / PRETRAIN.md numbers (seed 0)
    assert result["auroc_energy"] == pytest.approx(0.918, abs=0.001)
    assert min(v for k, v in result.items() if k.startswith("zs_class_")) == pytest.approx(93.33, abs=0.01)
    assert result["far_auroc_neglabel"] == pytest.approx(1.0, abs=0.001)  # with the re-selected neglabel.json
