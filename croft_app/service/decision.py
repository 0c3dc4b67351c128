"""The app's open-set decision: which rule says "unknown", and why, in words.

Three rules, chosen per request (issue 10; DESIGN.md "/classify"):

- ``"user threshold"``: the visitor typed an energy threshold; accept when ``energy >= threshold``.
- ``"energy (calibrated)"``: a checkpoint's calibrated energy threshold, used **only** for the
  vocabulary it was calibrated on (its own training classes). The energy is a logsumexp over the K
  classes and moves with the vocabulary, so it is never carried to another one.
- ``"negative labels"``: any other vocabulary. :class:`~croft_core.ood.negatives.NegativeLabels` mined
  for this (model, vocabulary) decide with their fixed threshold, and the nearest negative word
  explains a rejection ("closest known word: 'pentagon' (not in your list)").

While a large lexicon (a real CLIP's ~20k words) is still being encoded in the background, the
negative-label rule is not available yet: the decision is then closed-set, rule ``"none"``, and
the reason says so (with the encoding's progress). :class:`NegativeRules` memoizes the negatives
per (model, vocabulary) and owns that background encoding.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone
from croft_core.ood.negatives import LexiconError, NegativeLabels, encode_lexicon, lexicon_path, read_lexicon

logger = logging.getLogger(__name__)

__all__ = ["RULE_CALIBRATED", "RULE_NEGATIVES", "RULE_NONE", "RULE_USER", "LexiconStatus",
           "NegativeRules", "Verdict", "decide"]

RULE_USER = "user threshold"
RULE_CALIBRATED = "energy (calibrated)"
RULE_NEGATIVES = "negative labels"
RULE_NONE = "none"  # no open-set rule available (yet): the answer is closed-set
SYNC_LEXICON_WORDS = 2048  # a lexicon up to this size is encoded in the request (one cache chunk)
MEMO_SIZE = 32  # (model, vocabulary) negatives kept in memory


@dataclass(frozen=True)
class LexiconStatus:
    """Where the lexicon encoding stands: ``ready``, ``done``/``total`` words, or an ``error``."""

    ready: bool
    done: int = 0
    total: int = 0
    error: str | None = None

    def describe(self) -> str:
        """A sentence for a visitor."""
        if self.error:
            return f"negative labels are unavailable: {self.error}"
        if self.ready:
            return "negative labels ready"
        share = self.done / self.total if self.total else 0.0
        return f"the word list for 'unknown' is still loading ({share:.0%} of {self.total} words)"


@dataclass(frozen=True)
class Verdict:
    """One image's open-set decision.

    Attributes:
        label: the class, or ``"unknown"``.
        accepted: the rule accepted the image (True for a closed-set answer).
        rule: one of ``RULE_*``.
        reason: why, in words (empty when accepted by a clear margin).
        nearest_negative: the negative word closest to the image, or None.
        neg_score: the negative-label score in (0, 1), or None.
    """

    label: str
    accepted: bool
    rule: str
    reason: str
    nearest_negative: str | None = None
    neg_score: float | None = None


def decide(predicted: str, energy: float, *, user_threshold: float | None,
           calibrated_threshold: float | None, neg_score: float | None = None,
           nearest_negative: str | None = None, neg_threshold: float | None = None,
           unavailable: str = "no open-set rule is available for this model and vocabulary") -> Verdict:
    """Apply the first rule that applies (user threshold, calibrated energy, negative labels).

    Args:
        predicted: the closed-set argmax class.
        energy: the image's energy score.
        user_threshold: a threshold the visitor typed, or None.
        calibrated_threshold: an energy threshold calibrated on **this** vocabulary, or None.
        neg_score, nearest_negative, neg_threshold: the negative-label score, nearest negative word
            and the acceptance threshold, or None when no negatives are available.
        unavailable: the reason given for a closed-set answer.

    Returns:
        A :class:`Verdict`.
    """
    extra = dict(nearest_negative=nearest_negative, neg_score=neg_score)
    word = f"; the closest known word is '{nearest_negative}' (not in your list)" if nearest_negative else ""
    for rule, threshold in ((RULE_USER, user_threshold), (RULE_CALIBRATED, calibrated_threshold)):
        if threshold is not None:
            if energy >= threshold:
                return Verdict(predicted, True, rule, "", **extra)
            why = "your threshold" if rule == RULE_USER else "the calibrated threshold"
            return Verdict("unknown", False, rule, f"its energy {energy:.2f} is below {why} "
                                                    f"{threshold:.2f}{word}", **extra)
    if neg_score is not None and neg_threshold is not None:
        if neg_score >= neg_threshold:
            return Verdict(predicted, True, RULE_NEGATIVES, "", **extra)
        return Verdict("unknown", False, RULE_NEGATIVES,
                       f"it looks more like a word not in your list than like any of your classes"
                       f"{word}", **extra)
    return Verdict(predicted, True, RULE_NONE, f"closed-set answer: {unavailable}", **extra)


class NegativeRules:
    """Negative labels per (model, vocabulary), memoized; a large lexicon is encoded in the background.

    Args:
        backbone: the frozen backbone (its lexicon is :func:`~croft_core.ood.negatives.lexicon_path`).
        cache_dir: text cache root (the lexicon's embeddings are cached on disk).
        background: encode the lexicon in a thread (None: when it has more than
            :data:`SYNC_LEXICON_WORDS` words).
        fit: the fitting function (``NegativeLabels.fit``; tests pass a slow stand-in).
    """

    def __init__(self, backbone: Backbone, cache_dir: str | Path | None = DEFAULT_CACHE_DIR, *,
                 background: bool | None = None, fit: Callable[..., NegativeLabels] = NegativeLabels.fit):
        self.backbone, self.cache_dir, self._fit = backbone, cache_dir, fit
        self._memo: OrderedDict[tuple, NegativeLabels] = OrderedDict()
        self._lock = threading.Lock()
        self._status = LexiconStatus(ready=False)
        self._thread: threading.Thread | None = None
        try:
            self._lexicon = read_lexicon(lexicon_path(backbone))
        except (LexiconError, OSError) as err:
            self._lexicon = None
            self._status = LexiconStatus(ready=False, error=str(err))
            return
        size = len(self._lexicon)
        self._background = size > SYNC_LEXICON_WORDS if background is None else background
        self._status = LexiconStatus(ready=not self._background, total=size)

    def start(self) -> None:
        """Start encoding the lexicon in a daemon thread (no-op when not needed or started)."""
        if self._lexicon is None or self._status.ready or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._encode, name="croft-lexicon", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        total = len(self._lexicon)

        def report(done: int, _total: int) -> None:
            self._status = LexiconStatus(ready=False, done=done, total=total)

        try:
            with torch.inference_mode():
                encode_lexicon(self.backbone, self._lexicon, cache_dir=self.cache_dir, progress=report)
            self._status = LexiconStatus(ready=True, done=total, total=total)
        except Exception as err:  # noqa: BLE001 - a background thread must report, not die silently
            logger.exception("encoding the negative-label lexicon failed")
            self._status = LexiconStatus(ready=False, done=0, total=total, error=f"{type(err).__name__}: {err}")

    @property
    def status(self) -> LexiconStatus:
        """The lexicon's encoding status."""
        return self._status

    def get(self, model_key: Any, classes: Sequence[str],
            text_map: Callable[[torch.Tensor], torch.Tensor] | None = None) -> NegativeLabels | None:
        """The negatives of this (model, vocabulary), or None while the lexicon is not ready.

        Args:
            model_key: identifies the head (its text map); the same key must mean the same map.
            classes: the cleaned vocabulary.
            text_map: the head's text map (``croft_core.runs.evaluate.text_map(model)``; None = zero-shot).

        Raises:
            LexiconError: the vocabulary leaves too few negative words.
        """
        if not self._status.ready:
            self.start()
            return None
        key = (model_key, tuple(classes))
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        negs = self._fit(self.backbone, list(classes), text_map, lexicon=self._lexicon,
                         cache_dir=self.cache_dir)
        with self._lock:
            self._memo[key] = negs
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return negs


@torch.inference_mode()
def negative_evidence(model: Any, negatives: NegativeLabels,
                      features: torch.Tensor) -> tuple[list[float], list[str]]:
    """Negative-label scores and nearest negative words of raw image features ``[N, d]``.

    Args:
        model: the head (:class:`~croft_core.heads.checkpoint.CroftModel`; ``embed_image`` maps raw features
            into the space of its text map).
        negatives: from :meth:`NegativeRules.get` for the same head.
        features: ``[N, d]`` raw image features.

    Returns:
        ``(scores, words)``, one of each per image.
    """
    scores, nearest = negatives.score(model.embed_image(features.float()))
    return [float(s) for s in scores], [negatives.words[int(i)] for i in nearest]


def _text_map(classifier: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    from croft_core.runs.evaluate import text_map

    return None if classifier.is_zero_shot else text_map(classifier.model)


def _negatives(rules: NegativeRules | None, classifier: Any, classes: Sequence[str]) -> NegativeLabels | None:
    if rules is None:
        return None
    return rules.get((classifier.name, id(classifier.model)), classes, _text_map(classifier))


@torch.inference_mode()
def classify_open(classifier: Any, rules: NegativeRules | None, images: Sequence[Any], classes: Sequence[str],
                  threshold: Any = None, top_k: int = 5) -> list[dict[str, Any]]:
    """``/classify`` results of images: the energy prediction plus the open-set rule that decided.

    Args:
        classifier: a :class:`~croft_app.service.classifier.OpenSetClassifier`.
        rules: the app's :class:`NegativeRules` (None: no negative labels).
        images: RGB PIL images.
        classes: the vocabulary (raw names; cleaned by the classifier).
        threshold: a user energy threshold (number or text), or None / blank.
        top_k: classes in ``probabilities``.

    Returns:
        One dict per image: the :class:`~croft_app.service.classifier.Prediction` keys (``label``,
        ``accepted``, ``threshold`` and ``threshold_source`` follow the rule that decided) plus
        ``rule``, ``reason``, ``nearest_negative``, ``neg_score``, ``neg_threshold``.
    """
    from croft_app.service.classifier import check_threshold

    user = check_threshold(threshold)
    classes, _, _ = classifier.prepare_vocabulary(classes)
    features = classifier.encode(images)
    ref = classifier.reference(classes)
    calibrated = ref.threshold if ref.source == "checkpoint" else None  # never across vocabularies
    predictions = classifier.classify([], classes, user, top_k, features=features)
    negs = _negatives(rules, classifier, classes)  # also explains an energy rejection
    scores, words = negative_evidence(classifier.model, negs, features) if negs is not None else ([], [])
    unavailable = rules.status.describe() if rules is not None else "no word list for 'unknown'"
    out = []
    for i, pred in enumerate(predictions):
        verdict = decide(pred.predicted_class, pred.score, user_threshold=user, calibrated_threshold=calibrated,
                         neg_score=scores[i] if negs is not None else None,
                         nearest_negative=words[i] if negs is not None else None,
                         neg_threshold=negs.threshold if negs is not None else None, unavailable=unavailable)
        d = pred.to_dict()
        d.update(label=verdict.label, accepted=verdict.accepted, rule=verdict.rule, reason=verdict.reason,
                 nearest_negative=verdict.nearest_negative, neg_score=verdict.neg_score,
                 neg_threshold=negs.threshold if negs is not None else None)
        if verdict.rule in (RULE_NEGATIVES, RULE_NONE):
            d.update(threshold=None, threshold_source=verdict.rule)
            d["notes"] = [n for n in d["notes"] if "threshold" not in n]
        if negs is not None and negs.removed:
            d["notes"].append(f"{', '.join(negs.removed)}: one of your classes, so taken off the list of other "
                              f"words used for 'unknown'")
        out.append(d)
    return out


def reference_neg_scores(classifier: Any, rules: NegativeRules | None, classes: Sequence[str]) -> Any:
    """Negative-label scores of the rendered ID reference images (embedded world), or None."""
    negs = _negatives(rules, classifier, classes) if rules is not None and rules.status.ready else None
    if negs is None or not classifier.embedded_world:
        return None
    rendered = classifier._rendered_reference()
    if not rendered.covers(classes):
        return None
    import numpy as np

    return np.asarray(negative_evidence(classifier.model, negs, rendered.features(classes))[0])
