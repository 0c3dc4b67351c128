"""The embedded world's tools through the `croft` command (argv parsing lives in cli.py only)."""

from __future__ import annotations

import json

import datasets
import open_clip
import pytest
import torch

from croft_core.cli import main
from croft_core.data.synth.world import CLASSES, NONSHAPE_KINDS


def test_render_shapes_tiny(tmp_path):
    out = tmp_path / "shapes"
    assert main(["render-shapes", "--out", str(out), "--n-train", "1", "--n-validation", "1",
                 "--n-test", "1", "--size", "16"]) == 0
    ds = datasets.load_from_disk(str(out))
    assert set(ds) == {"train", "validation", "test"}
    assert len(ds["test"]) == len(CLASSES) * 4 + len(NONSHAPE_KINDS)  # one non-shape per kind
    assert ds["test"].features["label"].names == [*CLASSES, *NONSHAPE_KINDS]
    assert len(ds["train"]) == len(CLASSES) * 4  # non-shapes are test images only


@pytest.mark.slow
def test_pretrain_is_deterministic(tmp_path):
    args = ["pretrain-embedded", "--steps", "2", "--warmup", "1", "--pool", "32", "--batch-size", "8",
            "--refresh", "2", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "open_clip_model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "open_clip_model.safetensors").read_bytes()
    info = json.loads((tmp_path / "a" / "pretrain.json").read_text())
    assert info["command"] == f"croft {' '.join(args)} --out {tmp_path / 'a'}"
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'a'}")
    assert model.encode_image(torch.zeros(1, 3, 64, 64)).shape == (1, 128)


def test_shipped_croft_checkpoint_loads_with_the_embedded_backbone():
    from croft_core.clip.backbones import load_backbone
    from croft_core.heads.hub import load_model
    from croft_core.data.synth import EMBEDDED_CHECKPOINT
    from croft_core.data.synth.world import ID_CLASSES

    model = load_model(EMBEDDED_CHECKPOINT)
    assert model.config.backbone == "embedded" and model.config.classnames == tuple(ID_CLASSES)
    assert model.config.head == "croft" and model.config.threshold is not None
    backbone = load_backbone(model.config.backbone)
    assert model.config.embed_dim == backbone.embed_dim
    assert not torch.allclose(model.head.image_weight, torch.eye(backbone.embed_dim))  # trained


def _record_pretraining(monkeypatch):
    """Replace the pretraining itself with a recorder of what the CLI asked for."""
    import croft_core.runs.pretrain as pretrain

    calls = []

    def fake_train(config, command=None):
        calls.append((config, command))
        return {"wall_time_s": 0.0}

    monkeypatch.setattr(pretrain, "train", fake_train)
    return calls


def test_pretrain_needs_an_explicit_out(monkeypatch, capsys):
    """Without --out the old command wrote over the shipped weights in croft_core/data/synth/embedded."""
    calls = _record_pretraining(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain-embedded", "--steps", "1"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err and calls == []


def test_pretrain_records_the_croft_command(monkeypatch, tmp_path):
    calls = _record_pretraining(monkeypatch)
    out = tmp_path / "my model"
    assert main(["pretrain-embedded", "--out", str(out), "--steps", "3"]) == 0
    (config, command), = calls
    assert config.out == str(out) and config.steps == 3
    assert command == f"croft pretrain-embedded --out '{out}' --steps 3"
