"""Feature extraction: views, seeded augmentation, the safetensors cache and its manifest."""

from __future__ import annotations

import json

import pytest
import torch

from croft_core.data.benchmarks import materialize
from croft_core.clip.features import FeatureSet, extract_features
from datagen import tiny_benchmark


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    bench = tiny_benchmark(tmp_path_factory.mktemp("data"))
    return materialize(bench, "train", shots=2, seed=1)


def test_views_are_seeded_and_cached(tiny_backbone, train_split, tmp_path):
    a = extract_features(tiny_backbone, train_split, views=3, augment=True, seed=5, cache_dir=tmp_path)
    assert a.features.shape == (3, len(train_split), tiny_backbone.embed_dim)
    assert not torch.allclose(a.features[0], a.features[1])  # different crops per view
    files = list((tmp_path / "features").glob("*.safetensors"))
    assert len(files) == 1
    manifest = json.loads(files[0].with_name(files[0].name + ".json").read_text())
    assert manifest["ids"] == list(train_split.ids) and manifest["views"] == 3
    b = extract_features(tiny_backbone, train_split, views=3, augment=True, seed=5, cache_dir=None)
    assert torch.equal(a.features, b.features)  # same seed, same crops, cache or not
    c = extract_features(tiny_backbone, train_split, views=3, augment=True, seed=5, cache_dir=tmp_path)
    assert torch.equal(a.features, c.features) and c.ids == a.ids
    d = extract_features(tiny_backbone, train_split, views=3, augment=True, seed=6, cache_dir=tmp_path)
    assert not torch.equal(a.features, d.features)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 2


def test_eval_features_match_direct_encoding(tiny_backbone, train_split):
    fs = extract_features(tiny_backbone, train_split, cache_dir=None)
    pixels = torch.stack([tiny_backbone.preprocess(train_split.image(i)) for i in range(len(train_split))])
    torch.testing.assert_close(fs.first_view(), tiny_backbone.encode_images(pixels))
    torch.testing.assert_close(fs.labels, torch.as_tensor(train_split.labels))


def test_feature_set_validation_and_roundtrip(tmp_path):
    with pytest.raises(ValueError, match="must agree"):
        FeatureSet(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long), ["a", "b"])
    fs = FeatureSet(torch.randn(3, 4), torch.tensor([0, 1, 2]), ["a", "b", "c"], "x", {"seed": 1})
    loaded = FeatureSet.load(fs.save(tmp_path / "f.safetensors"))
    assert torch.equal(loaded.features, fs.features) and loaded.ids == fs.ids
    assert loaded.name == "x" and loaded.meta == {"seed": 1}


def test_several_views_need_augmentation(tiny_backbone, train_split):
    with pytest.raises(ValueError, match="augment=True"):
        extract_features(tiny_backbone, train_split, views=2)


def test_feature_cache_is_keyed_by_the_backbone_precision(tiny_spec, train_split, tmp_path):
    from croft_core.clip.backbones import load_backbone
    from croft_core.clip.features import feature_cache_path

    fp32, bf16 = load_backbone(tiny_spec), load_backbone(tiny_spec, precision="bf16")
    path32, _ = feature_cache_path(fp32, train_split, cache_dir=tmp_path)
    path16, _ = feature_cache_path(bf16, train_split, cache_dir=tmp_path)
    assert path32 != path16
