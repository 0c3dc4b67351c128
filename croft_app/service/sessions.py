"""Models a visitor trained, kept for their session, and the one-at-a-time training queue.

- :class:`SessionModels` keeps fine-tuned models in memory per session (Gradio's ``session_hash``;
  ``gradio_client`` keeps one per client), at most ``max_per_session`` each (the oldest goes), for
  ``ttl_seconds`` after their last use, and at most ``max_bytes`` for all sessions together (the
  least recently used go first; :func:`held_bytes` counts what an entry holds); nothing is written
  to disk.
- :class:`SessionRegistry` puts them in front of the server's
  :class:`~croft_app.service.models.ClassifierRegistry`: ``get(name, session)`` answers a session's own
  model names first and everything else as the registry does, so ``/classify`` and ``/evaluate``
  accept the name ``/finetune`` returned, in the same session only.
- :class:`TrainingQueue` runs one training job at a time per process, first come first served,
  and tells each waiting job its position; :func:`stream_job` runs a job in a thread and yields its
  events, so a generator (a Gradio handler) can show progress while it runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from croft_core.errors import CroftError
from croft_core.heads.checkpoint import CroftModel

__all__ = ["ModelTooLarge", "QueueFull", "SessionModels", "SessionRegistry", "TrainingQueue", "held_bytes",
           "stream_job"]

logger = logging.getLogger(__name__)


class QueueFull(CroftError, RuntimeError):
    """Too many training jobs are waiting; try again later."""


class ModelTooLarge(CroftError, ValueError):
    """A trained model larger than the memory the server keeps for all visitors' models together."""


def held_bytes(model: CroftModel, classifier: Any = None) -> int:
    """Bytes of the tensors a kept model holds: its parameters and buffers (each storage once; a
    prompt head's frozen text tower is the backbone's, shared, and not counted) and, once it has
    one, its classifier's cached text features and reference scores."""
    storages: dict[tuple, int] = {}
    tensors = [*model.parameters(), *model.buffers()] if isinstance(model, torch.nn.Module) else []
    if classifier is not None:
        tensors += [t for t in getattr(classifier, "_text", {}).values() if isinstance(t, torch.Tensor)]
    for t in tensors:
        storage = t.untyped_storage()
        storages[(t.device.type, storage.data_ptr())] = storage.nbytes()
    scores = [getattr(r, "scores", None) for r in getattr(classifier, "_references", {}).values()]
    return sum(storages.values()) + sum(a.nbytes for a in scores if isinstance(a, np.ndarray))


@dataclass
class _Entry:
    model: CroftModel
    classifier: Any  # OpenSetClassifier, built on first use
    used: float
    nbytes: int = 0  # held_bytes, counted when added and at each use


class SessionModels:
    """Fine-tuned models by (session, display name), in memory, bounded in count, bytes and time.

    Args:
        max_per_session: models one session keeps (adding one more drops its oldest).
        ttl_seconds: a model unused this long is dropped.
        max_sessions: sessions kept at once (the least recently active go first).
        max_bytes: the bytes all kept models may hold together (:func:`held_bytes`); the least
            recently used models, of any session, are dropped first; ``None``: no bound.
    """

    def __init__(self, max_per_session: int = 3, ttl_seconds: float = 3600.0, max_sessions: int = 200,
                 clock: Callable[[], float] = time.monotonic, max_bytes: int | None = 128 * 2**20):
        self.max_per_session, self.ttl, self.max_sessions = max_per_session, ttl_seconds, max_sessions
        self.max_bytes = max_bytes
        self._clock = clock
        self._sessions: OrderedDict[str, OrderedDict[str, _Entry]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = self._clock()
        for session in list(self._sessions):
            models = self._sessions[session]
            for name in [n for n, e in models.items() if now - e.used > self.ttl]:
                del models[name]
            if not models:
                del self._sessions[session]

    @property
    def nbytes(self) -> int:
        """What the kept models hold together (as last counted)."""
        with self._lock:
            return sum(e.nbytes for models in self._sessions.values() for e in models.values())

    def _fit_bytes(self) -> None:
        """Drop the least recently used models until the rest fit in ``max_bytes``."""
        if self.max_bytes is None:
            return
        entries = sorted((e.used, session, name, e.nbytes) for session, models in self._sessions.items()
                         for name, e in models.items())
        total = sum(n for *_, n in entries)
        for _, session, name, n in entries:
            if total <= self.max_bytes:
                break
            del self._sessions[session][name]
            total -= n
            if not self._sessions[session]:
                del self._sessions[session]

    def add(self, session: str, name: str, model: CroftModel) -> str:
        """Keep ``model`` for ``session`` under ``name`` (made unique: ``name (2)``); returns the name.

        Raises:
            ModelTooLarge: the model alone holds more than ``max_bytes``.
        """
        if not session:
            raise ValueError("a session is needed to keep a model")
        nbytes = held_bytes(model)
        if self.max_bytes is not None and nbytes > self.max_bytes:
            raise ModelTooLarge(f"the trained model holds {nbytes / 2**20:.1f} MB, more than this server keeps "
                                f"for visitors' models ({self.max_bytes / 2**20:.0f} MB, CROFT_SESSION_MODELS_MB); "
                                f"train on fewer classes")
        with self._lock:
            self._expire()
            models = self._sessions.setdefault(session, OrderedDict())
            self._sessions.move_to_end(session)
            unique, n = name, 2
            while unique in models:
                unique, n = f"{name} ({n})", n + 1
            models[unique] = _Entry(model, None, self._clock(), nbytes)
            while len(models) > self.max_per_session:
                models.popitem(last=False)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            self._fit_bytes()  # the new model is the most recently used: it stays
            return unique

    def names(self, session: str | None) -> list[str]:
        """The session's model names, oldest first."""
        with self._lock:
            self._expire()
            return list(self._sessions.get(session or "", {}))

    def get(self, session: str | None, name: str) -> _Entry | None:
        """The entry of ``name`` in ``session`` (its use time refreshed), or None."""
        with self._lock:
            self._expire()
            entry = self._sessions.get(session or "", {}).get(name)
            if entry is not None:
                entry.used = self._clock()
                entry.nbytes = held_bytes(entry.model, entry.classifier)  # its classifier's caches grow
                self._fit_bytes()
            return entry


class SessionRegistry:
    """A :class:`~croft_app.service.models.ClassifierRegistry` that also serves a session's own models.

    Every other attribute (``names``, ``checkpoints``, ``backbone`` ...) is the wrapped registry's.
    """

    def __init__(self, registry, sessions: SessionModels | None = None):
        self.registry = registry
        self.sessions = sessions or SessionModels()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def add(self, session: str, name: str, model: CroftModel) -> str:
        """Offer ``model`` to ``session`` by ``name`` (a base model name is never shadowed)."""
        taken = set(self.registry.names())
        name = f"{name} (yours)" if name in taken else name
        return self.sessions.add(session, name, model)

    def names(self, session: str | None = None) -> list[str]:
        """The registry's names, then the session's own models."""
        return [*self.registry.names(), *self.sessions.names(session)]

    def get(self, name: Any, session: str | None = None):
        """The classifier of ``name``: the session's own model if it has one by that name, else the
        registry's answer (with its trust-boundary checks)."""
        entry = self.sessions.get(session, name) if isinstance(name, str) else None
        if entry is None:
            return self.registry.get(name)
        if entry.classifier is None:
            from croft_app.service.classifier import OpenSetClassifier

            entry.classifier = OpenSetClassifier(
                self.registry.backbone, entry.model, name=name, max_classes=self.registry.max_classes,
                embedded_world=self.registry.embedded_world, rendered=self.registry.rendered)
        return entry.classifier


class TrainingQueue:
    """One job at a time, first come first served, with at most ``max_waiting`` waiting."""

    def __init__(self, max_waiting: int = 8):
        self.max_waiting = max_waiting
        self._waiting: list[int] = []
        self._tickets = itertools.count()
        self._cond = threading.Condition()

    def position(self, ticket: int) -> int:
        """0 = running, 1 = next, ..."""
        with self._cond:
            return self._waiting.index(ticket) if ticket in self._waiting else -1

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)

    def join(self) -> int:
        """Take a ticket (the caller must :meth:`leave` with it).

        Raises:
            QueueFull: ``max_waiting`` jobs already wait.
        """
        with self._cond:
            if len(self._waiting) > self.max_waiting:
                raise QueueFull(f"{len(self._waiting) - 1} training jobs are waiting already; try again in "
                                f"a few minutes")
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            return ticket

    def wait(self, ticket: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the queue to move; returns the ticket's position."""
        with self._cond:
            if self._waiting.index(ticket) > 0:
                self._cond.wait(timeout)
            return self._waiting.index(ticket)

    def leave(self, ticket: int) -> None:
        with self._cond:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    @contextlib.contextmanager
    def slot(self, on_wait: Callable[[int], None] = lambda position: None,
             cancelled: Callable[[], bool] = lambda: False, poll: float = 0.5) -> Iterator[None]:
        """Wait for this job's turn (calling ``on_wait(position)`` while waiting), then run the body.

        Raises:
            QueueFull: ``max_waiting`` jobs already wait.
            CancelledWhileQueued: ``cancelled()`` became true while waiting.
        """
        ticket = self.join()
        try:
            while (position := self.position(ticket)) > 0:
                on_wait(position)
                if cancelled():
                    raise CancelledWhileQueued("the training job was cancelled while it waited")
                self.wait(ticket, poll)
            yield
        finally:
            self.leave(ticket)


class CancelledWhileQueued(CroftError):
    """A queued job was cancelled before it ran."""


_DONE = object()


def stream_job(job: Callable[[Callable[[dict], None]], Any], *, poll: float = 0.2
               ) -> Iterator[dict[str, Any]]:
    """Run ``job(emit)`` in a thread; yield what it emits, then ``{"stage": "done", "result": ...}``.

    An exception of the job is raised here, in the caller's thread, after the events before it.
    Closing the generator early does not stop the job: pass it a stop flag for that.
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = job(events.put)
        except BaseException as err:  # re-raised in the consumer's thread
            outcome["error"] = err
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name="croft-finetune", daemon=True)
    thread.start()
    while True:
        try:
            event = events.get(timeout=poll)
        except queue.Empty:
            yield {"stage": "tick"}
            continue
        if event is _DONE:
            break
        yield event
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield {"stage": "done", "result": outcome.get("result")}
