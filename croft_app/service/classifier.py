"""Open-set classification of images with a frozen CLIP and a CRoFT (or baseline, or zero-shot) head.

This is what the app serves: images in, for each image the closed-set prediction *and* the decision
to accept it or call it ``"unknown"``, with CRoFT's energy score
``S(x) = logsumexp_k(tau * cos(z_img, z_text_k))`` (higher = more in-distribution) compared with a
threshold.

Where the threshold comes from (:meth:`OpenSetClassifier.reference`, in this order):

1. **the checkpoint** — ``config.threshold`` (the energy at 95% ID TPR on the training benchmark's
   validation split) and ``config.id_scores``, when the vocabulary is the checkpoint's own classes;
2. **rendered reference images** — for a backbone trained on the embedded shapes world (the
   ``embedded`` backbone), when every class of the vocabulary is a shape of that world: photo-style
   images of those classes are rendered once (:data:`REFERENCE_IMAGES_PER_CLASS` per class, fixed
   seeds, a seed namespace of their own), scored against *this* vocabulary and model, and the
   threshold is fitted at 95% TPR. This is how zero-shot models get a calibrated threshold without
   rendering the whole benchmark;
3. **none** — otherwise: the prediction is closed-set (``accepted=True``) and a note asks for a
   threshold. A checkpoint's threshold is never reused for another vocabulary (CRoFT's adapters are
   class-agnostic and score any vocabulary, but an energy threshold belongs to the classes it was
   calibrated on: a larger vocabulary raises every energy).

A threshold given by the caller always wins. The app's open-set rule (which of these thresholds, or
the negative labels, decides a request) is stated once, in :mod:`croft_app.service.decision`.

A batch goes through the classifier once (:meth:`OpenSetClassifier.run`): vocabulary, text features,
image features, logits, energies, the reference; the result (:class:`Scored`) carries all of it.

Text features of a vocabulary are computed once per process (small in-memory LRU on top of the disk
cache of :func:`~croft_core.clip.backbones.build_text_classifier`).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch

from croft_core.data.benchmarks.classnames import class_key
from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone, build_text_classifier, same_backbone
from croft_core.ood.detector import ThresholdDetector
from croft_core.runs.evaluate import zeroshot_model
from croft_app.service.limits import prune_lru
from croft_core.heads.checkpoint import CroftModel
from croft_core.clip.prompts import SINGLE_TEMPLATE
from croft_core.ood.scores import energy
from croft_app.service.security import check_number, display_spec, short_repr
from croft_core.seeds import REFERENCE_STREAM
from croft_app.service.vocabulary import DEFAULT_MAX_CLASSES, check_vocabulary, unknown_words

__all__ = ["REFERENCE_IMAGES_PER_CLASS", "ZERO_SHOT", "OpenSetClassifier", "Prediction", "Reference",
           "RenderedReference", "check_threshold", "is_embedded_backbone"]

logger = logging.getLogger(__name__)

ZERO_SHOT = "zero-shot"
"""Model name of the zero-shot head (always available)."""

REFERENCE_IMAGES_PER_CLASS = 20  # rendered photo images per class for the zero-shot reference
REFERENCE_SIZE = 64  # render size of reference images (the shapes dataset's size)
CALIBRATION_TPR = 0.95


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------

def is_embedded_backbone(backbone: Backbone) -> bool:
    """True for the embedded shapes-world CLIP (``embedded`` or its ``local-dir:`` folder)."""
    return same_backbone(backbone.spec, "embedded")


# --------------------------------------------------------------------------------------------------
# Reference scores
# --------------------------------------------------------------------------------------------------

@dataclass
class Reference:
    """ID reference scores and the threshold they give for one (model, vocabulary).

    Attributes:
        scores: ``[N]`` energy scores of in-distribution images (``None`` when there are none).
        threshold: the calibrated energy threshold (accept if ``score >= threshold``), or ``None``.
        source: ``"checkpoint"`` (its own classes), ``"rendered"`` or ``"none"``.
        note: a sentence for the user about where the threshold comes from.
    """

    scores: np.ndarray | None
    threshold: float | None
    source: str
    note: str


class RenderedReference:
    """Raw image features of photo-style shapes rendered from the embedded world, per class.

    Rendered lazily, :data:`REFERENCE_IMAGES_PER_CLASS` per class with seeds derived from the class
    name, and encoded once; shared by every classifier on the same backbone. Thread-safe.

    Args:
        backbone: the frozen backbone.
        per_class: images per class.
    """

    def __init__(self, backbone: Backbone, per_class: int = REFERENCE_IMAGES_PER_CLASS):
        from croft_core.data.synth import world

        self.backbone = backbone
        self.per_class = per_class
        self._classes = {class_key(c): c for c in world.CLASSES}
        self._features: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def covers(self, classnames: Sequence[str]) -> bool:
        """True when every class name is a shape of the world (case-insensitive)."""
        return all(class_key(c) in self._classes for c in classnames)

    @torch.inference_mode()
    def features(self, classnames: Sequence[str]) -> torch.Tensor:
        """``[len(classnames) * per_class, d]`` raw features of rendered photos of the classes."""
        from croft_core.data.synth import world

        out = []
        for name in classnames:
            key = self._classes[class_key(name)]
            with self._lock:
                if key not in self._features:
                    rng = np.random.default_rng([REFERENCE_STREAM, zlib.crc32(key.encode())])
                    images = [world.render(key, "photo", rng, size=REFERENCE_SIZE)
                              for _ in range(self.per_class)]
                    pixels = torch.stack([self.backbone.preprocess(im) for im in images])
                    self._features[key] = self.backbone.encode_images(pixels)  # [per_class, d]
            out.append(self._features[key])
        return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """The open-set decision for one image.

    Attributes:
        label: the predicted class, or ``"unknown"`` when the image is rejected.
        accepted: ``score >= threshold`` (always True when there is no threshold).
        score: the energy score S(x) (higher = more in-distribution).
        threshold: the threshold used, or ``None`` (no calibration available and none given).
        probabilities: the ``top_k`` most probable classes -> softmax probability, descending.
        predicted_class: the closed-set argmax, also when the image is rejected.
        threshold_source: ``"user"``, or the :class:`Reference` source.
        notes: what the user should know (vocabulary clean-up, calibration, class-agnostic use).
        warnings: likely problems (e.g. words the embedded model never saw).
    """

    label: str
    accepted: bool
    score: float
    threshold: float | None
    probabilities: dict[str, float]
    predicted_class: str
    threshold_source: str = "none"
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``/classify`` response of the app)."""
        return asdict(self)


def check_threshold(threshold: Any) -> float | None:
    """An energy threshold as a finite float; ``None`` or blank text -> ``None`` (the calibrated one).

    Raises:
        ValueError: not a number, not finite, or too large for a float (``10**400``).
    """
    return check_number(threshold, "threshold must be a finite number (an energy score such as 12.5), or empty "
                                   f"for the calibrated threshold; got {short_repr(threshold)}")


class OpenSetClassifier:
    """A backbone plus a head: classify images against any vocabulary, reject unknowns.

    Args:
        backbone: the frozen backbone (loaded once per process).
        model: a :class:`~croft_core.heads.checkpoint.CroftModel` (CRoFT, a baseline, or zero-shot); ``None``
            builds the zero-shot model.
        name: display name (``"zero-shot"``, a folder or a Hub id).
        max_classes: the largest vocabulary accepted.
        embedded_world: the backbone was trained on the embedded shapes world, which enables the
            unknown-word warning and rendered reference images; ``None`` = auto-detect the
            ``embedded`` backbone.
        rendered: shared :class:`RenderedReference` (created on demand when ``None``).
        tpr: ID true-positive rate of calibrated thresholds.
        text_cache_size: vocabularies kept in memory.
        cache_dir: disk cache of text features (``None`` disables it).
        text_cache_bytes: keep ``cache_dir`` under this many bytes (least recently used files are
            deleted after each new vocabulary); ``None`` = unbounded. Give the classifier a folder
            of its own when bounding it.

    Raises:
        ValueError: the model was trained on another backbone, or its width does not match.
    """

    def __init__(self, backbone: Backbone, model: CroftModel | None = None, *, name: str = ZERO_SHOT,
                 max_classes: int = DEFAULT_MAX_CLASSES, embedded_world: bool | None = None,
                 rendered: RenderedReference | None = None, tpr: float = CALIBRATION_TPR,
                 text_cache_size: int = 16, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
                 text_cache_bytes: int | None = None):
        model = zeroshot_model(backbone) if model is None else model
        config = model.config
        if config.backbone and not same_backbone(config.backbone, backbone.spec):
            theirs = display_spec(str(config.backbone))[:100]
            raise ValueError(f"Model {name!r} was trained on backbone {theirs!r}, but this app runs "
                             f"{display_spec(backbone.spec)!r}; start it with CROFT_BACKBONE={theirs} "
                             f"or choose a checkpoint of this backbone.")
        if config.head != "zeroshot" and config.embed_dim != backbone.embed_dim:
            raise ValueError(f"Model {name!r} has width {config.embed_dim} but the backbone has "
                             f"{backbone.embed_dim}; it belongs to another backbone.")
        self.backbone = backbone
        self.model = model.to(backbone.device).eval()
        self.name = name
        self.max_classes = max_classes
        self.embedded_world = is_embedded_backbone(backbone) if embedded_world is None else embedded_world
        self._rendered = rendered
        self.tpr = tpr
        self.templates = tuple(config.templates) or SINGLE_TEMPLATE
        self.text_mode = config.text_mode if config.templates else "normalized"
        self.cache_dir = cache_dir
        self.text_cache_bytes = text_cache_bytes
        self._text: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._references: OrderedDict[tuple, Reference] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    # -- properties ------------------------------------------------------------------------------
    @property
    def is_zero_shot(self) -> bool:
        return self.model.config.head == "zeroshot"

    @property
    def class_agnostic(self) -> bool:
        return self.model.class_agnostic

    @property
    def training_classes(self) -> tuple[str, ...]:
        return tuple(self.model.config.classnames)

    # -- vocabulary ------------------------------------------------------------------------------
    def prepare_vocabulary(self, classnames: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
        """Validate a vocabulary for this model.

        Returns:
            ``(classes, notes, warnings)``.

        Raises:
            ValueError: see :func:`check_vocabulary`; or a class-tied checkpoint (Tip-Adapter,
                linear probe) asked for other classes than its own.
        """
        classes, notes = check_vocabulary(classnames, self.max_classes)
        warnings: list[str] = []
        trained = self.training_classes
        same = _same_set(classes, trained)
        if not self.class_agnostic and not same:
            raise ValueError(f"Model {self.name!r} ({self.model.config.head}) is tied to its "
                             f"{len(trained)} training classes ({', '.join(trained[:10])}"
                             f"{', ...' if len(trained) > 10 else ''}); use exactly these classes, or "
                             f"a class-agnostic model (CRoFT, CLIP-Adapter, zero-shot).")
        if not self.is_zero_shot and trained and not same:
            notes.append(f"adapters are class-agnostic: this checkpoint was trained on "
                         f"{len(trained)} other classes ({', '.join(trained[:10])}"
                         f"{', ...' if len(trained) > 10 else ''}) and scores this vocabulary as well")
        if self.embedded_world:
            missing = unknown_words(classes)
            if missing:
                warnings.append(f"The embedded model never saw the word(s) "
                                f"{', '.join(repr(w) for w in missing[:20])} in its training captions, "
                                f"so it cannot recognise those classes; it knows coloured shapes "
                                f"(circle, square, star, ...). Use a real CLIP backbone "
                                f"(CROFT_BACKBONE=ViT-B-16:openai) for everyday classes.")
        return classes, notes, warnings

    def _key_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _lru_get(self, cache: OrderedDict, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        with self._key_lock(key):  # one computation per key, others wait for it
            with self._lock:
                if key in cache:
                    return cache[key]
            value = compute()
            with self._lock:
                cache[key] = value
                while len(cache) > self._text_cache_size:
                    cache.popitem(last=False)
                self._key_locks.pop(key, None)
            return value

    def text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """``[K, d]`` text features of the classes with this model's templates (cached)."""
        key = ("text", tuple(classnames), self.templates, self.text_mode)
        return self._lru_get(self._text, key, lambda: self._build_text(classnames))

    def _build_text(self, classnames: Sequence[str]) -> torch.Tensor:
        text = build_text_classifier(self.backbone, list(classnames), self.templates,
                                     text_mode=self.text_mode, cache_dir=self.cache_dir)
        if self.cache_dir is not None and self.text_cache_bytes is not None:
            prune_lru(self.cache_dir, self.text_cache_bytes)
        return text.to(self.backbone.device)

    # -- scoring ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, image_features: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        """``[N, K]`` logits of raw image features ``[N, d]`` against the classes."""
        return self.model(image_features.to(self.backbone.device), self.text_features(classnames)).float()

    @torch.inference_mode()
    def encode(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """``[N, d]`` raw image features of RGB PIL images (the backbone's own preprocessing)."""
        pixels = torch.stack([self.backbone.preprocess(im) for im in images])  # [N, 3, H, W]
        return self.backbone.encode_images(pixels)

    def reference(self, classnames: Sequence[str]) -> Reference:
        """ID reference energies and the calibrated threshold for this vocabulary (cached).

        See the module docstring for the order of sources.
        """
        classes = tuple(classnames)
        return self._lru_get(self._references, ("reference", classes),
                             lambda: self._compute_reference(classes))

    def _compute_reference(self, classes: tuple[str, ...]) -> Reference:
        config = self.model.config
        stored = np.asarray(config.id_scores, dtype=np.float64) if config.id_scores else None
        if config.threshold is not None and _same_set(classes, self.training_classes):
            return Reference(stored, float(config.threshold), "checkpoint",
                             f"threshold calibrated at {config.threshold_tpr:.0%} ID TPR on the "
                             f"checkpoint's validation images")
        if self.embedded_world:
            rendered = self._rendered_reference()
            if rendered.covers(classes):
                features = rendered.features(classes)
                scores = energy(self.logits(features, classes)).cpu().numpy().astype(np.float64)
                threshold = float(ThresholdDetector(tpr=self.tpr).fit(scores).threshold_)
                return Reference(scores, threshold, "rendered",
                                 f"threshold calibrated at {self.tpr:.0%} ID TPR on {len(scores)} "
                                 f"rendered photo-style images of these classes")
        if config.threshold is not None:  # calibrated on other classes: never reused for these
            return Reference(stored, None, "none",
                             "the checkpoint's threshold was calibrated on its training classes, not on "
                             "this vocabulary, so it is not used (set a threshold to reject unknown images)")
        return Reference(None, None, "none",
                         "no calibrated threshold for this model and vocabulary: the prediction is "
                         "closed-set; set a threshold to reject unknown images")

    def _rendered_reference(self) -> RenderedReference:
        with self._lock:
            if self._rendered is None:
                self._rendered = RenderedReference(self.backbone)
            return self._rendered

    @torch.inference_mode()
    def run(self, images: Sequence[PIL.Image.Image], classnames: Sequence[str], threshold: Any = None,
            top_k: int = 5, features: torch.Tensor | None = None) -> "Scored":
        """One pass of a batch: vocabulary, text features, image features, logits, energies, reference.

        Args:
            images: RGB PIL images (see :func:`croft_core.data.images.load_image`).
            classnames: the vocabulary (raw names; cleaned and validated here).
            threshold: energy threshold (number or text); ``None`` = the calibrated one (see
                :meth:`reference`).
            top_k: classes listed in ``probabilities``.
            features: ``[N, d]`` raw features already encoded (:meth:`encode`); ``images`` may then
                be empty.

        Returns:
            A :class:`Scored` with one :class:`Prediction` per image.

        Raises:
            ValueError: a bad vocabulary, a non-finite threshold, no images, or ``top_k < 1``.
        """
        if not images and features is None:
            raise ValueError("no images to classify; upload at least one image")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        user_threshold = check_threshold(threshold)
        classes, notes, warnings = self.prepare_vocabulary(classnames)
        ref = self.reference(classes)
        if user_threshold is None:
            used, source = ref.threshold, ref.source
            notes.append(ref.note)
        else:
            used, source = user_threshold, "user"
        features = self.encode(images) if features is None else features
        logits = self.logits(features, classes)  # [N, K]
        scores = energy(logits).cpu().numpy()  # [N]
        top_p, top_i = logits.softmax(dim=-1).cpu().topk(min(top_k, len(classes)), dim=-1)  # [N, k]
        out = []
        for n in range(len(features)):
            score = float(scores[n])
            predicted = classes[int(top_i[n, 0])]
            accepted = used is None or score >= used
            out.append(Prediction(
                label=predicted if accepted else "unknown", accepted=bool(accepted), score=score,
                threshold=used, probabilities={classes[int(i)]: float(p) for p, i in zip(top_p[n], top_i[n])},
                predicted_class=predicted, threshold_source=source, notes=list(notes),
                warnings=list(warnings)))
        rendered = self.rendered_features(classes) if ref.source == "rendered" else None
        return Scored(classes, features, out, ref, user_threshold, rendered, self.text_features(classes))

    def classify(self, images: Sequence[PIL.Image.Image], classnames: Sequence[str],
                 threshold: Any = None, top_k: int = 5,
                 features: torch.Tensor | None = None) -> list[Prediction]:
        """Classify RGB images against a vocabulary and accept or reject each one (:meth:`run`)."""
        return self.run(images, classnames, threshold, top_k, features).predictions

    def rendered_features(self, classes: Sequence[str]) -> torch.Tensor | None:
        """Raw features of the rendered reference photos of ``classes`` (embedded world), or None."""
        if not self.embedded_world or not self._rendered_reference().covers(classes):
            return None
        return self._rendered_reference().features(classes)


@dataclass
class Scored:
    """A batch after one pass through :meth:`OpenSetClassifier.run`."""

    classes: list[str]  # the cleaned vocabulary
    features: torch.Tensor  # [N, d] raw image features
    predictions: list[Prediction]
    reference: Reference  # ID reference energies and threshold of this (model, vocabulary)
    user_threshold: float | None
    rendered_features: torch.Tensor | None = None  # [M, d] the rendered reference's raw features
    text_features: torch.Tensor | None = None  # [K, d] the classes' text features the logits used


def _same_set(a: Sequence[str], b: Sequence[str]) -> bool:
    return bool(b) and {class_key(x) for x in a} == {class_key(x) for x in b}


