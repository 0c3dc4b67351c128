"""Backbone loading, freezing, truncated text encoding and the text-embedding cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_model
from croft_core.clip.backbones import (BackboneUnavailableError, build_text_classifier,
                                  encode_text_truncated, load_backbone, parse_spec, same_backbone)
from croft_core.errors import CroftError
from croft_core.clip.prompts import CROFT_IMAGENET_TEMPLATES, get_templates


def test_parse_spec_forms():
    assert parse_spec("ViT-B-16:openai") == ("ViT-B-16", "openai")
    assert parse_spec("ViT-B/16:openai") == ("ViT-B-16", "openai")
    assert parse_spec("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    assert parse_spec("local-dir:/x") == ("local-dir:/x", None)
    assert parse_spec("embedded")[0].startswith("local-dir:")
    with pytest.raises(ValueError, match="no pretrained tag"):
        parse_spec("ViT-B-16")
    with pytest.raises(ValueError, match="empty backbone spec"):
        parse_spec("  ")


def test_pretrained_tag_fails_fast_offline():
    import huggingface_hub  # noqa: F401  (one-off import costs are not what this test times)
    import open_clip  # noqa: F401

    import croft_core.offline  # noqa: F401

    start = time.perf_counter()
    with pytest.raises(BackboneUnavailableError, match=r"ViT-B-16 pretrained='openai'.*local-dir:PATH.*embedded"):
        load_backbone("ViT-B-16:openai")
    assert time.perf_counter() - start < 1.0


def test_unknown_tag_and_architecture():
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'.*known tags"):
        load_backbone("ViT-B-16:nope")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_backbone("NotAModel-7:openai")


def test_hf_hub_fails_fast_offline():
    with pytest.raises(BackboneUnavailableError, match="hf-hub:someone/missing"):
        load_backbone("hf-hub:someone/missing")
    assert issubclass(BackboneUnavailableError, CroftError)


def test_local_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_backbone(f"local-dir:{tmp_path}")


def test_backbone_is_fully_frozen(tiny_backbone):
    assert all(not p.requires_grad for p in tiny_backbone.model.parameters())
    assert not tiny_backbone.model.logit_scale.requires_grad
    assert not tiny_backbone.model.training
    assert tiny_backbone.embed_dim == 16
    assert tiny_backbone.image_size == 16


def test_truncated_encoding_is_exact(tiny_backbone):
    model = tiny_backbone.model
    prompts = [t.format("circle") for t in CROFT_IMAGENET_TEMPLATES] + ["a", "a photo of a big red star."]
    tokens = tiny_backbone.tokenizer(prompts)
    with torch.no_grad():
        full = model.encode_text(tokens)
        short = encode_text_truncated(model, tokens)
    assert (tokens != 0).sum(1).max() < tokens.shape[1]  # really truncated
    assert (full - short).abs().max() <= 1e-5


def test_text_classifier_normalised_and_raw(tiny_backbone, tmp_path):
    names = ["circle", "square", "lightning_bolt"]
    feats = build_text_classifier(tiny_backbone, names, CROFT_IMAGENET_TEMPLATES, cache_dir=None)
    assert feats.shape == (3, 16)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    # normalised per template, averaged, renormalised
    with torch.no_grad():
        emb = tiny_backbone.model.encode_text(tiny_backbone.tokenizer(
            [t.format("square") for t in CROFT_IMAGENET_TEMPLATES]))
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(emb, dim=-1).mean(0), dim=0)
    torch.testing.assert_close(feats[1], expected, atol=1e-5, rtol=1e-5)
    raw = build_text_classifier(tiny_backbone, names, get_templates("single"), text_mode="raw", cache_dir=None)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="exactly one"):
        build_text_classifier(tiny_backbone, names, CROFT_IMAGENET_TEMPLATES, text_mode="raw")
    with pytest.raises(ValueError, match="empty"):
        build_text_classifier(tiny_backbone, [], CROFT_IMAGENET_TEMPLATES)


def test_text_cache_roundtrip_and_key(tiny_backbone, tmp_path):
    names = ["circle", "square"]
    a = build_text_classifier(tiny_backbone, names, get_templates("single"), cache_dir=tmp_path)
    files = list((tmp_path / "text").glob("*.safetensors"))
    assert len(files) == 1
    b = build_text_classifier(tiny_backbone, names, get_templates("single"), cache_dir=tmp_path)
    torch.testing.assert_close(a, b)
    build_text_classifier(tiny_backbone, names[::-1], get_templates("single"), cache_dir=tmp_path)
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 2  # order is part of the key


# ---- cache keys: everything that changes the numbers ----------------------------------------------

def test_cache_id_keys_the_precision(tiny_spec, tmp_path):
    fp32, bf16 = load_backbone(tiny_spec), load_backbone(tiny_spec, precision="bf16")
    assert bf16.cache_id != fp32.cache_id
    names = ["circle", "square"]
    build_text_classifier(fp32, names, get_templates("single"), cache_dir=tmp_path)
    cached = build_text_classifier(bf16, names, get_templates("single"), cache_dir=tmp_path)
    fresh = build_text_classifier(bf16, names, get_templates("single"), cache_dir=None)
    torch.testing.assert_close(cached, fresh)  # not the fp32 numbers from the shared cache
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 2


def _fake_hub_snapshot(hub: Path, repo_id: str, commit: str, seed: int) -> None:
    """A Hugging Face cache entry for ``repo_id`` at ``commit`` holding a tiny open_clip model."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    write_tiny_model(repo / "snapshots" / commit, seed=seed)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_hf_hub_cache_id_follows_the_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    first, second = "a" * 40, "b" * 40
    _fake_hub_snapshot(tmp_path, "someone/tiny", first, seed=0)
    a = load_backbone("hf-hub:someone/tiny")
    assert first in a.cache_id
    _fake_hub_snapshot(tmp_path, "someone/tiny", second, seed=1)  # main moved to new weights
    b = load_backbone("hf-hub:someone/tiny")
    assert second in b.cache_id and b.cache_id != a.cache_id
    assert not torch.equal(a.model.visual.proj, b.model.visual.proj)


# ---- one compatibility rule --------------------------------------------------------------------------

def test_same_backbone(tmp_path, monkeypatch):
    from croft_core.data.synth import EMBEDDED_DIR

    assert same_backbone("embedded", f"local-dir:{EMBEDDED_DIR}")
    assert same_backbone("ViT-B/16:openai", "ViT-B-16:openai")
    assert not same_backbone("ViT-B-16:openai", "ViT-B-16:laion400m_e31")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert same_backbone("local-dir:m", f"local-dir:{tmp_path / 'm'}")
    assert not same_backbone("local-dir:m", "embedded")
    assert same_backbone("ViT-B-16", "ViT-B-16") and not same_backbone("ViT-B-16", "ViT-L-14")
