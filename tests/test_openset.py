"""The app's open-set decision (croft_app.service.decision) and the embedded model's word list."""

from __future__ import annotations

import pytest
import torch

from croft_app.service import vocabulary
from croft_core.data.synth import world


def test_embedded_words_read_the_world_lexicon(monkeypatch):
    """Words the caption generator uses to name things come from world.lexicon() (MISNAMES is gone)."""
    monkeypatch.setattr(world, "lexicon", lambda: ("circle", "zorbling thing"))
    vocabulary.embedded_words.cache_clear()
    try:
        words = vocabulary.embedded_words()
        assert {"zorbling", "thing", "circle", "photo"} <= words
    finally:
        vocabulary.embedded_words.cache_clear()


# ---------------------------------------------------------------------------------------------
# the rule that decides
# ---------------------------------------------------------------------------------------------

from croft_app.service.decision import (RULE_CALIBRATED, RULE_NEGATIVES, RULE_NONE, RULE_USER,  # noqa: E402
                                NegativeRules, decide, negative_evidence)


def test_user_threshold_wins_and_says_why():
    v = decide("circle", 5.0, user_threshold=6.0, calibrated_threshold=1.0, neg_score=0.9,
               nearest_negative="pentagon", neg_threshold=0.01)
    assert (v.label, v.accepted, v.rule) == ("unknown", False, RULE_USER)
    assert "below your threshold 6.00" in v.reason and "'pentagon' (not in your list)" in v.reason
    assert decide("circle", 7.0, user_threshold=6.0, calibrated_threshold=None).label == "circle"


def test_calibrated_energy_before_negatives():
    v = decide("circle", 5.0, user_threshold=None, calibrated_threshold=6.0, neg_score=0.9,
               nearest_negative="star", neg_threshold=0.01)
    assert (v.label, v.rule, v.neg_score) == ("unknown", RULE_CALIBRATED, 0.9)
    assert "calibrated threshold" in v.reason


def test_negative_labels_decide_other_vocabularies():
    v = decide("horse", 20.0, user_threshold=None, calibrated_threshold=None, neg_score=0.001,
               nearest_negative="circle", neg_threshold=0.01)
    assert (v.label, v.accepted, v.rule) == ("unknown", False, RULE_NEGATIVES)
    assert "closest known word is 'circle' (not in your list)" in v.reason
    ok = decide("horse", 20.0, user_threshold=None, calibrated_threshold=None, neg_score=0.5,
                nearest_negative="circle", neg_threshold=0.01)
    assert (ok.label, ok.accepted, ok.reason) == ("horse", True, "")


def test_no_rule_is_a_closed_set_answer_that_says_so():
    v = decide("horse", 20.0, user_threshold=None, calibrated_threshold=None, unavailable="loading 40%")
    assert (v.label, v.accepted, v.rule) == ("horse", True, RULE_NONE)
    assert "closed-set" in v.reason and "loading 40%" in v.reason


WORDS = ["pentagon", "violin", "glacier", "teapot", "dog", "bicycle", "comet", "lantern", "orchid", "anvil",
         "kayak", "volcano", "harp", "sparrow", "tractor", "meteor", "saddle", "trumpet", "iceberg", "cat"]


@pytest.fixture(scope="module")
def lexicon_backbone(tmp_path_factory):
    from conftest import write_tiny_model
    from croft_core.clip.backbones import load_backbone
    from croft_core.ood.negatives import LEXICON_FILE

    folder = tmp_path_factory.mktemp("openset_model") / "model"
    spec = write_tiny_model(folder, seed=5)
    (folder / LEXICON_FILE).write_text("\n".join(WORDS) + "\n")
    return load_backbone(spec)


def test_negatives_memoized_per_model_and_vocabulary(lexicon_backbone, tmp_path):
    from croft_app.service.classifier import OpenSetClassifier

    calls = []

    def fit(*args, **kwargs):
        from croft_core.ood.negatives import NegativeLabels
        calls.append(args[1])
        return NegativeLabels.fit(*args, **kwargs)

    rules = NegativeRules(lexicon_backbone, tmp_path, fit=fit)
    assert rules.status.ready  # 20 words: encoded in the request
    a = rules.get("zero-shot", ["cat", "house"])
    assert rules.get("zero-shot", ["cat", "house"]) is a and len(calls) == 1
    assert "cat" in a.removed  # a vocabulary word colliding with the lexicon is reported
    rules.get("zero-shot", ["dog", "house"])
    rules.get("other", ["cat", "house"])
    assert len(calls) == 3
    classifier = OpenSetClassifier(lexicon_backbone, cache_dir=None)
    feats = torch.randn(2, lexicon_backbone.embed_dim)
    scores, words = negative_evidence(classifier.model, a, feats, classifier.text_features(["cat", "house"]))
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores) and set(words) <= set(a.words)


def test_large_lexicon_encodes_in_background_and_reports_progress(lexicon_backbone, tmp_path, monkeypatch):
    import threading
    from croft_app.service import decision as openset
    gate = threading.Event()

    def slow_encode(backbone, lexicon, cache_dir=None, progress=None):
        progress(10, 20)
        gate.wait(10)
        progress(20, 20)

    monkeypatch.setattr(openset, "encode_lexicon", slow_encode)
    rules = NegativeRules(lexicon_backbone, tmp_path, background=True)
    assert not rules.status.ready
    assert rules.get("zero-shot", ["circle", "square"]) is None  # starts the thread, does not wait
    for _ in range(100):
        if rules.status.done == 10:
            break
        threading.Event().wait(0.01)
    assert "50% of 20 words" in rules.status.describe()
    gate.set()
    rules._thread.join(5)
    assert rules.status.ready
    assert rules.get("zero-shot", ["circle", "square"]) is not None


def test_missing_lexicon_is_reported_not_raised(lexicon_backbone, tmp_path, monkeypatch):
    from croft_app.service import decision as openset
    def missing(_):
        raise openset.LexiconError("no lexicon for negative labels")

    monkeypatch.setattr(openset, "lexicon_path", missing)
    rules = NegativeRules(lexicon_backbone, tmp_path)
    assert rules.get("zero-shot", ["a", "b"]) is None
    assert "unavailable: no lexicon" in rules.status.describe()
