"""Fast tests of the embedded miniature: shapes world, dataset export and shipped CLIP."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import torch

from croft_core.data.synth import EMBEDDED_DIR
from croft_core.data.synth.world import (
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


def _named_classes(text: str) -> set[str]:
    """Classes whose name occurs in ``text`` as whole words (not as part of a longer class name)."""
    found = {c for c in CLASSES if re.search(rf"\b{re.escape(c)}\b", text)}
    return {c for c in found if not any(c != o and c in o for o in found)}


@pytest.mark.parametrize("domain", DOMAINS)
def test_captions_name_the_exact_class_and_never_a_look_alike(domain: str) -> None:
    rng = np.random.default_rng(0)
    for class_name in CLASSES:
        caps = [caption(class_name, domain, "red", rng) for _ in range(200)]
        assert all(isinstance(c, str) and c for c in caps)
        named = [_named_classes(c) for c in caps]
        assert all(n <= {class_name} for n in named), (class_name, [c for c, n in zip(caps, named) if n - {class_name}])
        assert sum(class_name in n for n in named) >= 0.8 * len(caps), class_name
    sketch = caption("hexagon", "sketch", "blue", np.random.default_rng(1))
    assert any(word in sketch for word in ("sketch", "drawing", "doodle"))
    assert set(COLOURS) >= {"red", "blue"}


def test_pretraining_sees_mostly_photos() -> None:
    from croft_core.data.synth.world import PRETRAIN_DOMAIN_WEIGHTS

    weights = dict(zip(DOMAINS, PRETRAIN_DOMAIN_WEIGHTS))
    assert sum(PRETRAIN_DOMAIN_WEIGHTS) == pytest.approx(1.0)
    assert weights["photo"] >= 0.8 and all(w > 0 for w in weights.values())


def test_lexicon_file_lists_every_caption_noun() -> None:
    from croft_core.data.synth.world import COARSE, lexicon

    shipped = (EMBEDDED_DIR / "lexicon.txt").read_text().splitlines()
    assert tuple(shipped) == lexicon()
    assert set(CLASSES) <= set(shipped)  # the unseen classes too
    assert {n for names in COARSE.values() for n in names} <= set(shipped)
    assert len(set(shipped)) == len(shipped)


def test_synth_modules_have_no_cli_entry_points() -> None:
    """`croft render-shapes` / `pretrain-embedded` / `check-embedded` replace them (no cli import cycle)."""
    import importlib

    for name in ("croft_core.data.synth.dataset", "croft_core.runs.pretrain", "croft_core.runs.embedded_check"):
        module = importlib.import_module(name)
        assert not hasattr(module, "main"), name
        assert not re.search(r"croft_core\.cli\b", open(module.__file__).read()), name


def test_pretrain_records_the_given_command_not_argv(tmp_path, monkeypatch) -> None:
    import json

    from croft_core.runs.pretrain import PretrainConfig, train

    monkeypatch.setattr("sys.argv", ["pytest", "--not-a-pretrain-flag"])
    config = PretrainConfig(out=str(tmp_path / "m"), steps=1, warmup=1, pool=8, batch_size=4, refresh=1,
                            threads=1)
    info = train(config, command="croft pretrain-embedded --steps 1")
    assert info["command"] == "croft pretrain-embedded --steps 1"
    assert json.loads((tmp_path / "m" / "pretrain.json").read_text())["command"] == info["command"]
    assert train(PretrainConfig(**{**config.__dict__, "out": str(tmp_path / "n")}))["command"] is None


def test_build_shapes_dataset_tiny(tmp_path) -> None:
    import datasets

    from croft_core.data.synth.dataset import build_shapes_dataset

    out = tmp_path / "shapes"
    ds = build_shapes_dataset(out, n_per_class_domain=1, seed=3, size=16)
    assert set(ds) == {"train", "validation", "test"}
    train = ds["train"]
    assert train.features["label"].names[:len(CLASSES)] == list(CLASSES)  # then the non-shape kinds
    assert "domain" in train.column_names and "caption" in train.column_names
    assert len(train) == len(CLASSES) * len(DOMAINS)  # no non-shape images outside the test split
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
