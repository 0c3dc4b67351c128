"""End-to-end runs: the checkpoint/backbone compatibility rule and grid selection."""

from __future__ import annotations

import os

import pytest

from croft_core.runs.pipeline import check_compatible, evaluate_checkpoint, grid_configs
from croft_core.runs.train import init_model, method_config
from datagen import tiny_benchmark


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return tiny_benchmark(tmp_path_factory.mktemp("data"))


def _croft_on(spec: str, bench, embed_dim: int = 16):
    return init_model(method_config("croft"), embed_dim=embed_dim, logit_scale=20.0,
                      classnames=bench.classnames, backbone=spec)


def test_eval_accepts_another_spelling_of_the_same_backbone(tiny_backbone, bench, monkeypatch):
    folder = tiny_backbone.spec.removeprefix("local-dir:")
    monkeypatch.chdir(os.path.dirname(folder))
    relative = f"local-dir:{os.path.basename(folder)}"  # what `croft train` ran from that folder saved
    model = _croft_on(relative, bench)
    check_compatible(model, tiny_backbone, bench)  # same weights: no error
    results, _ = evaluate_checkpoint(tiny_backbone, bench, model, shots=2, views=1, cache_dir=None,
                                     knn=False)
    assert 0.0 <= results["id"]["accuracy"] <= 1.0


def test_eval_rejects_another_backbone(tiny_backbone, bench):
    with pytest.raises(ValueError, match="trained on backbone 'ViT-B-16:openai'.*--backbone"):
        check_compatible(_croft_on("ViT-B-16:openai", bench), tiny_backbone, bench)
    with pytest.raises(ValueError, match="checkpoint width 8"):
        check_compatible(_croft_on(tiny_backbone.spec, bench, embed_dim=8), tiny_backbone, bench)


def test_grid_configs_cover_min_steps():
    cfg = method_config("croft")
    grid = grid_configs(cfg, {"min_steps": [None, 500], "lr": [0.002, 0.02]})
    assert [(c.min_steps, c.lr) for c in grid] == [(None, 0.002), (None, 0.02), (500, 0.002),
                                                   (500, 0.02)]
    with pytest.raises(ValueError, match="unknown grid options"):
        grid_configs(cfg, {"nope": [1]})


# --- sweeps: a list-valued benchmark option runs the bench once per value -----------------------

@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from croft_core.data.synth.dataset import build_shapes_dataset

    root = tmp_path_factory.mktemp("shapes") / "world"
    build_shapes_dataset(root, n_per_class_domain=1, seed=0, size=16)
    return root


def test_sweep_axis_takes_the_one_list_for_a_single_value_option(tiny_world):
    from croft_core.runs.pipeline import sweep_axis

    assert sweep_axis("shapes_dg", {"heldout": "painting", "root": str(tiny_world)}) is None
    assert sweep_axis("shapes_dg", {"heldout": ["photo", "sketch"]}) == ("heldout", ["photo", "sketch"])
    # an option that itself takes a list (classes) is a value, not a sweep
    assert sweep_axis("shapes_dg", {"classes": ["circle", "square"], "heldout": ["photo", "sketch"]}) == \
        ("heldout", ["photo", "sketch"])
    assert sweep_axis("setup2", {"dataset": "pacs", "test_domain": ["photo", "sketch"]}) == \
        ("test_domain", ["photo", "sketch"])


def test_two_list_options_are_refused():
    from croft_core.errors import UsageError
    from croft_core.runs.pipeline import sweep_axis

    with pytest.raises(UsageError, match="only one.*heldout.*root"):
        sweep_axis("shapes_dg", {"heldout": ["photo", "sketch"], "root": ["/a", "/b"]})
    with pytest.raises(UsageError, match="empty"):
        sweep_axis("shapes_dg", {"heldout": []})
    with pytest.raises(UsageError, match="twice"):
        sweep_axis("shapes_dg", {"heldout": ["photo", "photo"]})


def test_bench_sweep_writes_one_column_per_value_and_their_average(tiny_backbone, tiny_world, tmp_path):
    import json
    import math

    from croft_core.runs.pipeline import run_bench

    out = tmp_path / "sweep"
    summary = run_bench(tiny_backbone, "shapes_dg", ["zeroshot", "croft_clean"], [1, 2], out, shots=3,
                        config_for=lambda m, s: method_config(m, seed=s, epochs=1, batch_size=8),
                        views=1, cache_dir=tmp_path / "cache", progress=False,
                        benchmark_args={"heldout": ["photo", "sketch"], "root": str(tiny_world)})
    assert summary["sweep"] == {"arg": "heldout", "values": ["photo", "sketch"], "columns": ["photo", "sketch"]}
    for value in ("photo", "sketch"):  # one full bench per value, in a sub-folder named by it
        sub = json.loads((out / value / "summary.json").read_text())
        assert sub["benchmark"] == f"shapes_dg_{value}" and (out / value / "report.html").is_file()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for key in ("id.accuracy", "covariate.mean_accuracy", "semantic_all.energy.auroc",
                "semantic_all.energy.fpr95", "full_spectrum.energy.auroc"):
        for method in ("zeroshot", "croft_clean"):
            row = summary["tables"][key]["methods"][method]
            assert list(row) == ["photo", "sketch", "average"]
            assert math.isclose(row["average"]["mean"], (row["photo"]["mean"] + row["sketch"]["mean"]) / 2)
            assert row["average"]["n"] == 2
    # the held-out column is that style's own covariate accuracy
    sketch = json.loads((out / "sketch" / "summary.json").read_text())
    assert summary["tables"]["covariate.mean_accuracy"]["methods"]["zeroshot"]["sketch"]["mean"] == \
        sketch["methods"]["zeroshot"]["covariate/sketch.accuracy"]["mean"]
    page = (out / "report.html").read_text()
    assert "heldout" in page and "average" in page and 'href="sketch/report.html"' in page


def test_croft_bench_sweeps_a_list_and_refuses_two(tiny_spec, tiny_world, tmp_path, capsys):
    import json

    from croft_core.cli import main

    common = ["bench", "--backbone", tiny_spec, "--benchmark", "shapes_dg", "--benchmark-arg",
              f"root={tiny_world}", "--methods", "zeroshot", "--seeds", "1", "--shots", "3", "--views", "1",
              "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--benchmark-arg", 'heldout=["photo", "sketch"]', "--out", str(tmp_path / "b")]) == 0
    assert "| method | photo | sketch | average |" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["sweep"]["columns"] == ["photo", "sketch"]
    assert main([*common, "--benchmark-arg", 'heldout=["photo", "sketch"]', "--benchmark-arg",
                 f'root=["{tiny_world}", "{tiny_world}2"]', "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("croft: error: only one benchmark option can be a list") and err.count("\n") == 1


def test_bench_search_draws_n_per_method_selects_on_validation_and_records_it(tiny_backbone, tiny_world, tmp_path):
    import json

    from croft_core.runs.pipeline import run_bench

    out = tmp_path / "search"
    summary = run_bench(tiny_backbone, "shapes_dg", ["zeroshot", "clip_adapter", "linear_probe"], [1], out,
                        shots=3, config_for=lambda m, s: method_config(m, seed=s, epochs=1, batch_size=8),
                        views=1, cache_dir=tmp_path / "cache", progress=False, search=2,
                        benchmark_args={"heldout": "painting", "root": str(tiny_world)})
    assert summary["detection"]["id_side"] == "covariate_correct"  # shapes_dg: the paper's side
    assert set(summary["search"]) == {"clip_adapter", "linear_probe"}
    for method in ("clip_adapter", "linear_probe"):
        run = json.loads((out / f"{method}_seed1.json").read_text())
        search = run["search"]
        assert search["budget"] == 2 and len(search["tried"]) == 2
        best = max(search["tried"], key=lambda r: r["val_accuracy"])
        assert search["chosen"] == {k: v for k, v in best.items() if k != "val_accuracy"}
        assert all(run["train_config"][k] == v for k, v in search["chosen"].items())
        assert search["selected_on"] == "source styles val"  # validation of the source styles only
        record = summary["search"][method][0]
        assert record["seed"] == 1 and record["chosen"] == search["chosen"]
        assert record["on_edge"] == [k for k, v in search["chosen"].items()
                                     if v in (min(search["space"][k]), max(search["space"][k]))]
    assert "zeroshot" not in summary["search"]
    page = (out / "report.html").read_text()
    assert "Configurations chosen on validation" in page and "Paired differences" in page
