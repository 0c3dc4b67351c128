"""Backbone loading, freezing, truncated text encoding and the text-embedding cache."""

from __future__ import annotations

import time

import pytest
import torch

from croft_core.backbones import (BackboneUnavailableError, build_text_classifier,
                                  encode_text_truncated, load_backbone, parse_spec)
from croft_core.prompts import CROFT_IMAGENET_TEMPLATES, get_templates


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
