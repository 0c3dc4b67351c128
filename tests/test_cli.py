"""End to end through the `croft` command on a tiny generated benchmark and a tiny open_clip model."""

from __future__ import annotations

import json

import pytest

from croft_core.cli import main
from croft_core.heads.hub import load_model
from datagen import tiny_benchmark

RESULT_KEYS = {"benchmark", "backbone", "method", "seed", "shots", "id", "covariate", "semantic",
               "full_spectrum", "threshold"}
METRIC_KEYS = {"auroc", "fpr95", "aupr_in", "aupr_out"}


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return str(tiny_benchmark(root).to_json(root / "tiny.json"))


def _check_results(results, method):
    assert RESULT_KEYS <= set(results)
    assert results["method"] == method
    assert 0.0 <= results["id"]["accuracy"] <= 1.0 and results["id"]["n"] > 0
    assert [c["name"] for c in results["covariate"]] and results["covariate"][0]["n"] > 0
    for s in results["semantic"]:
        assert {"energy", "mcm", "msp", "max_logit"} <= set(s["scores"])
        for m in s["scores"].values():
            assert set(m) == METRIC_KEYS and all(0.0 <= v <= 1.0 for v in m.values())
    assert results["threshold"]["score"] == "energy" and results["threshold"]["tpr"] == 0.95


@pytest.mark.slow
def test_train_eval_bench_end_to_end(tiny_spec, bench_json, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--backbone", tiny_spec, "--benchmark", bench_json, "--shots", "2", "--views", "2",
              "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["train", *common, "--method", "croft", "--seed", "1", "--epochs", "2",
                 "--batch-size", "4", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    _check_results(results, "croft")
    assert "knn" in results["semantic"][0]["scores"]
    for name in ("config.json", "model.safetensors", "README.md", "history.json", "manifest.json"):
        assert (out / name).is_file(), name
    model = load_model(out)
    assert model.config.threshold is not None and len(model.config.id_scores) > 0
    assert model.config.training["epochs"] == 2

    assert main(["eval", *common, "--checkpoint", str(out), "--json", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["id"]["accuracy"] == pytest.approx(results["id"]["accuracy"])

    assert main(["eval", *common, "--method", "zeroshot", "--json", str(tmp_path / "zs.json")]) == 0
    _check_results(json.loads((tmp_path / "zs.json").read_text()), "zeroshot")

    bench_dir = tmp_path / "bench"
    assert main(["bench", *common, "--methods", "zeroshot,croft_clean", "--seeds", "1,2",
                 "--epochs", "1", "--batch-size", "4", "--out", str(bench_dir)]) == 0
    summary = json.loads((bench_dir / "summary.json").read_text())
    assert set(summary["methods"]) == {"zeroshot", "croft_clean"} and summary["seeds"] == [1, 2]
    assert summary["methods"]["zeroshot"]["id.accuracy"]["n"] == 2
    for m in ("zeroshot", "croft_clean"):
        for s in (1, 2):
            _check_results(json.loads((bench_dir / f"{m}_seed{s}.json").read_text()), m)
    html = (bench_dir / "report.html").read_text()
    assert "plotly" in html and "croft_clean" in html
    assert "| zeroshot |" in capsys.readouterr().out


def test_cli_errors_are_one_line(tiny_spec, bench_json, tmp_path, capsys):
    code = main(["eval", "--backbone", tiny_spec, "--benchmark", bench_json, "--checkpoint",
                 str(tmp_path / "missing"), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("croft: error:") and "\n" not in err
    assert main(["train", "--backbone", tiny_spec, "--benchmark", "nope", "--out", str(tmp_path)]) == 1
    assert "Unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["train", "--backbone", "ViT-B-16:openai", "--out", str(tmp_path)]) == 1
    assert "embedded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--method"])


def test_benchmark_args():
    from croft_core.cli import _benchmark_args

    assert _benchmark_args(["root=/data/x", "dataset=vlcs", "n=3", "flag=true", "xs=[1, 2]"]) == {
        "root": "/data/x", "dataset": "vlcs", "n": 3, "flag": True, "xs": [1, 2]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _benchmark_args(["novalue"])


@pytest.mark.slow
def test_extract_fills_the_cache(tiny_spec, bench_json, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["extract", "--backbone", tiny_spec, "--benchmark", bench_json, "--shots", "2",
                 "--views", "2", "--seeds", "1,2", "--cache-dir", str(cache), "--quiet"]) == 0
    # 2 seeds x train + the shared val / test / covariate / semantic sets
    assert len(list((cache / "features").glob("*.safetensors"))) >= 6
    assert main(["eval", "--backbone", tiny_spec, "--benchmark", "setup2", "--benchmark-arg",
                 "dataset=nope", "--method", "zeroshot", "--json", str(tmp_path / "x.json")]) == 1
    assert "croft: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_grid_is_selected_on_validation(tiny_spec, bench_json, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["train", "--backbone", tiny_spec, "--benchmark", bench_json, "--shots", "2",
                 "--views", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--method", "croft",
                 "--epochs", "2", "--batch-size", "4", "--grid", "lr=0.0001,0.5", "--grid",
                 "lambda2=0,1", "--out", str(out), "--no-vectorise"]) == 0  # one by one: a folder each
    results = json.loads((out / "results.json").read_text())
    selection = results["selection"]
    assert [(s["lr"], s["lambda2"]) for s in selection] == [(0.0001, 0), (0.0001, 1), (0.5, 0), (0.5, 1)]
    best = max(selection, key=lambda s: s["val_accuracy"])  # first of the best on ties
    assert (results["train_config"]["lr"], results["train_config"]["lambda2"]) == (best["lr"], best["lambda2"])
    assert len(list((out / "grid").iterdir())) == 4
    assert main(["train", "--backbone", tiny_spec, "--benchmark", bench_json, "--grid", "nope=1",
                 "--out", str(tmp_path / "x")]) == 1
    assert "--grid nope" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["eval", "--checkpoint", str(tmp_path / "missing"), "--method", "zeroshot"]
    missing = ["eval", "--benchmark", "nope", "--method", "zeroshot", "--json", str(tmp_path / "x.json")]
    assert main(missing) == 1
    err = capsys.readouterr().err
    assert err.startswith("croft: error: Unknown benchmark 'nope'") and "Traceback" not in err
    for argv in (["--debug", *missing], [*missing, "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "croft: error: Unknown benchmark" in err
    with pytest.raises(SystemExit):
        main(["--debug", *args])  # --checkpoint and --method exclude each other: argparse's usage error


@pytest.mark.parametrize("bug", [KeyError("fpr95"), RuntimeError("CUDA error: device-side assert"),
                                 AttributeError("'NoneType' object has no attribute 'shape'")])
def test_unexpected_errors_are_not_swallowed(bug, tmp_path, monkeypatch):
    """A bug inside the library keeps its type and traceback instead of becoming one line."""
    import croft_core.heads.hub

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(croft_core.heads.hub, "push_checkpoint", broken)
    with pytest.raises(type(bug)):
        main(["push", str(tmp_path), "--repo-id", "me/x"])


def test_library_errors_are_one_line(tmp_path, capsys):
    from croft_core.cli import library_errors
    from croft_core.errors import CroftError
    from croft_core.heads.hub import CheckpointNotFoundError

    assert CroftError in library_errors() and issubclass(CheckpointNotFoundError, library_errors())
    assert not issubclass(KeyError, library_errors()) and not issubclass(RuntimeError, library_errors())
    assert main(["push", str(tmp_path), "--repo-id", "me/x"]) == 1  # not a checkpoint folder
    assert capsys.readouterr().err.strip().endswith("is not a CRoFT checkpoint folder (config.json and "
                                                    "model.safetensors expected)")


def test_min_steps_flag_reaches_the_train_config():
    from croft_core.cli import _overrides, build_parser
    from croft_core.runs.train import method_config

    args = build_parser().parse_args(["train", "--out", "x", "--min-steps", "50", "--lr", "0.1"])
    assert _overrides(args) == {"min_steps": 50, "lr": 0.1}
    assert method_config("croft", **_overrides(args)).min_steps == 50
    args = build_parser().parse_args(["bench", "--out", "x"])
    assert _overrides(args) == {}


def test_check_sources_offline_says_so_at_once(capsys):
    import time

    start = time.perf_counter()
    assert main(["check-sources"]) == 1
    assert time.perf_counter() - start < 5  # no 20 s of Hub retries
    err = capsys.readouterr().err
    assert err.startswith("croft: error:") and "HF_HUB_OFFLINE" in err
    assert main(["check-sources", "--benchmark", "nope"]) == 1
    assert "Unknown benchmark 'nope'" in capsys.readouterr().err


def test_check_sources_prints_the_table_and_fails_on_a_mismatch(monkeypatch, capsys):
    import croft_core.data.benchmarks as benchmarks
    from croft_core.data.benchmarks import SourceCheck

    rows = [SourceCheck("imagenet_val", "org/imagenet", "main", status="ok"),
            SourceCheck("dtd", "org/dtd", "main", status="unverified")]
    monkeypatch.setattr(benchmarks, "check_hub_sources", lambda benchmark: rows)
    assert main(["check-sources", "--benchmark", "setup1"]) == 0
    assert "org/imagenet" in capsys.readouterr().out
    rows.append(SourceCheck("food101", "org/food101", "main", status="mismatch"))
    assert main(["check-sources"]) == 1
    assert "food101" in capsys.readouterr().out


def test_search_and_detection_flags(tmp_path, capsys):
    from croft_core.cli import build_parser

    args = build_parser().parse_args(["bench", "--out", "x", "--search", "8", "--detection-id", "id_test"])
    assert (args.search, args.detection_id) == (8, "id_test")
    assert build_parser().parse_args(["eval", "--json", "x", "--method", "zeroshot"]).detection_id is None
    assert main(["bench", "--out", str(tmp_path), "--search", "2", "--grid", "lr=0.1,0.2"]) == 1
    assert "--search N needs N >= 1 and no --grid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--out", str(tmp_path), "--detection-id", "painting"])
