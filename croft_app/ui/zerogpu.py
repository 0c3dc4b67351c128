"""Hugging Face ZeroGPU: ``spaces.GPU`` when the ``spaces`` package is installed, and the GPU time
each handler asks for.

Import this module before anything imports torch: on ZeroGPU (``SPACES_ZERO_GPU=true``) ``spaces``
refuses to start once CUDA is initialized, and it patches torch on import. ``croft_app.ui.app``
imports it first, and this module itself never imports torch.

Each GPU handler's duration is computed from its work (:func:`classify_seconds`,
:func:`lab_seconds`, :func:`train_seconds`) and capped at :data:`CALL_CAP` seconds, ZeroGPU's
default request (60 s). Callers without a token get the smallest daily quota (a few minutes per
day, IP-based; PRO accounts 25 minutes), so a request of 60 s or less leaves an anonymous
``gradio_client`` caller several calls a day; a longer request is refused outright once the quota
left is below it. Work that would not fit is refused with a message before any GPU is asked for
(:class:`GpuBudgetError`).

The rates below are estimates for a ViT-B/16 on a ZeroGPU slice (not measured on ZeroGPU: no
machine here can reach it); they are generous so that a call is not aborted, and the cap holds
whatever they say.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true")

try:  # ZeroGPU: run a handler on a GPU slice; elsewhere spaces.GPU is a no-op
    import spaces

    GPU = spaces.GPU  # AttributeError: the repository's own spaces/ folder, seen as a namespace package
except (ImportError, AttributeError):
    def GPU(task: Callable | None = None, **_: Any) -> Callable:  # noqa: N802 - spaces' name
        """No-op stand-in for ``spaces.GPU`` (usable bare or with arguments)."""
        return task if task is not None else (lambda f: f)

CALL_CAP = 60  # seconds: ZeroGPU's default duration; every request stays at or under it
CLASSIFY_BASE = 5.0  # seconds: one image plus the text encoding of a cached vocabulary
SECONDS_PER_IMAGE = 0.05  # one request's image: decoding, preprocessing, a ViT-B/16 forward (generous)
SECONDS_PER_BATCHED_IMAGE = 0.005  # an image encoded in batches of a benchmark (200 images/s)
SECONDS_PER_CLASS = 0.01  # one prompt per class through the text tower (first use of a vocabulary)
LAB_BASE = 15.0  # rendering / loading a benchmark and the scores
TRAIN_BASE = 10.0
SECONDS_PER_STEP = 0.05  # one optimizer step of a CRoFT head (d x d matrices) on cached features


class GpuBudgetError(ValueError):
    """Work that does not fit in one ZeroGPU call; the message says how to make it smaller."""


def _capped(seconds: float) -> int:
    return int(min(CALL_CAP, max(1, math.ceil(seconds))))


def classify_seconds(images: int = 1, classes: int = 10) -> int:
    """GPU seconds to classify ``images`` images against ``classes`` classes (at most :data:`CALL_CAP`)."""
    return _capped(CLASSIFY_BASE + SECONDS_PER_IMAGE * images + SECONDS_PER_CLASS * classes)


def lab_seconds(images: int) -> int:
    """GPU seconds of a Lab evaluation over ``images`` images.

    Raises:
        GpuBudgetError: the evaluation would not fit in one call of :data:`CALL_CAP` seconds.
    """
    need = LAB_BASE + SECONDS_PER_BATCHED_IMAGE * images
    if ZERO_GPU and need > CALL_CAP:
        raise GpuBudgetError(f"an evaluation of {images} images needs about {math.ceil(need)} s of GPU, "
                             f"more than the {CALL_CAP} s one ZeroGPU call may ask for; run it with "
                             f"`croft evaluate` on your own machine")
    return _capped(need)


def train_seconds(steps: int, images: int) -> int:
    """GPU seconds of a fine-tuning run: encoding ``images`` training views, then ``steps`` steps.

    Raises:
        GpuBudgetError: the run would not fit in one call of :data:`CALL_CAP` seconds.
    """
    need = TRAIN_BASE + SECONDS_PER_BATCHED_IMAGE * images + SECONDS_PER_STEP * steps
    if ZERO_GPU and need > CALL_CAP:
        raise GpuBudgetError(f"this run ({images} training views, {steps} steps) needs about "
                             f"{math.ceil(need)} s of GPU, more than the {CALL_CAP} s one ZeroGPU call may "
                             f"ask for; use fewer shots, views or steps")
    return _capped(need)
