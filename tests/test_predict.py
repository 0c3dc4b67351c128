"""Image loading (every mode, every bad input) and open-set classification with a tiny backbone."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
import torch

from croft_app.service import classifier as predict
from croft_core.clip.backbones import build_text_classifier
from croft_core.data.images import DEFAULT_MAX_PIXELS, ImageError, default_max_pixels, load_image
from croft_core.heads.checkpoint import CroftModel, HeadConfig
from croft_app.service.classifier import OpenSetClassifier
from croft_app.service.models import ClassifierRegistry
from croft_app.service.vocabulary import check_vocabulary, embedded_words, resolve_vocabulary, unknown_words
from croft_core.clip.prompts import SINGLE_TEMPLATE, get_vocabulary

ID_CLASSES = ["circle", "square", "triangle"]


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header announces ``width`` x ``height`` RGB pixels (a bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _rgb(path):
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_modes_are_converted_to_rgb(tmp_path):
    PIL.Image.new("L", (5, 4), 77).save(tmp_path / "l.png")
    assert _rgb(tmp_path / "l.png").shape == (4, 5, 3) and (_rgb(tmp_path / "l.png") == 77).all()
    PIL.Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (_rgb(tmp_path / "clear.png") == 255).all()  # fully transparent -> the white background
    PIL.Image.new("RGBA", (4, 4), (255, 0, 0, 255)).save(tmp_path / "red.png")
    assert (_rgb(tmp_path / "red.png")[0, 0] == [255, 0, 0]).all()
    PIL.Image.new("LA", (4, 4), (0, 128)).save(tmp_path / "la.png")
    assert _rgb(tmp_path / "la.png")[0, 0, 0] in (127, 128)  # half-transparent black on white
    PIL.Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert PIL.Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    r, g, b = _rgb(tmp_path / "cmyk.jpg")[3, 3].astype(int)
    assert r > 200 and g < 60 and b < 60  # C=0 M=Y=max: red
    palette = PIL.Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png")
    assert PIL.Image.open(tmp_path / "p.png").mode == "P"
    assert (_rgb(tmp_path / "p.png") == 255).all()


def test_16_bit_32_bit_and_float_images_are_scaled(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    PIL.Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert PIL.Image.open(tmp_path / "g16.png").mode == "I;16"
    pixels = _rgb(tmp_path / "g16.png")
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255 and pixels[32, 0, 0] == round(32 * 64 * 16 / 257)
    PIL.Image.new("I", (4, 4), 40000).save(tmp_path / "i32.tiff")
    assert _rgb(tmp_path / "i32.tiff")[0, 0, 0] == round(40000 / 257)
    PIL.Image.new("F", (4, 4), 0.5).save(tmp_path / "f.tiff")
    assert _rgb(tmp_path / "f.tiff")[0, 0, 0] == 128


def test_tiny_bytes_pil_array_and_animated_inputs(tmp_path):
    PIL.Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "one.png")
    assert load_image(tmp_path / "one.png").size == (1, 1)  # not an error: preprocessing upscales
    assert load_image((tmp_path / "one.png").read_bytes()).getpixel((0, 0)) == (1, 2, 3)
    assert load_image(io.BytesIO((tmp_path / "one.png").read_bytes())).size == (1, 1)
    assert load_image(PIL.Image.new("L", (3, 2))).mode == "RGB"
    assert load_image(np.zeros((3, 4), np.uint8)).size == (4, 3)
    assert load_image(np.full((2, 2), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.ones((2, 2, 4), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    frames = [PIL.Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif").getpixel((0, 0))[0] > 200  # the first frame
    with pytest.raises(ImageError, match="must be"):
        load_image(np.zeros((2, 2, 2)))


def test_bad_files_get_clear_errors(tmp_path):
    (tmp_path / "text.png").write_text("this is not an image")
    with pytest.raises(ImageError, match="'text.png' is not an image file"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="no image given"):
        load_image(None)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for fmt in ("png", "jpeg"):
        buffer = io.BytesIO()
        PIL.Image.fromarray(noise).save(buffer, format=fmt)
        data = buffer.getvalue()
        (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageError, match="truncated or corrupt"):
            load_image(tmp_path / f"cut.{fmt}")


def test_decompression_bombs_are_rejected_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))  # 10^10 pixels, 100 bytes
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match=r"10000x5000 = 50,000,000 pixels, over the limit of 40,000,000"):
        load_image(png_header_only(10_000, 5_000))  # under PIL's own limit, over ours
    PIL.Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="over the limit of 100 pixels"):
        load_image(tmp_path / "small.png", max_pixels=100)
    monkeypatch.setenv("CROFT_MAX_PIXELS", "399")
    assert default_max_pixels() == 399
    with pytest.raises(ImageError, match="CROFT_MAX_PIXELS"):
        load_image(tmp_path / "small.png")
    monkeypatch.setenv("CROFT_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="CROFT_MAX_PIXELS must be a positive number"):
        default_max_pixels()
    monkeypatch.delenv("CROFT_MAX_PIXELS")
    assert default_max_pixels() == DEFAULT_MAX_PIXELS


# ---------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------

def test_vocabulary_presets_free_text_and_limits():
    classes, notes = resolve_vocabulary("cifar10")
    assert classes == get_vocabulary("cifar10") and "preset 'cifar10'" in notes[0]
    assert resolve_vocabulary(" Shapes ")[0] == get_vocabulary("shapes")
    classes, notes = resolve_vocabulary("imagenet1k")  # open_clip's repeated names made unique
    assert len(classes) == 1000 and not any("duplicate" in n for n in notes)
    classes, notes = resolve_vocabulary("cat, dog\nCat,, \n  bird  ")
    assert classes == ["cat", "dog", "bird"]
    assert any("duplicate" in n and "Cat" in n for n in notes) and any("blank" in n for n in notes)
    assert resolve_vocabulary("café, 猫, Straße")[0] == ["café", "猫", "Straße"]  # non-ASCII kept
    for text in ("", "   ", "cat", "cat, CAT", ",,,"):
        with pytest.raises(ValueError, match="Enter at least two class names"):
            resolve_vocabulary(text)
    with pytest.raises(ValueError, match="11 classes, more than the maximum of 10"):
        resolve_vocabulary(",".join(f"c{i}" for i in range(11)), max_classes=10)
    with pytest.raises(ValueError, match="more than the maximum of 5"):
        resolve_vocabulary("cifar10", max_classes=5)
    with pytest.raises(ValueError, match="201 characters long; .* at most 200"):
        check_vocabulary(["cat", "x" * 201])
    assert check_vocabulary(["a  b", "c"])[0] == ["a b", "c"]


def test_embedded_word_list_comes_from_the_world_captions():
    words = embedded_words()
    assert {"circle", "lightning", "bolt", "red", "sketch", "polygon", "photo"} <= words
    assert unknown_words(["circle", "Red Star", "x mark", "golden retriever", "dog", "dog"]) == \
        ["golden", "retriever", "dog"]


# ---------------------------------------------------------------------------------------------
# the classifier
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [load_image(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(3)]


@pytest.fixture(scope="module")
def zero_shot(tiny_backbone):
    return OpenSetClassifier(tiny_backbone, embedded_world=False, cache_dir=None)


def _checkpoint(spec, head="croft", **config) -> CroftModel:
    extra = dict(num_classes=3, cache_size=6) if head in ("tip_adapter", "linear_probe") else {}
    return CroftModel(HeadConfig(head=head, method=head, embed_dim=16, backbone=spec,
                                 classnames=tuple(ID_CLASSES), templates=SINGLE_TEMPLATE,
                                 **extra, **config))


def test_scores_are_the_energy_of_the_scaled_cosines(zero_shot, tiny_backbone, images):
    classes = ["circle", "square", "triangle", "star", "heart", "cross", "arrow"]
    predictions = zero_shot.classify(images, classes, threshold=-1e9)
    features = tiny_backbone.encode_images(torch.stack([tiny_backbone.preprocess(im) for im in images]))
    text = build_text_classifier(tiny_backbone, classes, SINGLE_TEMPLATE, cache_dir=None)
    logits = tiny_backbone.logit_scale * torch.nn.functional.normalize(features, dim=-1) @ text.T
    expected = torch.logsumexp(logits, dim=-1)
    probs = logits.softmax(-1)
    for n, p in enumerate(predictions):
        assert p.score == pytest.approx(float(expected[n]), abs=1e-4)
        assert p.accepted and p.label == p.predicted_class == classes[int(probs[n].argmax())]
        assert len(p.probabilities) == 5
        values = list(p.probabilities.values())
        assert values == sorted(values, reverse=True) and sum(values) <= 1.0 + 1e-6
        assert values[0] == pytest.approx(float(probs[n].max()), abs=1e-5)
        assert p.threshold == -1e9 and p.threshold_source == "user"


def test_threshold_decides_and_must_be_finite(zero_shot, images):
    rejected = zero_shot.classify(images, ID_CLASSES, threshold=1e9)
    assert all(p.label == "unknown" and not p.accepted for p in rejected)
    assert all(p.predicted_class in ID_CLASSES for p in rejected)
    assert all(p.accepted for p in zero_shot.classify(images, ID_CLASSES, threshold="-1e9"))
    score = zero_shot.classify(images[:1], ID_CLASSES, threshold=0.0)[0].score
    assert zero_shot.classify(images[:1], ID_CLASSES, threshold=score)[0].accepted  # >= accepts
    for bad in (float("inf"), float("-inf"), float("nan"), "abc", True, [1.0]):
        with pytest.raises(ValueError, match="threshold must be a finite number"):
            zero_shot.classify(images, ID_CLASSES, threshold=bad)
    with pytest.raises(ValueError, match="no images"):
        zero_shot.classify([], ID_CLASSES)
    with pytest.raises(ValueError, match="at least two class names"):
        zero_shot.classify(images, ["circle", " "])


def test_zero_shot_without_reference_is_closed_set(zero_shot, images):
    p = zero_shot.classify(images[:1], ["cat", "dog"])[0]
    assert p.accepted and p.threshold is None and p.threshold_source == "none"
    assert any("no calibrated threshold" in n for n in p.notes) and p.warnings == []
    ref = zero_shot.reference(["cat", "dog"])
    assert ref.scores is None and ref.threshold is None


def test_rendered_reference_calibrates_world_vocabularies(tiny_backbone, images):
    classifier = OpenSetClassifier(tiny_backbone, embedded_world=True, cache_dir=None)
    ref = classifier.reference(["circle", "Square", "x mark"])
    assert ref.source == "rendered" and len(ref.scores) == 3 * predict.REFERENCE_IMAGES_PER_CLASS
    assert (ref.scores >= ref.threshold).mean() >= 0.95  # 95% ID TPR
    assert classifier.reference(["circle", "Square", "x mark"]) is ref  # cached
    p = classifier.classify(images[:1], ["circle", "Square", "x mark"])[0]
    assert p.threshold == ref.threshold and p.threshold_source == "rendered"
    assert p.accepted == (p.score >= ref.threshold)
    warned = classifier.classify(images[:1], ["circle", "golden retriever"])[0]
    assert warned.threshold_source == "none"
    assert "never saw the word(s) 'golden', 'retriever'" in warned.warnings[0]


def test_checkpoint_threshold_and_class_agnostic_vocabulary(tiny_spec, tiny_backbone, images):
    model = _checkpoint(tiny_spec, threshold=3.5, id_scores=(3.0, 4.0, 5.0))
    classifier = OpenSetClassifier(tiny_backbone, model, name="ckpt", embedded_world=False, cache_dir=None)
    p = classifier.classify(images[:1], ["Triangle", "circle", "square"])[0]  # same set, any order
    assert p.threshold == 3.5 and p.threshold_source == "checkpoint"
    assert p.accepted == (p.score >= 3.5) and p.label == (p.predicted_class if p.accepted else "unknown")
    assert list(classifier.reference(ID_CLASSES).scores) == [3.0, 4.0, 5.0]
    other = classifier.classify(images[:1], ["cat", "dog"])[0]  # never reused for another vocabulary
    assert other.threshold is None and other.threshold_source == "none" and other.accepted
    assert any("adapters are class-agnostic" in n for n in other.notes)
    assert any("calibrated on its training classes" in n and "not used" in n for n in other.notes)
    assert list(classifier.reference(["cat", "dog"]).scores) == [3.0, 4.0, 5.0]  # still drawn


def test_class_tied_checkpoints_and_backbone_mismatch(tiny_spec, tiny_backbone, images):
    tied = OpenSetClassifier(tiny_backbone, _checkpoint(tiny_spec, "tip_adapter"), name="tip",
                             embedded_world=False, cache_dir=None)
    assert len(tied.classify(images[:1], ID_CLASSES)) == 1
    with pytest.raises(ValueError, match="tied to its 3 training classes"):
        tied.classify(images[:1], ["cat", "dog"])
    with pytest.raises(ValueError, match="trained on backbone 'ViT-B-16:openai'.*CROFT_BACKBONE"):
        OpenSetClassifier(tiny_backbone, _checkpoint("ViT-B-16:openai"), name="other")


def test_text_features_are_cached_in_memory(tiny_backbone, images, monkeypatch):
    calls = []
    real = predict.build_text_classifier
    monkeypatch.setattr(predict, "build_text_classifier",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    classifier = OpenSetClassifier(tiny_backbone, embedded_world=False, cache_dir=None,
                                   text_cache_size=2)
    for vocabulary in (["a", "b"], ["a", "b"], ["c", "d"], ["a", "b"], ["e", "f"], ["c", "d"]):
        classifier.classify(images[:1], vocabulary, threshold=0.0)
    assert calls == [["a", "b"], ["c", "d"], ["e", "f"], ["c", "d"]]  # LRU of 2


def test_concurrent_classification_is_consistent(zero_shot, images):
    expected = [p.score for p in zero_shot.classify(images, ID_CLASSES, threshold=0.0)]
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda i: zero_shot.classify(images, [*ID_CLASSES, f"class {i % 3}"],
                                                          threshold=0.0), range(16)))
    assert all(len(r) == 3 for r in runs)
    again = [p.score for p in zero_shot.classify(images, ID_CLASSES, threshold=0.0)]
    assert again == pytest.approx(expected, abs=1e-6)


def test_registry_loads_each_model_once(tiny_spec, tiny_backbone, tmp_path):
    folder = _checkpoint(tiny_spec, threshold=1.0).save(tmp_path / "ckpt")
    registry = ClassifierRegistry(tiny_backbone, [str(folder)], embedded_world=False, cache_dir=None)
    assert registry.names() == ["zero-shot", "ckpt"]  # by display name, never by path
    assert registry.get("zero-shot") is registry.get("") is registry.get("zeroshot")
    first = registry.get("ckpt")
    assert first is registry.get("ckpt") and not first.is_zero_shot and first.name == "ckpt"
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: registry.get("ckpt"), range(4)))
    assert all(c is first for c in loaded)
