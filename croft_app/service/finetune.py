"""Fine-tuning for visitors and client programs: data in, a usable, calibrated, named model out.

:func:`finetune` runs the library's own recipe (CROFT_SPEC §2.2) on a :class:`~croft_app.service.userdata.
TrainingData`: features are extracted once (and cached, :func:`croft_core.clip.features.extract_features`),
the method's head is trained on them (:func:`croft_core.runs.train.init_model`, the steps of
:mod:`croft_core.runs.train`), the best epoch on validation is kept, and the energy threshold is
calibrated on the validation images (:func:`croft_core.runs.evaluate.calibrate`). Unlike ``croft train``
it reports progress through a callback (the fraction of images encoded, then one row per epoch
with the loss and the validation accuracy), stops cleanly when asked (``should_stop``) or when the
wall-time cap is reached, keeping the best model so far, and is bounded by :class:`FinetuneLimits`.

The ``steps`` of a request is the length of the run in optimizer steps: the epochs are
``ceil(steps / steps_per_epoch)``, so the cosine schedule spans exactly the run.

The result is a :class:`~croft_core.heads.checkpoint.CroftModel` with a readable name (``CRoFT · my-data ·
16-shot``), saved with :func:`save_checkpoint` as a folder whose model card lists the data, the
method, the hyper-parameters and the validation numbers; :func:`zip_checkpoint` packs it for a
download and :func:`push_finetuned` uploads it with the visitor's token, which is never logged or
stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from croft_core.clip.backbones import build_text_classifier
from croft_core.errors import CroftError, HubError
from croft_core.runs.evaluate import calibrate
from croft_core.clip.features import FeatureSet, extract_features
from croft_core.data.images import env_number
from croft_app.service.limits import prune_lru
from croft_core.heads.checkpoint import CroftModel, render_model_card
from croft_app.service.security import is_hub_id, scrub_paths
from croft_core.runs.train import (METHODS, TrainConfig, TrainResult, init_model, method_config, steps_per_epoch,
                    train)
from croft_app.service.userdata import TrainingData

__all__ = ["FinetuneError", "FinetuneLimits", "FinetuneRequest", "FinetuneResult", "FinetuneStopped",
           "METHOD_LABELS", "TRAINABLE_METHODS", "display_name", "finetune", "push_finetuned",
           "save_checkpoint", "train_config", "train_with_hooks", "zip_checkpoint"]

logger = logging.getLogger(__name__)

METHOD_LABELS = {"croft": "CRoFT", "croft_clean": "CRoFT (clean)", "croft_noedr": "CRoFT (no EDR)",
                 "clip_adapter": "CLIP-Adapter", "tip_adapter": "Tip-Adapter-F",
                 "linear_probe": "Linear probe", "coop": "CoOp", "cocoop": "CoCoOp", "locoop": "LoCoOp"}
TRAINABLE_METHODS = tuple(m for m in METHOD_LABELS if m in METHODS)
CHECKPOINT_FILES = ("config.json", "model.safetensors", "README.md")
_TOKEN = re.compile(r"[A-Za-z0-9_\-.:=+/]{8,512}")  # HF and OAuth tokens: no space, no control character
Event = dict[str, Any]


class FinetuneError(CroftError, ValueError):
    """A fine-tuning request that cannot run as asked; the message says what to change."""


class FinetuneStopped(CroftError):
    """The run was stopped (by the visitor or the time cap) before any model existed; nothing kept."""


@dataclass(frozen=True)
class StopCheck:
    """Called before each image of a run's data is checked: raises :class:`FinetuneStopped` once
    Stop was pressed (``flag``, a file, exists) or ``deadline`` (``time.monotonic()``: one clock for
    every process of a Linux machine) passed. Picklable, so the training process checks it too."""

    flag: str
    deadline: float
    max_seconds: float

    def __call__(self) -> None:
        stopped = os.path.exists(self.flag)
        if stopped or time.monotonic() > self.deadline:
            why = "was stopped" if stopped else f"reached the time limit ({self.max_seconds:.0f} s)"
            raise FinetuneStopped(f"the run {why} while the data was being checked; nothing was kept")


@dataclass(frozen=True)
class FinetuneLimits:
    """Bounds of one run on a shared server (environment: ``CROFT_TRAIN_*``, see :meth:`from_env`)."""

    max_images: int = 2000  # training + validation images per run
    max_classes: int = 100
    max_shots: int = 512  # images per class
    max_steps: int = 3000  # optimizer steps per run
    max_seconds: float = 600.0  # wall time per run (extraction + training)
    max_views: int = 8  # augmented views per training image
    feature_cache_bytes: int = 512 * 2**20  # the run's feature cache folder, pruned LRU
    train_threads: int | None = 1  # CPU threads while the head trains (None: leave torch's setting)

    @classmethod
    def from_env(cls) -> "FinetuneLimits":
        """``CROFT_TRAIN_MAX_IMAGES``, ``_MAX_CLASSES``, ``_MAX_STEPS``, ``_MAX_SECONDS`` over the defaults."""
        d = cls()
        return cls(max_images=env_number("CROFT_TRAIN_MAX_IMAGES", d.max_images, "images", "2000"),
                   max_classes=env_number("CROFT_TRAIN_MAX_CLASSES", d.max_classes, "classes", "100"),
                   max_steps=env_number("CROFT_TRAIN_MAX_STEPS", d.max_steps, "steps", "3000"),
                   max_seconds=env_number("CROFT_TRAIN_MAX_SECONDS", d.max_seconds, "seconds", "600",
                                          kind=float))


@dataclass(frozen=True)
class FinetuneRequest:
    """What a visitor asks for; ``None`` hyper-parameters keep the method's defaults."""

    method: str = "croft"
    shots: int = 16  # training images per class
    seed: int = 1
    steps: int = 200  # optimizer steps of the run
    lambda1: float | None = None
    lambda2: float | None = None
    lr: float | None = None
    views: int = 4  # augmented views per training image (data that allows augmentation)
    batch_size: int = 32

    def checked(self, limits: FinetuneLimits) -> "FinetuneRequest":
        """Raise :class:`FinetuneError` unless every field is usable within ``limits``."""
        if self.method not in TRAINABLE_METHODS:
            raise FinetuneError(f"unknown method {str(self.method)[:40]!r}; choose one of {list(TRAINABLE_METHODS)}")
        for name, value, top in (("shots", self.shots, limits.max_shots), ("steps", self.steps, limits.max_steps),
                                 ("views", self.views, limits.max_views), ("batch_size", self.batch_size, 512),
                                 ("seed", self.seed, 2**31 - 1)):
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
                raise FinetuneError(f"{name} must be a whole number from {low} to {top}, got {value!r}")
        for name in ("lambda1", "lambda2", "lr"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or value > (1.0 if name == "lr" else 1e4) or (name == "lr" and value == 0):
                bounds = "in (0, 1]" if name == "lr" else "from 0 to 10000"
                raise FinetuneError(f"{name} must be a number {bounds}, got {value!r}")
        return self


@dataclass
class FinetuneResult:
    """A trained, calibrated model and what the visitor sees of its run."""

    model: CroftModel
    name: str  # display name
    history: list[dict[str, float]]
    results: dict[str, Any]
    card: str = ""  # the model card (README.md)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def display_name(method: str, data_name: str, shots: int | None) -> str:
    """``"CRoFT · my-data · 16-shot"``: method, data and shots, never a path."""
    data = " ".join(re.sub(r"[^\w.\-/ ]+", " ", str(data_name)).split())[:40] or "data"
    shot = f"{shots}-shot" if shots else "all images"
    return f"{METHOD_LABELS.get(method, method)} · {data} · {shot}"


def shots_used(data: TrainingData) -> int | None:
    """The training images per class the run really had: the most any class had, never more than
    the shots asked for (a zip with 2 images per class trains a "2-shot" model, not "16-shot")."""
    labels = np.asarray(data.train.labels, dtype=np.int64)
    if data.shots is None or labels.size == 0:
        return data.shots
    return int(min(data.shots, np.bincount(labels).max()))


def train_config(request: FinetuneRequest, n_train: int) -> TrainConfig:
    """The TrainConfig of a request: the method's defaults, the visitor's hyper-parameters, and
    ``ceil(steps / steps_per_epoch)`` epochs capped at ``steps`` steps."""
    cfg = method_config(request.method, lambda1=request.lambda1, lambda2=request.lambda2, lr=request.lr,
                        seed=request.seed, batch_size=request.batch_size)
    epochs = max(1, math.ceil(request.steps / max(steps_per_epoch(cfg, n_train), 1)))
    return method_config(request.method, lambda1=request.lambda1, lambda2=request.lambda2, lr=request.lr,
                         seed=request.seed, batch_size=request.batch_size, epochs=epochs,
                         warmup_epochs=1 if epochs >= 5 else 0, max_steps=request.steps)


def train_with_hooks(model: CroftModel, train_set: FeatureSet, text_features: torch.Tensor,
                     cfg: TrainConfig, *, val_set: FeatureSet,
                     on_epoch: Callable[[dict[str, float], int], None] = lambda row, epochs: None,
                     should_stop: Callable[[], bool] = lambda: False) -> tuple[TrainResult, bool]:
    """:func:`croft_core.runs.train.train` (no saved state) with a callback after every epoch and a stop
    check before each; the best-on-validation model so far is kept when stopped.

    Returns:
        ``(result, stopped)``.
    """
    result = train(model, train_set, text_features, cfg, val_set=val_set, progress=False,
                   on_epoch=on_epoch, should_stop=should_stop)
    return result, result.stopped


@contextlib.contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Train the head with ``n`` intra-op threads. Its matrices are tiny (batch 32 x d): on a busy
    2-core machine one thread ran a step's small ops ~100x faster than two fighting for the cores."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Progress:
    """Counts images as the encoder reads them; reports fractions, enforces stop and time cap."""

    def __init__(self, total: int, on_event: Callable[[Event], None], should_stop: Callable[[], bool],
                 deadline: float):
        self.total, self.done, self.on_event = max(total, 1), 0, on_event
        self.should_stop, self.deadline, self.last = should_stop, deadline, 0.0

    def tick(self) -> None:
        self.done += 1
        if self.should_stop() or time.monotonic() > self.deadline:
            why = "stopped" if self.should_stop() else "reached the time limit"
            raise FinetuneStopped(f"the run {why} while encoding images, before training; nothing was "
                                  f"kept")
        now = time.monotonic()
        if now - self.last > 0.25 or self.done == self.total:
            self.last = now
            self.on_event({"stage": "extract", "fraction": min(self.done / self.total, 1.0),
                           "done": self.done, "total": self.total})


class _Counted:
    """A split whose ``image(i)`` ticks a :class:`_Progress` (extraction runs in this process)."""

    def __init__(self, split, progress: _Progress):
        self._split, self._progress = split, progress
        self.name, self.labels, self.ids = split.name, split.labels, split.ids

    def __len__(self) -> int:
        return len(self._split)

    def image(self, i: int):
        self._progress.tick()
        return self._split.image(i)

    def fingerprint(self) -> str:
        return self._split.fingerprint()


def _encode(backbone, data: TrainingData, request: FinetuneRequest, cache_dir, progress: _Progress
            ) -> tuple[FeatureSet, FeatureSet]:
    views = request.views if data.augment else 1
    local = METHODS[request.method]["step"] == "locoop"  # LoCoOp trains on local features
    train = extract_features(backbone, _Counted(data.train, progress), views=views, augment=data.augment,
                             seed=request.seed, cache_dir=cache_dir, local=local)
    val = extract_features(backbone, _Counted(data.val, progress), cache_dir=cache_dir)
    progress.on_event({"stage": "extract", "fraction": 1.0, "done": progress.total, "total": progress.total})
    return train, val


CALIBRATION_ROLE = "val"  # the split the energy threshold is fitted on (the results name the split used)


def _calibrated(model: CroftModel, text, splits: dict[str, FeatureSet]) -> dict[str, Any]:
    """Fit the energy threshold on the :data:`CALIBRATION_ROLE` split; what the results say about it
    is read from the split actually used (its role, name and size), never written by hand."""
    split = splits[CALIBRATION_ROLE]
    calibrate(model, text, split)
    return {"fitted_on": CALIBRATION_ROLE, "fitted_on_split": split.name, "n": len(split)}


def finetune(backbone, data: TrainingData, request: FinetuneRequest, *,
             limits: FinetuneLimits = FinetuneLimits(), cache_dir: str | Path | None = None,
             on_event: Callable[[Event], None] = lambda event: None,
             should_stop: Callable[[], bool] = lambda: False) -> FinetuneResult:
    """Extract features, train ``request.method`` on ``data``, keep the best epoch, calibrate.

    Args:
        backbone: the frozen :class:`~croft_core.clip.backbones.Backbone`.
        data: from :mod:`croft_app.service.userdata`.
        request: the run's options (checked against ``limits``).
        limits: images, classes, steps and wall-time bounds.
        cache_dir: feature cache of fine-tuning runs (pruned to ``limits.feature_cache_bytes``; give
            it a folder of its own); ``None`` disables caching.
        on_event: called with ``{"stage": "extract", "fraction", ...}`` while images are encoded and
            ``{"stage": "epoch", "epoch", "epochs", "loss", "val_accuracy", ...}`` after each epoch.
        should_stop: polled during encoding and before each epoch; when it returns True the run
            ends, with the best model so far if training had begun.

    Raises:
        FinetuneError: a bad request; FinetuneStopped: stopped before training began.
    """
    request.checked(limits)
    t0, deadline = time.perf_counter(), time.monotonic() + limits.max_seconds
    n_images = len(data.train) * (request.views if data.augment else 1) + len(data.val)
    progress = _Progress(n_images, on_event, should_stop, deadline)
    train_set, val_set = _encode(backbone, data, request, cache_dir, progress)
    if cache_dir is not None:
        prune_lru(Path(cache_dir) / "features", limits.feature_cache_bytes)
    text = build_text_classifier(backbone, data.classnames, data.templates, text_mode=data.text_mode,
                                 cache_dir=cache_dir)
    cfg = train_config(request, len(train_set))
    model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                       classnames=data.classnames, train_set=train_set, text_features=text,
                       backbone=backbone.spec, templates=data.templates, text_mode=data.text_mode, clip=backbone)
    model = model.to(backbone.device)
    timed_out = []

    def stop() -> bool:
        if time.monotonic() > deadline:
            timed_out.append(True)
        return bool(timed_out) or should_stop()

    def epoch_done(row: dict[str, float], epochs: int) -> None:
        on_event({"stage": "epoch", "epochs": epochs, **row})

    with _cpu_threads(limits.train_threads if backbone.device.type == "cpu" else None):
        result, stopped = train_with_hooks(model, train_set, text, cfg, val_set=val_set,
                                           on_epoch=epoch_done, should_stop=stop)
    if not result.history and METHODS[cfg.method]["step"] not in (None, "lbfgs"):
        raise FinetuneStopped("the run was stopped before its first epoch ended; nothing was kept")
    fitted = _calibrated(result.model, text, {"train": train_set, "val": val_set})
    name = display_name(request.method, data.name, shots_used(data))
    results = _results(data, request, cfg, result, val_set, stopped, "time" if timed_out else "user")
    results["threshold"].update(fitted)
    results["seconds"] = round(time.perf_counter() - t0, 2)
    result.model.update_config(metrics={"val_accuracy": results["val_accuracy"] or 0.0})
    card = model_card(result.model, name, data.describe(), results)
    return FinetuneResult(result.model, name, result.history, results, card, list(data.skipped))


def _results(data: TrainingData, request: FinetuneRequest, cfg: TrainConfig, result: TrainResult,
             val_set: FeatureSet, stopped: bool, reason: str) -> dict[str, Any]:
    config = result.model.config
    return {"data": data.describe(), "classes": list(data.classnames), "method": request.method,
            "shots": data.shots, "shots_used": shots_used(data), "seed": request.seed, "steps": request.steps,
            "epochs_done": len(result.history), "best_epoch": result.best_epoch,
            "val_accuracy": result.best_val_accuracy, "val_n": len(val_set),
            "threshold": {"score": "energy", "tpr": config.threshold_tpr, "value": config.threshold},
            "stopped": stopped, "stop_reason": reason if stopped else None,
            "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("method",)}}


_HPARAMS = ("lambda1", "lambda2", "lr", "optimizer", "weight_decay", "epochs", "max_steps", "batch_size",
            "seed", "image_ratio", "text_ratio")


def model_card(model: CroftModel, name: str, data: dict[str, Any], results: dict[str, Any],
               repo_id: str | None = None) -> str:
    """The checkpoint's card: the library's card with its name in the front matter, plus the data,
    the hyper-parameters and the validation numbers of the run."""
    base = render_model_card(model.config, repo_id)
    base = base.replace("---\n", f"---\nmodel_name: {json.dumps(name, ensure_ascii=False)}\n", 1)
    hp = results.get("train_config", {})
    acc = results.get("val_accuracy")
    lines = ["", f"## Fine-tuning: {name}", "",
             f"- Data: {data['source']} `{data['name']}`, {data['classes']} classes, {data['train_images']} "
             f"training images ({results.get('shots_used', results.get('shots'))} per class), {data['val_images']} validation images "
             f"({data['validation']})" + (f"; {data['skipped_files']} files skipped" if data.get('skipped_files') else ""),
             f"- Method: `{results.get('method')}` ({METHOD_LABELS.get(results.get('method'), '')})",
             "- Hyper-parameters: " + ", ".join(f"{k}={hp[k]}" for k in _HPARAMS if k in hp),
             f"- Validation: accuracy {'n/a' if acc is None else f'{acc:.4f}'} on {results.get('val_n')} "
             f"images (best epoch {results.get('best_epoch')} of {results.get('epochs_done')}); energy "
             f"threshold {results['threshold']['value']:.4f} at {results['threshold']['tpr']:.0%} ID TPR",
             ]
    if results.get("stopped"):
        lines.append(f"- Stopped early ({results.get('stop_reason')}); the best epoch so far was kept")
    return base.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def save_checkpoint(result: FinetuneResult, folder: str | Path) -> Path:
    """Write ``config.json`` (with the display name), ``model.safetensors`` and the card."""
    folder = Path(folder)
    result.model.save(folder)
    config = json.loads((folder / "config.json").read_text())
    config["display_name"] = result.name
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "README.md").write_text(result.card, encoding="utf-8")
    return folder


def slug(name: str) -> str:
    """A file-name form of a display name: ``croft-my-data-16-shot``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "croft-model"


def zip_checkpoint(folder: str | Path, dest: str | Path) -> Path:
    """Pack a checkpoint folder's files into ``dest`` (a ``.zip`` holding one folder)."""
    folder, dest = Path(folder), Path(dest)
    inner = slug(dest.stem)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in CHECKPOINT_FILES:
            zf.write(folder / name, f"{inner}/{name}")
    return dest


def push_finetuned(folder: str | Path, repo_id: str, token: str | None, *, private: bool = False) -> str:
    """Upload a fine-tuned checkpoint with its full card, using the visitor's ``token``.

    The token is passed to the Hub client only: never logged, stored or echoed in a message.

    Raises:
        FinetuneError: ``repo_id`` is not ``ORG/NAME``, or no token was given.
        HubError: offline, or the Hub refused (bad token, no write access ...).
    """
    from huggingface_hub.errors import HFValidationError, HTTPError

    from croft_core.heads.hub import push_checkpoint

    repo_id = (repo_id or "").strip()
    if not is_hub_id(repo_id):
        raise FinetuneError("give the repository as ORG/NAME (letters, digits, . _ -)")
    if not token:
        raise FinetuneError("a Hugging Face write token is needed to push (or log in on the Space)")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):  # never echoed: not even in part
        raise FinetuneError("the token holds spaces, line breaks or other characters a Hugging Face "
                            "token never has; copy it again from huggingface.co/settings/tokens")
    folder = Path(folder)
    try:
        # one commit: the folder's full card (data, hyper-parameters, validation) with the repo id
        url = push_checkpoint(folder, repo_id, private=private, token=token,
                              commit_message="Upload a model fine-tuned in CRoFT Lab")
    except (HubError, HTTPError, HFValidationError, OSError, ValueError) as err:
        message = str(err)
        for form in (token, repr(token)[1:-1], token[:8]):
            message = message.replace(form, "***")
        message = scrub_paths(message)[:400]
        raise HubError(f"could not push to {repo_id}: {message}") from None
    logger.info("pushed a fine-tuned model to %s", repo_id)
    return url
