"""Heads, checkpoints (save/load/strictness) and Hub loading errors."""

from __future__ import annotations

import json

import pytest
import torch

from croft_core.errors import HubError
from croft_core.hub import CheckpointNotFoundError, load_model, push_checkpoint
from croft_core.model import CroftHead, CroftModel, HeadConfig, read_checkpoint_config
from croft_core.train import init_model, method_config
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


def test_missing_checkpoint_messages(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="missing config.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="neither an existing folder"):
        load_model(tmp_path / "nope" / "deeper")
    with pytest.raises(CheckpointNotFoundError, match="not in the local Hub cache"):
        load_model("someone/not-cached")


def test_push_refuses_offline_and_non_checkpoints(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not a CRoFT checkpoint"):
        push_checkpoint(tmp_path, "me/x")
    CroftModel(HeadConfig(head="croft", embed_dim=4)).save(tmp_path / "c")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push_checkpoint(tmp_path / "c", "me/x")


def test_class_tied_heads_reject_other_vocabularies():
    train_set, text = clustered_features(d=16)
    model = init_model(method_config("linear_probe"), embed_dim=16, logit_scale=20.0,
                       classnames=["a", "b", "c", "d"], train_set=train_set, text_features=text)
    assert not model.class_agnostic
    with pytest.raises(ValueError, match="trained on 4 classes"):
        model(train_set.first_view(), text[:3])


class _FakeHubApi:
    """Records what ``push_checkpoint`` would send to the Hub (no network)."""

    def __init__(self, token=None):
        self.files: dict[str, bytes] = {}
        self.repos: list[str] = []
        _FakeHubApi.last = self

    def create_repo(self, repo_id, **kwargs):
        self.repos.append(repo_id)

    def create_commit(self, repo_id, operations, **kwargs):
        for op in operations:
            data = op.path_or_fileobj
            self.files[op.path_in_repo] = data if isinstance(data, bytes) else open(data, "rb").read()
        return type("CommitInfo", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    def upload_folder(self, folder_path, repo_id, ignore_patterns=(), **kwargs):  # the old way
        import fnmatch
        from pathlib import Path

        for p in Path(folder_path).rglob("*"):
            rel = p.relative_to(folder_path).as_posix()
            if p.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in ignore_patterns):
                self.files[rel] = p.read_bytes()
        return type("CommitInfo", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHubApi)
    return _FakeHubApi


def test_push_writes_the_card_for_the_target_repo(tmp_path, fake_hub):
    folder = tmp_path / "runs" / "my-croft"
    model = CroftModel(HeadConfig(head="croft", embed_dim=4, backbone="embedded", classnames=("a", "b"),
                                  metrics={"id_accuracy": 0.5}))
    model.save(folder)
    local_card = (folder / "README.md").read_text()
    assert str(tmp_path) not in local_card  # no machine path in a card that may be shipped
    (folder / "train_state.safetensors").write_bytes(b"x")
    url = push_checkpoint(folder, "someone/croft-shapes")
    api = fake_hub.last
    assert url == "https://hub/someone/croft-shapes/commit/1" and api.repos == ["someone/croft-shapes"]
    assert set(api.files) == {"README.md", "config.json", "model.safetensors"}
    card = api.files["README.md"].decode()
    assert 'from_pretrained("someone/croft-shapes")' in card and str(tmp_path) not in card
    assert "library_name: croft" in card and "| id_accuracy | 0.5000 |" in card
    assert api.files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert (folder / "README.md").read_text() == local_card  # the local folder is left as it was


def test_push_failures_are_hub_errors(tmp_path, fake_hub, monkeypatch):
    from huggingface_hub.errors import HTTPError

    from croft_core.errors import CroftError, HubError

    CroftModel(HeadConfig(head="croft", embed_dim=4)).save(tmp_path / "c")

    def refuse(self, repo_id, **kwargs):
        raise HTTPError("401 Unauthorized")

    monkeypatch.setattr(fake_hub, "create_repo", refuse)
    with pytest.raises(HubError, match="could not push .* to me/x: 401 Unauthorized"):
        push_checkpoint(tmp_path / "c", "me/x")

    def bug(self, repo_id, **kwargs):
        raise ZeroDivisionError("a bug, not a Hub failure")

    monkeypatch.setattr(fake_hub, "create_repo", bug)
    with pytest.raises(ZeroDivisionError):  # not disguised as a Hub error
        push_checkpoint(tmp_path / "c", "me/x")
    assert issubclass(CheckpointNotFoundError, CroftError) and issubclass(HubError, CroftError)
