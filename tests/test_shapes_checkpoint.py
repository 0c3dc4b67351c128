"""The shipped CRoFT checkpoint (croft_core/data/synth/croft-shapes): its name, and its card's numbers are
exactly what `croft eval` reproduces on `shapes_dg` with painting held out."""

from __future__ import annotations

import json

import pytest

from croft_core.data.synth import EMBEDDED_CHECKPOINT

DISPLAY_NAME = "CRoFT · shapes · painting held out"


def _config() -> dict:
    return json.loads((EMBEDDED_CHECKPOINT / "config.json").read_text())


def test_checkpoint_is_shown_by_its_card_name():
    from croft_app.service.vetting import display_name

    assert _config()["display_name"] == DISPLAY_NAME
    assert display_name(EMBEDDED_CHECKPOINT) == DISPLAY_NAME
    card = (EMBEDDED_CHECKPOINT / "README.md").read_text()
    assert DISPLAY_NAME in card and "--benchmark shapes_dg --benchmark-arg heldout=painting" in card


def test_checkpoint_is_the_validation_selected_croft_of_shapes_dg():
    config = _config()
    assert config["head"] == "croft" and config["method"] == "croft" and config["backbone"] == "embedded"
    assert config["training"]["min_steps"] == 500 and config["training"]["seed"] == 1
    assert set(config["metrics"]) >= {"id_accuracy", "accuracy/painting", "energy_auroc", "energy_fpr95"}


def test_card_metrics_table_lists_the_config_metrics():
    card = (EMBEDDED_CHECKPOINT / "README.md").read_text()
    for key, value in _config()["metrics"].items():
        assert f"| {key} | {value:.4f} |" in card, key


@pytest.mark.slow
def test_croft_eval_reproduces_the_card_numbers(tmp_path, monkeypatch):
    from croft_core.data.benchmarks import BENCHMARKS
    from croft_core.data.benchmarks.shapes import shapes_dg
    from croft_core.cli import main
    from croft_core.runs.evaluate import headline_metrics

    monkeypatch.setitem(BENCHMARKS, "shapes_dg", BENCHMARKS.get("shapes_dg", shapes_dg))
    out = tmp_path / "eval.json"
    # the card's detection numbers are on the benchmark's own ID side (the paper's: correctly
    # classified held-out-style images), as croft bench measured them
    assert main(["eval", "--backbone", "embedded", "--benchmark", "shapes_dg", "--benchmark-arg",
                 "heldout=painting",
                 "--checkpoint", str(EMBEDDED_CHECKPOINT), "--seed", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--quiet"]) == 0
    reproduced = headline_metrics(json.loads(out.read_text()))
    card = _config()["metrics"]
    assert set(reproduced) == set(card)
    for key, value in card.items():
        assert reproduced[key] == pytest.approx(value, abs=1e-6), key



def _zeroshot() -> dict:
    return json.loads((EMBEDDED_CHECKPOINT / "zeroshot.json").read_text())


def test_zeroshot_baseline_is_recorded_beside_the_checkpoint():
    """The app's first screen quotes zero-shot's held-out accuracy from here (showcase.heldout_numbers)."""
    recorded = _zeroshot()
    assert set(recorded["metrics"]) == set(_config()["metrics"])  # the same headline metrics
    assert recorded["command"].startswith("croft eval") and "--method zeroshot" in recorded["command"]
    assert "--benchmark shapes_dg --benchmark-arg heldout=painting" in recorded["command"]
    # compared side by side with the card's numbers, so measured on the same detection ID side (the
    # default): the baseline once used the source styles' side while the card used the paper's
    assert "--detection-id" not in recorded["command"]


@pytest.mark.slow
def test_croft_eval_reproduces_the_zeroshot_baseline(tmp_path, monkeypatch):
    import shlex

    from croft_core.data.benchmarks import BENCHMARKS
    from croft_core.data.benchmarks.shapes import shapes_dg
    from croft_core.cli import main
    from croft_core.runs.evaluate import headline_metrics

    monkeypatch.setitem(BENCHMARKS, "shapes_dg", BENCHMARKS.get("shapes_dg", shapes_dg))
    recorded = _zeroshot()
    out = tmp_path / "eval.json"
    args = shlex.split(recorded["command"])[1:]  # its own command, with the output in tmp_path
    args[args.index("--json") + 1] = str(out)
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    reproduced = headline_metrics(json.loads(out.read_text()))
    assert set(reproduced) == set(recorded["metrics"])
    for key, value in recorded["metrics"].items():
        assert reproduced[key] == pytest.approx(value, abs=1e-6), key
