"""Checkpoints on the Hub: loading errors, and pushing (the card written for the target repo)."""

from __future__ import annotations

import pytest

from croft_core.errors import HubError
from croft_core.heads.hub import CheckpointNotFoundError, load_model, push_checkpoint
from croft_core.heads.checkpoint import CroftModel, HeadConfig


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


def test_push_keeps_a_longer_card_and_replaces_an_old_one(tmp_path, fake_hub):
    from croft_core.heads.hub import card_for_repo

    folder = CroftModel(HeadConfig(head="croft", embed_dim=4, classnames=("a", "b"))).save(tmp_path / "c")
    card = (folder / "README.md").read_text() + "\n## Data\n\n16 images per class.\n"
    (folder / "README.md").write_text(card)  # a card with more sections (e.g. a fine-tuning run's)
    push_checkpoint(folder, "me/x")
    pushed = fake_hub.last.files["README.md"].decode()
    assert "## Data" in pushed and 'from_pretrained("me/x")' in pushed and "path/to/" not in pushed
    old = card.replace("path/to/checkpoint-folder", str(folder))  # written before cards had a placeholder
    (folder / "README.md").write_text(old)
    new = card_for_repo(folder, "me/x")
    assert str(folder) not in new and 'from_pretrained("me/x")' in new
    (folder / "README.md").unlink()
    assert "Classes (2): a, b" in card_for_repo(folder, "me/x")
