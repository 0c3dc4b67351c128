"""Models by name for a server: ``"zero-shot"`` and checkpoints, each loaded once per process.

The app asks :class:`ClassifierRegistry` for a model by the name a visitor chose; the registry
builds the :class:`~croft_core.predict.OpenSetClassifier` on first use and keeps it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Sequence

from .backbones import Backbone
from .model import CroftModel
from .predict import ZERO_SHOT, OpenSetClassifier, RenderedReference, is_embedded_backbone

__all__ = ["ClassifierRegistry"]

logger = logging.getLogger(__name__)


class ClassifierRegistry:
    """Classifiers by model name on one backbone: ``"zero-shot"`` and checkpoints, each loaded once.

    Args:
        backbone: the frozen backbone shared by every model.
        checkpoints: checkpoint folders or Hub ids offered by name (loaded on first use).
        allow_other: also accept checkpoint folders / Hub ids that are not in ``checkpoints``.
        max_loaded: most checkpoints outside ``checkpoints`` kept in memory (LRU).
        **classifier_kwargs: passed to every :class:`OpenSetClassifier`.
    """

    def __init__(self, backbone: Backbone, checkpoints: Sequence[str] = (), *, allow_other: bool = True,
                 max_loaded: int = 8, **classifier_kwargs: Any):
        self.backbone = backbone
        self.checkpoints = [c for c in (s.strip() for s in checkpoints) if c]
        self.allow_other = allow_other
        self.max_loaded = max_loaded
        embedded_world = classifier_kwargs.pop("embedded_world", None)
        self.embedded_world = is_embedded_backbone(backbone) if embedded_world is None else embedded_world
        self._kwargs = dict(classifier_kwargs, embedded_world=self.embedded_world)
        self.rendered = RenderedReference(backbone) if self.embedded_world else None
        self._loaded: OrderedDict[str, OpenSetClassifier] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The model names offered: ``"zero-shot"`` then the configured checkpoints."""
        return [ZERO_SHOT, *self.checkpoints]

    def get(self, name: str) -> OpenSetClassifier:
        """The classifier of a model name, loading it on first use.

        Raises:
            ValueError: an unknown model, a checkpoint that cannot be loaded, or one trained on
                another backbone; the message says what to do.
        """
        name = (name or "").strip() or ZERO_SHOT
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            if name.lower() in (ZERO_SHOT, "zeroshot", "zero_shot"):
                name = ZERO_SHOT
                if name not in self._loaded:
                    self._loaded[name] = OpenSetClassifier(self.backbone, None, name=name,
                                                           rendered=self.rendered, **self._kwargs)
                return self._loaded[name]
            if name not in self.checkpoints and not self.allow_other:
                raise ValueError(f"Unknown model {name!r}; choose one of {self.names()}.")
            classifier = OpenSetClassifier(self.backbone, self._load(name), name=name,
                                           rendered=self.rendered, **self._kwargs)
            self._loaded[name] = classifier
            extra = [k for k in self._loaded if k != ZERO_SHOT and k not in self.checkpoints]
            while len(extra) > self.max_loaded:
                self._loaded.pop(extra.pop(0))
            return classifier

    def _load(self, name: str) -> CroftModel:
        from .hub import CheckpointNotFoundError, load_model

        try:
            return load_model(name, device=str(self.backbone.device))
        except CheckpointNotFoundError as err:
            raise ValueError(f"Unknown model {name!r}; choose zero-shot or a checkpoint folder/Hub "
                             f"id ({err})") from err
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"Could not load model {name!r}: {err}") from err

