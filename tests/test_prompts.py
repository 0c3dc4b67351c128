"""Template sets and vocabulary parsing."""

from __future__ import annotations

import pytest

from croft_core.clip.prompts import (CROFT_IMAGENET_TEMPLATES, get_templates, get_vocabulary,
                                list_vocabularies, parse_vocabulary)


def test_template_sets():
    assert get_templates("single") == ("a photo of a {}.",)
    assert get_templates("croft7") == CROFT_IMAGENET_TEMPLATES and len(CROFT_IMAGENET_TEMPLATES) == 7
    assert len(get_templates("openai80")) == 80
    assert get_templates("a sketch of a {}.") == ("a sketch of a {}.",)
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("nope")


def test_parse_vocabulary_dedupes_and_reports():
    classes, notes = parse_vocabulary("cat, Dog\n\n  dog ,  big   bird,cat,")
    assert classes == ["cat", "Dog", "big bird"]
    assert notes == ["removed 2 duplicate(s): dog, cat", "ignored 2 blank entries"]


def test_vocabulary_presets():
    assert {"cifar10", "cifar100", "imagenet1k", "pacs", "vlcs", "shapes"} <= set(list_vocabularies())
    assert len(get_vocabulary("cifar100")) == 100 and len(get_vocabulary("imagenet1k")) == 1000
    assert get_vocabulary("pacs")[0] == "dog"
    with pytest.raises(ValueError, match="unknown vocabulary preset"):
        get_vocabulary("nope")
