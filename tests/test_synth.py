"""Fast tests of the embedded miniature: shapes world, dataset export and shipped CLIP."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from croft_core.synth import EMBEDDED_DIR
from croft_core.synth.world import (
    CLASSES,
    COLOURS,
    DOMAINS,
    ID_CLASSES,
    caption,
    render,
)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_class_list_shape() -> None:
    assert len(CLASSES) >= 20
    assert len(set(CLASSES)) == len(CLASSES)
    assert ID_CLASSES == CLASSES[:10]
    assert DOMAINS == ("photo", "sketch", "cartoon", "painting")
    assert "lightning bolt" in CLASSES


def test_render_is_deterministic() -> None:
    for domain in DOMAINS:
        a = render("star", domain, np.random.default_rng(7))
        b = render("star", domain, np.random.default_rng(7))
        c = render("star", domain, np.random.default_rng(8))
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_class_renders_rgb(domain: str) -> None:
    rng = np.random.default_rng(0)
    for class_name in CLASSES:
        image = render(class_name, domain, rng, size=32)
        assert image.mode == "RGB"
        assert image.size == (32, 32)
        assert np.asarray(image).std() > 1.0, (class_name, domain)  # something is drawn


def test_captions_name_the_class_only_sometimes() -> None:
    rng = np.random.default_rng(0)
    for class_name in ("circle", "star", "pentagon"):
        caps = [caption(class_name, "photo", "red", rng) for _ in range(400)]
        assert all(isinstance(c, str) and c for c in caps)
        named = sum(class_name in c for c in caps)
        assert 0 < named < len(caps) / 2
    sketch = caption("hexagon", "sketch", "blue", np.random.default_rng(1))
    assert any(word in sketch for word in ("sketch", "drawing", "doodle"))
    assert set(COLOURS) >= {"red", "blue"}


def test_build_shapes_dataset_tiny(tmp_path) -> None:
    import datasets

    from croft_core.synth.dataset import build_shapes_dataset

    out = tmp_path / "shapes"
    ds = build_shapes_dataset(out, n_per_class_domain=1, seed=3, size=16)
    assert set(ds) == {"train", "validation", "test"}
    train = ds["train"]
    assert train.features["label"].names == list(CLASSES)
    assert "domain" in train.column_names and "caption" in train.column_names
    assert len(train) == len(CLASSES) * len(DOMAINS)
    assert set(train["domain"]) == set(range(len(DOMAINS)))
    assert train[0]["image"].size == (16, 16)
    assert len(set(train["id"])) == len(train)
    again = datasets.load_from_disk(str(out))
    assert _png(again["test"][5]["image"]) == _png(ds["test"][5]["image"])
    # Same seed -> same pixels, independent of the other splits' sizes.
    other = build_shapes_dataset(None, n_per_class_domain={"train": 1, "validation": 0, "test": 2},
                                 seed=3, size=16)
    assert other["train"][7]["image"].tobytes() == train[7]["image"].tobytes()


@pytest.fixture(scope="module")
def embedded():
    open_clip = pytest.importorskip("open_clip")
    os.environ["HF_HUB_OFFLINE"] = "1"
    name = f"local-dir:{EMBEDDED_DIR}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def test_embedded_weights_are_small_safetensors() -> None:
    weights = EMBEDDED_DIR / "open_clip_model.safetensors"
    assert (EMBEDDED_DIR / "open_clip_config.json").is_file()
    assert weights.is_file()
    assert weights.stat().st_size <= 10 * 1000 * 1000
    assert not list(EMBEDDED_DIR.glob("*.bin")) and not list(EMBEDDED_DIR.glob("*.pt*"))


def test_embedded_model_encodes(embedded) -> None:
    model, preprocess, tokenizer = embedded
    image = render("heart", "photo", np.random.default_rng(0))
    embed_dim = model.text_projection.shape[1]
    with torch.no_grad():
        img = model.encode_image(preprocess(image).unsqueeze(0))
        txt = model.encode_text(tokenizer(["a photo of a heart.", "a photo of a square."]))
    assert img.shape == (1, embed_dim)
    assert txt.shape == (2, embed_dim)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
