"""Heads and checkpoints: save, load, strictness, model cards."""

from __future__ import annotations

import json

import pytest
import torch

from croft_core.heads.hub import load_model
from croft_core.heads.checkpoint import (CARD_REPO_PLACEHOLDER, CroftHead, CroftModel, HeadConfig,
                              read_checkpoint_config, render_model_card)
from croft_core.runs.train import init_model, method_config
from helpers import clustered_features


def test_croft_head_starts_as_zero_shot():
    f, t = torch.randn(5, 8), torch.randn(3, 8)
    head = CroftHead(8, logit_scale=50.0)
    zs = 50.0 * torch.nn.functional.normalize(f, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T
    torch.testing.assert_close(head(f, t), zs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(head.generate(f), head.adapt_image(f))  # W_g = I at init


@pytest.mark.parametrize("method", ["croft", "croft_clean", "clip_adapter", "tip_adapter", "linear_probe"])
def test_every_trainable_parameter_gets_a_gradient(method):
    train_set, text = clustered_features(d=16)
    model = init_model(method_config(method), embed_dim=16, logit_scale=20.0,
                       classnames=["a", "b", "c", "d"], train_set=train_set, text_features=text)
    loss = torch.nn.functional.cross_entropy(model(train_set.first_view(), text), train_set.labels)
    if method.startswith("croft"):
        loss = loss + model.head.generate(train_set.first_view()).sum()
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_checkpoint_roundtrip(tmp_path):
    train_set, text = clustered_features(d=16)
    model = init_model(method_config("croft"), embed_dim=16, logit_scale=20.0,
                       classnames=["a", "b", "c", "d"], backbone="embedded", templates=["a photo of a {}."])
    with torch.no_grad():
        model.head.image_weight.add_(0.1 * torch.randn(16, 16))
    model.update_config(threshold=1.5, id_scores=(1.0, 2.0), metrics={"id_accuracy": 0.9})
    model.save(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["backbone"] == "embedded" and config["threshold"] == 1.5
    assert config["classnames"] == ["a", "b", "c", "d"] and config["training"]["lambda1"] == 5.0
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "library_name: croft" in card and "| id_accuracy | 0.9000 |" in card
    loaded = load_model(tmp_path / "ckpt")
    assert isinstance(loaded.config, HeadConfig) and loaded.config.classnames == ("a", "b", "c", "d")
    torch.testing.assert_close(loaded(train_set.first_view(), text), model(train_set.first_view(), text))
    assert read_checkpoint_config(tmp_path / "ckpt").threshold == 1.5


def test_loading_is_strict(tmp_path):
    model = CroftModel(HeadConfig(head="croft", embed_dim=8))
    model.save(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["embed_dim"] = 16  # the weights no longer match the config
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match its config.json"):
        load_model(tmp_path / "ckpt")


def test_class_tied_heads_reject_other_vocabularies():
    train_set, text = clustered_features(d=16)
    model = init_model(method_config("linear_probe"), embed_dim=16, logit_scale=20.0,
                       classnames=["a", "b", "c", "d"], train_set=train_set, text_features=text)
    assert not model.class_agnostic
    with pytest.raises(ValueError, match="trained on 4 classes"):
        model(train_set.first_view(), text[:3])



def test_model_card_names_the_repo_it_is_rendered_for():
    config = HeadConfig(head="croft", embed_dim=4, backbone="embedded", classnames=("a", "b"))
    card = render_model_card(config, "someone/croft-shapes")
    assert 'CroftModel.from_pretrained("someone/croft-shapes")' in card and "Classes (2): a, b" in card
    assert 'from_pretrained("path/to/checkpoint-folder")' in render_model_card(config)
    model = CroftModel(config)  # the mixin's hook, used by save_pretrained and push_to_hub
    assert 'from_pretrained("me/x")' in str(model.generate_model_card(repo_id="me/x"))


def test_shipped_checkpoint_cards_name_no_local_folder():
    """Defect: the shipped card said ``from_pretrained("croft_core/data/synth/croft-shapes")``."""
    from pathlib import Path

    import croft_core

    cards = [p / "README.md" for p in Path(croft_core.__file__).parent.rglob("*")
             if (p / "config.json").is_file() and (p / "model.safetensors").is_file()]
    assert cards
    for card in cards:
        text = card.read_text()
        assert f'from_pretrained("{CARD_REPO_PLACEHOLDER}")' in text, f"{card} names a local folder"
