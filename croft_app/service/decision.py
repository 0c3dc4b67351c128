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

The rendered reference of the embedded world (photos of the vocabulary's shapes, scored by the
classifier) is drawn on the plot but never decides: 20 rendered photos per class are a thin
calibration set, and the negative labels are the better rule there. This is the one statement of
the threshold policy; :func:`decide_batch` applies it.

**Compare** (two models on one image) must not put a calibrated-energy verdict beside a
negative-label one: it asks :func:`decide_batch` for one rule for both (:data:`SHARED_RULES`), the
negative labels by default, the visitor's energy threshold, or, when the visitor picks it, each
model's own rule as above; :func:`rule_statement` says under the result which rule decided.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone
from croft_core.runs.evaluate import negative_label_scores, text_map
from croft_core.ood.negatives import (LexiconError, NegativeLabels, encode_lexicon, lexicon_path,
                                     load_lexicon_embeddings, read_lexicon)

logger = logging.getLogger(__name__)

__all__ = ["RULE_AUTOMATIC", "RULE_CALIBRATED", "RULE_NEGATIVES", "RULE_NONE", "RULE_USER", "SHARED_RULES",
           "LexiconStatus", "NegativeRules", "Verdict", "decide", "rule_statement"]

RULE_USER = "user threshold"
RULE_CALIBRATED = "energy (calibrated)"
RULE_NEGATIVES = "negative labels"
RULE_NONE = "none"  # no open-set rule available (yet): the answer is closed-set
RULE_AUTOMATIC = "automatic"  # each model's own: the first of the rules above that applies (Classify)
SHARED_RULES = (RULE_NEGATIVES, RULE_USER, RULE_AUTOMATIC)
"""What Compare may ask for, its default first: two models' "unknown" come from the same kind of
rule unless the visitor picks each model's own (:func:`rule_statement` says which under the result)."""
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

    An image the calibrated energy threshold accepts is still rejected when the negative labels
    reject it (issue 19): the energy is calibrated on the model's classes only and accepts images that
    are no class at all (noise, blank canvases) as confidently as its classes; a typed threshold is
    the visitor's own choice and is applied alone.

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
    negatives_reject = neg_score is not None and neg_threshold is not None and neg_score < neg_threshold
    for rule, threshold in ((RULE_USER, user_threshold), (RULE_CALIBRATED, calibrated_threshold)):
        if threshold is not None:
            if energy >= threshold and rule == RULE_CALIBRATED and negatives_reject:
                break  # a calibrated accept still needs the negatives' consent (noise is not a shape)
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
        shipped: the lexicon's embeddings computed ahead (``save_lexicon_embeddings``, written by
            ``spaces/deploy.py`` into a Space bundle); used when they fit this backbone, so the
            rule answers from the first request after a restart.
    """

    def __init__(self, backbone: Backbone, cache_dir: str | Path | None = DEFAULT_CACHE_DIR, *,
                 background: bool | None = None, fit: Callable[..., NegativeLabels] = NegativeLabels.fit,
                 shipped: str | Path | None = None):
        self.backbone, self.cache_dir, self._fit = backbone, cache_dir, fit
        self._embeddings: torch.Tensor | None = None
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
        if shipped is not None:
            self._embeddings = load_lexicon_embeddings(backbone, self._lexicon, shipped)
        self._background = size > SYNC_LEXICON_WORDS if background is None else background
        self._background = self._background and self._embeddings is None
        self._status = LexiconStatus(ready=not self._background, done=size if self._embeddings is not None else 0,
                                     total=size)

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
        shipped = {} if self._embeddings is None else {"lexicon_embeddings": self._embeddings}
        negs = self._fit(self.backbone, list(classes), text_map, lexicon=self._lexicon,
                         cache_dir=self.cache_dir, **shipped)
        with self._lock:
            self._memo[key] = negs
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return negs


@torch.inference_mode()
def negative_evidence(model: Any, negatives: NegativeLabels, features: torch.Tensor,
                      text_features: torch.Tensor) -> tuple[list[float], list[str]]:
    """Negative-label scores and nearest negative words of raw image features ``[N, d]``.

    The score is the library's (:func:`croft_core.runs.evaluate.negative_label_scores`, the path
    ``evaluate`` takes): the head's embedded image, its own class cosines over the text features
    the classifier classified with, the negatives through its text map.

    Args:
        model: the head (:class:`~croft_core.heads.checkpoint.CroftModel`).
        negatives: from :meth:`NegativeRules.get` for the same head.
        features: ``[N, d]`` raw image features.
        text_features: ``[K, d]`` the vocabulary's text features (``Scored.text_features``).

    Returns:
        ``(scores, words)``, one of each per image.
    """
    features = features.float().to(text_features.device)
    scores, nearest = negative_label_scores(model, features, text_features, negatives)
    return [float(s) for s in scores], [negatives.words[int(i)] for i in nearest]


def _text_map(classifier: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return None if classifier.model.config.head == "zeroshot" else text_map(classifier.model)


def _negatives(rules: NegativeRules | None, classifier: Any, classes: Sequence[str]) -> NegativeLabels | None:
    if rules is None:
        return None
    return rules.get((classifier.name, id(classifier.model)), classes, _text_map(classifier))


@dataclass(frozen=True)
class PlotReference:
    """The ID reference a score plot draws, for one (model, vocabulary): energies and, where the
    images are rendered (embedded world), their negative-label scores too."""

    energies: np.ndarray | None
    neg_scores: np.ndarray | None
    source: str  # "checkpoint", "rendered" or "none" (see OpenSetClassifier.reference)


@dataclass(frozen=True)
class Decisions:
    """A batch decided: one ``/classify`` result per image, and the reference for its plot. The
    explanation and the plot are pure functions of this object (:mod:`croft_app.service.explain`)."""

    results: list[dict[str, Any]]
    reference: PlotReference


def _neg_reference(negs: NegativeLabels | None, model: Any, features: torch.Tensor | None,
                   text_features: torch.Tensor) -> np.ndarray | None:
    """Negative-label scores of the rendered reference images (None without both)."""
    if negs is None or features is None:
        return None
    return np.asarray(negative_evidence(model, negs, features, text_features)[0])


def _result(pred: Any, verdict: Verdict, negs: NegativeLabels | None) -> dict[str, Any]:
    d = asdict(pred)
    d.update(label=verdict.label, accepted=verdict.accepted, rule=verdict.rule, reason=verdict.reason,
             nearest_negative=verdict.nearest_negative, neg_score=verdict.neg_score,
             neg_threshold=negs.threshold if negs is not None else None)
    if verdict.rule in (RULE_NEGATIVES, RULE_NONE):
        d.update(threshold=None, threshold_source=verdict.rule)
        d["notes"] = [n for n in d["notes"] if "threshold" not in n]
    if negs is not None and negs.removed:
        d["notes"].append(f"{', '.join(negs.removed)}: one of your classes, so taken off the list of other "
                          f"words used for 'unknown'")
    return d


def _rule_thresholds(rule: str, user: float | None, ref: Any) -> tuple[float | None, float | None]:
    """``(user threshold, calibrated threshold)`` that :func:`decide` may use under ``rule``.

    Raises:
        ValueError: an unknown rule, or the user rule without a threshold.
    """
    if rule not in SHARED_RULES:
        shown = repr(rule) if isinstance(rule, str) and len(rule) <= 40 else "given"  # never echo a large value
        raise ValueError(f"unknown rule {shown}; choose one of: {', '.join(SHARED_RULES)}")
    if rule == RULE_USER and user is None:
        raise ValueError("the rule 'your energy threshold' needs a threshold: type one (an energy score "
                         "such as 8.5), or choose the negative labels")
    if rule == RULE_NEGATIVES:
        return None, None
    return user, (ref.threshold if rule == RULE_AUTOMATIC and ref.source == "checkpoint" else None)


def rule_statement(rule: str, results: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """One sentence under a comparison: which rule decided each model's "unknown", and whether the
    verdicts are comparable (the same kind of rule for every model)."""
    used = [r["rule"] for r in results]
    if len(set(used)) > 1:  # read from the verdicts themselves, whatever was asked
        each = "; ".join(f"{n}: {u}" for n, u in zip(names, used))
        return (f"**Rule: each model's own** ({each}). These are different kinds of rule, so the verdicts "
                f"are not directly comparable; choose one rule for both to compare them.")
    if used and used[0] == RULE_NONE:
        return f"**Rule: none available yet** for either model: closed-set answers ({results[0]['reason']})."
    kind = {RULE_NEGATIVES: "the negative labels: a model accepts an image when its word-list score is at or "
                            f"above {results[0].get('neg_threshold')}",
            RULE_USER: f"your energy threshold {results[0].get('threshold')} for both models",
            RULE_CALIBRATED: "each model's energy threshold calibrated on these classes"}.get(used[0], used[0])
    return f"**Rule: the same for both models**, {kind}."


@torch.inference_mode()
def decide_batch(classifier: Any, rules: NegativeRules | None, images: Sequence[Any], classes: Sequence[str],
                 threshold: Any = None, top_k: int = 5, rule: str = "automatic") -> Decisions:
    """Images against a vocabulary, decided: the classifier runs once, then the rule for each image.

    With ``rule="automatic"`` (Classify) the rule of each image is the first of this module's
    rules that applies (its docstring is the one statement of the threshold policy); Compare asks
    for one rule for both models (:data:`SHARED_RULES`): ``"negative labels"`` only, or
    ``"user threshold"`` only.

    Args:
        classifier: a :class:`~croft_app.service.classifier.OpenSetClassifier`.
        rules: the app's :class:`NegativeRules` (None: no negative labels).
        images: RGB PIL images.
        classes: the vocabulary (raw names; cleaned by the classifier).
        threshold: a user energy threshold (number or text), or None / blank.
        top_k: classes in ``probabilities``.
        rule: one of :data:`SHARED_RULES`.

    Returns:
        :class:`Decisions`: per image the :class:`~croft_app.service.classifier.Prediction` keys
        (``label``, ``accepted``, ``threshold`` and ``threshold_source`` follow the rule that decided)
        plus ``rule``, ``reason``, ``nearest_negative``, ``neg_score``, ``neg_threshold``.
    """
    scored = classifier.run(images, classes, None if rule == RULE_NEGATIVES else threshold, top_k)
    ref = scored.reference
    user, calibrated = _rule_thresholds(rule, scored.user_threshold, ref)
    negs = _negatives(rules, classifier, scored.classes)  # also explains an energy rejection
    scores, words = (negative_evidence(classifier.model, negs, scored.features, scored.text_features)
                     if negs is not None else ([], []))
    unavailable = rules.status.describe() if rules is not None else "no word list for 'unknown'"
    results = []
    for i, pred in enumerate(scored.predictions):
        verdict = decide(pred.predicted_class, pred.score, user_threshold=user,
                         calibrated_threshold=calibrated,
                         neg_score=scores[i] if negs is not None else None,
                         nearest_negative=words[i] if negs is not None else None,
                         neg_threshold=negs.threshold if negs is not None else None, unavailable=unavailable)
        results.append(_result(pred, verdict, negs))
    neg_ref = _neg_reference(negs, classifier.model, scored.rendered_features, scored.text_features)
    return Decisions(results, PlotReference(ref.scores, neg_ref, ref.source))


def classify_open(classifier: Any, rules: NegativeRules | None, images: Sequence[Any], classes: Sequence[str],
                  threshold: Any = None, top_k: int = 5) -> list[dict[str, Any]]:
    """The ``/classify`` results of :func:`decide_batch` (without the plot reference)."""
    return decide_batch(classifier, rules, images, classes, threshold, top_k).results


@torch.inference_mode()
def plot_reference(classifier: Any, rules: NegativeRules | None, classes: Sequence[str]) -> PlotReference:
    """The plot reference of a (model, vocabulary) alone, for a result that came back from the
    browser (the classifier's reference and the negatives are cached, so this recomputes nothing)."""
    classes = classifier.prepare_vocabulary(classes)[0]
    ref = classifier.reference(classes)
    negs = _negatives(rules, classifier, classes) if rules is not None and rules.status.ready else None
    rendered = classifier.rendered_features(classes) if ref.source == "rendered" else None
    text = classifier.text_features(classes) if negs is not None and rendered is not None else None
    return PlotReference(ref.scores, _neg_reference(negs, classifier.model, rendered, text), ref.source)
