"""Models by name for a server: ``"zero-shot"``, listed checkpoints and Hub ids, each loaded once.

The app asks :class:`ClassifierRegistry` for a model by the name a visitor chose. What a name may
be is the server's trust boundary (:mod:`croft_app.service.security`): ``"zero-shot"``, a checkpoint the
operator listed (shown and chosen by its display name, never by its path), a Hub id ``ORG/NAME``
(unless the policy turns them off; fetched without the operator's token) and, only when the policy
allows local paths, a checkpoint folder.
Every checkpoint is vetted against the backbone before its weights are allocated
(:mod:`croft_app.service.vetting`), and loaded under a lock of its own, so a slow load never blocks
requests for other models.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from croft_core.clip.backbones import Backbone
from croft_app.service.classifier import ZERO_SHOT, OpenSetClassifier, RenderedReference, is_embedded_backbone
from croft_app.service.credentials import OPERATOR, VISITOR, hub_access
from croft_app.service.security import (LOCAL_PATH_REFUSED, AccessRefused, ServingPolicy, check_text, is_hub_id)
from croft_app.service.vetting import display_name, fetch_hub_checkpoint, load_vetted, vet_checkpoint
from croft_app.service.vocabulary import DEFAULT_MAX_CLASSES

__all__ = ["DEFAULT_MAX_CHECKPOINT_BYTES", "ClassifierRegistry", "ModelEntry"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHECKPOINT_BYTES = 128 * 2**20  # ViT-L CRoFT: 7 MB; Tip-Adapter, 1000 classes x 16 shots: 49 MB
_ZERO_SHOT_ALIASES = (ZERO_SHOT, "zeroshot", "zero_shot")


@dataclass(frozen=True)
class ModelEntry:
    """A model a visitor can choose: ``name`` (what is shown), ``source`` (folder or Hub id), ``kind``;
    ``listed``: the operator's configuration names it (a Hub id is then fetched with the operator's
    token, any other with none: :mod:`croft_app.service.credentials`)."""

    name: str
    source: str
    kind: str  # "zero-shot" | "folder" | "hub"
    listed: bool = False


class ClassifierRegistry:
    """Classifiers by model name on one backbone, each loaded once.

    Args:
        backbone: the frozen backbone shared by every model.
        checkpoints: checkpoint folders or Hub ids the operator lists (shown by display name).
        policy: what else a visitor may name (Hub ids; local folders only for trusted installs).
        max_loaded: most models outside ``checkpoints`` kept in memory (LRU).
        max_checkpoint_bytes: largest ``model.safetensors`` accepted.
        **classifier_kwargs: passed to every :class:`OpenSetClassifier` (``max_classes`` ...).

    Raises:
        ValueError: a listed checkpoint that is neither a folder nor a Hub id.
    """

    def __init__(self, backbone: Backbone, checkpoints: Sequence[str] = (), *,
                 policy: ServingPolicy = ServingPolicy(), max_loaded: int = 4,
                 max_checkpoint_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES, **classifier_kwargs: Any):
        self.backbone = backbone
        self.policy = policy
        self.max_loaded = max_loaded
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self.max_classes = classifier_kwargs.get("max_classes", DEFAULT_MAX_CLASSES)
        embedded_world = classifier_kwargs.pop("embedded_world", None)
        self.embedded_world = is_embedded_backbone(backbone) if embedded_world is None else embedded_world
        self._kwargs = dict(classifier_kwargs, embedded_world=self.embedded_world)
        self.rendered = RenderedReference(backbone) if self.embedded_world else None
        self.listed = self._list(checkpoints)
        self._loaded: OrderedDict[str, OpenSetClassifier] = OrderedDict()
        self._lock = threading.Lock()
        self._model_locks: dict[str, threading.Lock] = {}

    @staticmethod
    def _list(checkpoints: Sequence[str]) -> dict[str, ModelEntry]:
        entries: dict[str, ModelEntry] = {}
        for source in (s.strip() for s in checkpoints):
            if not source:
                continue
            if Path(source).is_dir():
                name, kind = display_name(source), "folder"
            elif is_hub_id(source):
                name, kind = source, "hub"
            else:
                raise ValueError(f"listed checkpoint {Path(source).name!r} is neither a checkpoint folder "
                                 f"nor a Hub id ORG/NAME")
            unique, n = name, 2
            while unique in entries or unique.lower() in _ZERO_SHOT_ALIASES:
                unique, n = f"{name} ({n})", n + 1
            entries[unique] = ModelEntry(unique, source, kind, listed=True)
        return entries

    @property
    def checkpoints(self) -> list[str]:
        """Display names of the listed checkpoints, in the operator's order."""
        return list(self.listed)

    def names(self) -> list[str]:
        """The model names offered: ``"zero-shot"`` then the listed checkpoints' display names."""
        return [ZERO_SHOT, *self.listed]

    def resolve(self, name: Any) -> ModelEntry:
        """The model a visitor's ``name`` stands for, by the trust boundary's rules (loads nothing).

        Raises:
            AccessRefused: not text, an unknown name, or a local path (one message whether or not
                the path exists) when the policy does not allow local paths.
        """
        name = check_text(name, "model") or ZERO_SHOT
        if name.lower() in _ZERO_SHOT_ALIASES:
            return ModelEntry(ZERO_SHOT, "", "zero-shot")
        if name in self.listed:
            return self.listed[name]
        listed = next((e for e in self.listed.values() if e.kind == "hub" and e.source == name), None)
        if listed is not None:
            return listed
        if self.policy.allow_local_paths and os.path.isdir(name):
            return ModelEntry(display_name(name), name, "folder")
        if self.policy.allow_hub_models and is_hub_id(name):
            return ModelEntry(name, name, "hub")
        if self.policy.allow_local_paths:
            raise AccessRefused(f"Unknown model {name[:100]!r}: not a checkpoint folder, a Hub id or one "
                                f"of {self.names()}")
        if any(c in name for c in "/\\~") or name.startswith("."):
            raise AccessRefused(LOCAL_PATH_REFUSED)
        hub = " or a Hub id (ORG/NAME)" if self.policy.allow_hub_models else ""
        raise AccessRefused(f"Unknown model {name[:100]!r}; choose one of {self.names()}{hub}.")

    def get(self, name: Any) -> OpenSetClassifier:
        """The classifier of a model name, loading (and vetting) it on first use.

        Raises:
            AccessRefused: see :meth:`resolve`.
            CheckpointRejected: the checkpoint does not fit this backbone or cannot be read.
            ValueError: the checkpoint was trained on another backbone.
        """
        entry = self.resolve(name)
        key = f"{entry.kind}:{entry.source}"
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            model_lock = self._model_locks.setdefault(key, threading.Lock())
        with model_lock:  # one load per model; other models are served meanwhile
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            classifier = self._build(entry)
            with self._lock:
                self._loaded[key] = classifier
                self._model_locks.pop(key, None)
                self._evict()
            return classifier

    def _build(self, entry: ModelEntry) -> OpenSetClassifier:
        model = None
        if entry.kind != "zero-shot":
            access = hub_access(OPERATOR if entry.listed else VISITOR)
            folder = (Path(entry.source) if entry.kind == "folder" else
                      fetch_hub_checkpoint(entry.source, max_weight_bytes=self.max_checkpoint_bytes,
                                           access=access))
            config = vet_checkpoint(folder, embed_dim=self.backbone.embed_dim, max_classes=self.max_classes)
            model = load_vetted(folder, config, device=self.backbone.device).attach_backbone(self.backbone)
            logger.info("loaded model %s (%s)", entry.name, entry.kind)
        return OpenSetClassifier(self.backbone, model, name=entry.name, rendered=self.rendered,
                                 **self._kwargs)

    def _evict(self) -> None:
        keep = {f"{e.kind}:{e.source}" for e in self.listed.values()} | {"zero-shot:"}
        extra = [k for k in self._loaded if k not in keep]
        while len(extra) > self.max_loaded:
            self._loaded.pop(extra.pop(0))
