"""The first screen's examples (issue 19): test-split images picked by a rule, captioned with each
model's real answer, and the one line that says what the embedded model can know."""

from __future__ import annotations

import pytest

from croft_app.service import showcase
from croft_app.service.showcase import SHOWCASE, WHAT_IT_KNOWS, Example, answered_examples, example_caption
from croft_core.data.synth.world import CLASSES, ID_CLASSES, NONSHAPE_KINDS


def test_examples_are_the_dataset_test_images() -> None:
    from croft_core.data.synth.dataset import build_split

    test = build_split("test", 1, seed=showcase.DATASET_SEED, size=64)
    names = test.features["label"].names
    for example in SHOWCASE:
        row = next(r for r in test if names[r["label"]] == example.shape
                   and (example.shape in NONSHAPE_KINDS or test.features["domain"].names[r["domain"]] == example.style))
        assert showcase.example_image(example).tobytes() == row["image"].tobytes(), example


def test_showcase_covers_known_unseen_and_not_a_shape() -> None:
    kinds = [(e.shape in ID_CLASSES, e.shape in CLASSES, e.shape in NONSHAPE_KINDS) for e in SHOWCASE]
    assert (True, True, False) in kinds and (False, True, False) in kinds and (False, False, True) in kinds
    assert "drawn shapes in four styles" in WHAT_IT_KNOWS


def _fake_answer(calls: list):
    """zero-shot says "circle" to every shape; the checkpoint says the true class of the held-out scan
    (its batches list the ID classes in order) and rejects the non-shape."""
    def answer(model: str, images, vocabulary: str):
        calls.append((model, len(images), vocabulary))
        if len(images) == 1:
            return [{"accepted": False, "label": "unknown", "nearest_negative": "noise"}]
        labels = ["circle"] * len(images) if model == "zero-shot" else list(ID_CLASSES[:len(images)])
        return [{"accepted": True, "label": label} for label in labels]

    return answer


def test_rule_picks_the_first_disagreement_and_agreement(tmp_path) -> None:
    calls: list = []
    shown = answered_examples(_fake_answer(calls), ["zero-shot", "CRoFT · shapes"], tmp_path)
    examples = [e for e, _, _ in shown]
    assert examples[0] == SHOWCASE[0] and examples[-2:] == list(SHOWCASE[1:])
    disagree, agree = examples[1], examples[2]
    assert (disagree.shape, disagree.style, disagree.index) == ("square", showcase.HELDOUT_STYLE, 0)
    assert (agree.shape, agree.style, agree.index) == ("circle", showcase.HELDOUT_STYLE, 0)
    captions = [c for _, _, c in shown]
    assert captions[1].endswith("→ zero-shot: circle · fine-tuned: square")
    assert captions[2].endswith("→ zero-shot: circle · fine-tuned: circle")
    assert captions[-1] == "not a shape at all → zero-shot: unknown ('noise'?) · fine-tuned: unknown ('noise'?)"
    assert all(p.is_file() for _, p, _ in shown)
    scans = [c for c in calls if c[1] > 1]
    assert len(scans) == 2 and all(c[1] == len(ID_CLASSES) for c in scans)  # one batch was enough


def test_a_disagreement_where_one_model_is_right_comes_first(tmp_path) -> None:
    """zero-shot says "heart" to everything, the checkpoint "star": the first disagreement (circle)
    has no right answer, the star image does, so the star is shown."""
    def answer(model: str, images, vocabulary: str):
        label = "heart" if model == "zero-shot" else "star"
        return [{"accepted": True, "label": label if len(images) > 1 else "unknown"} for _ in images]

    shown = answered_examples(answer, ["zero-shot", "ckpt"], tmp_path)
    assert shown[1][0].shape == "star" and shown[1][2].endswith("zero-shot: heart · fine-tuned: star")


def test_two_rejections_agree_whatever_word_explains_them(tmp_path) -> None:
    def answer(model: str, images, vocabulary: str):
        word = "texture" if model == "zero-shot" else "clutter"
        return [{"accepted": False, "label": "unknown", "nearest_negative": word} for _ in images]

    shown = answered_examples(answer, ["zero-shot", "ckpt"], tmp_path)
    assert shown[1][0].shape == ID_CLASSES[0]  # the first image: an agreement (both say unknown)
    assert shown[1][2].endswith("zero-shot: unknown ('texture'?) · fine-tuned: unknown ('clutter'?)")
    assert len(shown) == len(SHOWCASE) + 1  # no disagreement in the whole scan: only the agreement


def test_one_model_captions_its_answer_only(tmp_path) -> None:
    shown = answered_examples(_fake_answer([]), ["zero-shot"], tmp_path)
    assert len(shown) == len(SHOWCASE) + 1  # with one model every image "agrees": the first is shown
    assert shown[1][2].endswith("→ circle") and shown[-1][2].endswith("→ unknown ('noise'?)")


def test_clicked_file_holds_the_answered_pixels(tmp_path) -> None:
    from croft_core.data.images import load_image

    (path,) = showcase.render_showcase(tmp_path, [SHOWCASE[-1]])
    assert load_image(path).tobytes() == showcase.shown_image(SHOWCASE[-1]).tobytes()


def test_caption_of_a_rejection_names_the_nearest_word() -> None:
    example = Example("noise", "none", "shapes", "not a shape at all")
    result = {"accepted": False, "label": "unknown", "nearest_negative": "static"}
    assert example_caption(example, {"zero-shot": result}) == "not a shape at all → unknown ('static'?)"
    with pytest.raises(KeyError):
        example_caption(example, {"zero-shot": {"accepted": True}})
