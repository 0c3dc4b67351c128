"""The app server's settings, read once from environment variables (the app has no command line).

Every limit that keeps a public server healthy is here with its default, so ``docs/SECURITY.md``,
the app and the tests read one definition: what a visitor may name (:class:`ServingPolicy`), how
large an upload, a vocabulary or a queue may be, how long a Lab job may run, and how much disk the
app's caches may use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from croft_app.service.security import ServingPolicy, env_flag
from croft_app.service.vocabulary import DEFAULT_MAX_CLASSES

__all__ = ["AppSettings"]

_SIZE = re.compile(r"(\d+)\s*(b|kb|mb|gb)?", re.I)
_UNITS = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30}


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive whole number, got {raw[:20]!r}")
    return int(raw)


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = _SIZE.fullmatch(raw)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{name} must be a size such as 10mb, 500kb or 1gb, got {raw[:20]!r}")
    return int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]


@dataclass(frozen=True)
class AppSettings:
    """Settings of the app server (environment variable in brackets).

    Attributes:
        backbone: the frozen CLIP SPEC (``CROFT_BACKBONE``).
        checkpoints: checkpoint folders / Hub ids listed by display name (``CROFT_CHECKPOINTS``,
            comma-separated).
        policy: what a visitor may name (``CROFT_ALLOW_LOCAL_PATHS``, ``CROFT_ALLOW_HUB_MODELS``).
        max_classes: the largest vocabulary (``CROFT_MAX_CLASSES``).
        concurrency: inference requests served at once (``CROFT_CONCURRENCY``).
        queue_size: requests waiting at most, all events together (``CROFT_QUEUE_SIZE``).
        max_file_size: largest upload in bytes (``CROFT_MAX_FILE_SIZE``, e.g. ``10mb``).
        max_body_size: largest request body in bytes, uploads aside (``CROFT_MAX_BODY_SIZE``,
            e.g. ``1mb``): HTTP 413 beyond it, so no JSON a visitor sends can be large.
        max_kept_input: input values larger than this (bytes, as text) are not kept in a session's
            state once the request is done (``CROFT_MAX_KEPT_INPUT``; Gradio keeps every session's
            last inputs, for up to ``session_capacity`` sessions).
        lab_time_limit: seconds a Lab evaluation may run (``CROFT_LAB_TIME_LIMIT``).
        text_cache_bytes: disk budget of the app's text-embedding cache (``CROFT_TEXT_CACHE_MB``).
        results_cache_bytes: disk budget of result files to download (``CROFT_RESULTS_CACHE_MB``).
        max_checkpoint_bytes: largest ``model.safetensors`` loaded (``CROFT_MAX_CHECKPOINT_MB``).
        delete_cache_after: seconds after which Gradio deletes uploads and returned files
            (``CROFT_DELETE_CACHE_AFTER``).
        session_capacity: browser sessions whose state is kept in memory, oldest dropped first
            (``CROFT_SESSION_CAPACITY``; Gradio keeps ~150 kB per session and 10,000 by default, so
            a client that opens a new session per request would otherwise grow the server by GBs).
        session_models_bytes: memory all visitors' trained models may hold together, their
            classifiers' caches included; the least recently used are dropped first
            (``CROFT_SESSION_MODELS_MB``; besides 3 models per session, 200 sessions, one hour).
        new_sessions_per_s: new sessions admitted per second, all clients together, in bursts of 5
            (``CROFT_NEW_SESSIONS_PER_S``; :class:`~croft_app.service.limits.NewSessionPacing`:
            Gradio builds each new session's state on its event loop, so an unpaced burst of them
            stalls every visitor).
        train_process: Train jobs run in a child process of lower CPU priority, not a thread of
            the server (``CROFT_TRAIN_PROCESS``, default on; CPU backbones only:
            :mod:`croft_app.service.trainproc`).
    """

    backbone: str = "embedded"
    checkpoints: tuple[str, ...] = ()
    policy: ServingPolicy = field(default_factory=ServingPolicy)
    max_classes: int = DEFAULT_MAX_CLASSES
    concurrency: int = 4
    queue_size: int = 32
    max_file_size: int = 10 * 2**20
    max_body_size: int = 2**20
    max_kept_input: int = 16 * 2**10
    lab_time_limit: int = 600
    text_cache_bytes: int = 256 * 2**20
    results_cache_bytes: int = 64 * 2**20
    max_checkpoint_bytes: int = 128 * 2**20
    delete_cache_after: int = 3600
    session_capacity: int = 300
    session_models_bytes: int = 128 * 2**20
    new_sessions_per_s: int = 4
    train_process: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AppSettings":
        """Read every ``CROFT_*`` variable above; unset ones keep their defaults.

        Raises:
            ValueError: a variable that is set to something unusable; the message names it.
        """
        env = os.environ if environ is None else environ
        d = cls()
        mb = 2**20
        return cls(
            backbone=env.get("CROFT_BACKBONE", "").strip() or d.backbone,
            checkpoints=tuple(c.strip() for c in env.get("CROFT_CHECKPOINTS", "").split(",") if c.strip()),
            policy=ServingPolicy.from_env(env),
            max_classes=_positive_int(env, "CROFT_MAX_CLASSES", d.max_classes),
            concurrency=_positive_int(env, "CROFT_CONCURRENCY", d.concurrency),
            queue_size=_positive_int(env, "CROFT_QUEUE_SIZE", d.queue_size),
            max_file_size=_bytes(env, "CROFT_MAX_FILE_SIZE", d.max_file_size),
            max_body_size=_bytes(env, "CROFT_MAX_BODY_SIZE", d.max_body_size),
            max_kept_input=_bytes(env, "CROFT_MAX_KEPT_INPUT", d.max_kept_input),
            lab_time_limit=_positive_int(env, "CROFT_LAB_TIME_LIMIT", d.lab_time_limit),
            text_cache_bytes=_positive_int(env, "CROFT_TEXT_CACHE_MB", d.text_cache_bytes // mb) * mb,
            results_cache_bytes=_positive_int(env, "CROFT_RESULTS_CACHE_MB", d.results_cache_bytes // mb) * mb,
            max_checkpoint_bytes=_positive_int(env, "CROFT_MAX_CHECKPOINT_MB",
                                               d.max_checkpoint_bytes // mb) * mb,
            delete_cache_after=_positive_int(env, "CROFT_DELETE_CACHE_AFTER", d.delete_cache_after),
            session_capacity=_positive_int(env, "CROFT_SESSION_CAPACITY", d.session_capacity),
            session_models_bytes=_positive_int(env, "CROFT_SESSION_MODELS_MB", d.session_models_bytes // mb) * mb,
            new_sessions_per_s=_positive_int(env, "CROFT_NEW_SESSIONS_PER_S", d.new_sessions_per_s),
            train_process=env_flag("CROFT_TRAIN_PROCESS", d.train_process, env),
        )
