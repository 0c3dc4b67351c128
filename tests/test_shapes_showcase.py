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
    assert captions[1] == f"square, {showcase.HELDOUT_STYLE} (held-out style)\nzero-shot: circle\nfine-tuned: square"
    assert captions[2].endswith("\nzero-shot: circle\nfine-tuned: circle")
    assert captions[-1] == "not a shape at all\nzero-shot: unknown ('noise'?)\nfine-tuned: unknown ('noise'?)"
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
    assert shown[1][0].shape == "star" and shown[1][2].endswith("\nzero-shot: heart\nfine-tuned: star")


def test_two_rejections_agree_whatever_word_explains_them(tmp_path) -> None:
    def answer(model: str, images, vocabulary: str):
        word = "texture" if model == "zero-shot" else "clutter"
        return [{"accepted": False, "label": "unknown", "nearest_negative": word} for _ in images]

    shown = answered_examples(answer, ["zero-shot", "ckpt"], tmp_path)
    assert shown[1][0].shape == ID_CLASSES[0]  # the first image: an agreement (both say unknown)
    assert shown[1][2].endswith("\nzero-shot: unknown ('texture'?)\nfine-tuned: unknown ('clutter'?)")
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


def test_captions_name_the_models_as_told(tmp_path) -> None:
    shown = answered_examples(_fake_answer([]), ["zero-shot", "CRoFT · shapes"], tmp_path,
                              short={"CRoFT · shapes": "CRoFT"})
    assert shown[1][2].endswith("\nzero-shot: circle\nCRoFT: square")


def _folder(tmp_path, model_metrics, zero_shot_metrics):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"metrics": model_metrics}))
    if zero_shot_metrics is not None:
        (tmp_path / showcase.ZERO_SHOT_RESULTS).write_text(json.dumps({"metrics": zero_shot_metrics}))
    return tmp_path


def test_heldout_numbers_come_from_the_checkpoint_folder() -> None:
    import json

    from croft_core.data.synth import EMBEDDED_CHECKPOINT

    card = json.loads((EMBEDDED_CHECKPOINT / "config.json").read_text())["metrics"]
    zero_shot = json.loads((EMBEDDED_CHECKPOINT / showcase.ZERO_SHOT_RESULTS).read_text())["metrics"]
    numbers = showcase.heldout_numbers(EMBEDDED_CHECKPOINT)
    assert numbers == showcase.HeldoutNumbers("painting", card["accuracy/painting"], zero_shot["accuracy/painting"])
    assert zero_shot["id_accuracy"] != card["id_accuracy"]  # two evaluations, not one copied


def test_context_line_puts_each_number_beside_its_model(tmp_path) -> None:
    numbers = showcase.heldout_numbers(_folder(tmp_path, {"id_accuracy": 0.9, "accuracy/sketch": 0.5},
                                               {"id_accuracy": 0.7, "accuracy/sketch": 0.25}))
    assert numbers == showcase.HeldoutNumbers("sketch", 0.5, 0.25)
    line = showcase.context_line(numbers)
    assert line.startswith("On sketches (never seen in fine-tuning)")
    assert "CRoFT is right 50.0% of the time, zero-shot 25.0%" in line


@pytest.mark.parametrize("model, zero_shot", [
    ({"accuracy/painting": 0.5}, None),  # no zero-shot results in the folder
    ({"accuracy/painting": 0.5}, {"accuracy/sketch": 0.4}),  # another style
    ({"accuracy/painting": 0.5, "accuracy/sketch": 0.4}, {"accuracy/painting": 0.5, "accuracy/sketch": 0.4}),
    ({"id_accuracy": 0.9}, {"id_accuracy": 0.8}),  # no held-out style
])
def test_no_context_line_without_one_held_out_style_in_both(tmp_path, model, zero_shot) -> None:
    assert showcase.heldout_numbers(_folder(tmp_path, model, zero_shot)) is None


def test_a_broken_results_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="not an accuracy"):
        showcase.heldout_numbers(_folder(tmp_path, {"accuracy/painting": 48.7}, {"accuracy/painting": 0.4}))
    _folder(tmp_path, {"accuracy/painting": 0.487}, None)
    (tmp_path / showcase.ZERO_SHOT_RESULTS).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        showcase.heldout_numbers(tmp_path)
