"""Contrastive pretraining of the tiny embedded CLIP from scratch on the shapes world.

The model is an open_clip :class:`~open_clip.CLIP` built from :data:`MODEL_CFG`
(ModifiedResNet image tower, layers ``[1, 1, 1, 1]``, width 16, 64 px; 4-layer,
width-64 text tower with context 16 and the standard CLIP BPE tokenizer; embed
dim 128). It is trained with the symmetric InfoNCE loss, AdamW, a step-based
schedule (linear warm-up then cosine decay to zero) and a fixed seed.

Data: a seeded, never-ending stream of freshly rendered images
(:func:`croft_core.data.synth.world.sample`; a share :data:`~croft_core.data.synth.world.NONSHAPE_RATE`
of them non-shape images, :func:`~croft_core.data.synth.world.sample_nonshape`, captioned by their
name) in a seed namespace different from the
benchmark dataset's. Rendering costs more than a training step on a CPU, so the
stream feeds a pool: the pool starts with ``--pool`` images, every step replaces
the ``--refresh`` oldest by new ones, and every batch draws images from the
pool with a *fresh* caption each time (a caption names the exact class only
sometimes, see :func:`croft_core.data.synth.world.caption`).

The result is written as an open_clip ``local-dir:`` folder::

    OUT/open_clip_config.json        # {"model_cfg": ..., "preprocess_cfg": ...}
    OUT/open_clip_model.safetensors  # fp16 weights
    OUT/pretrain.json                # command, seed, steps, wall time, numbers

and loads with ``open_clip.create_model_and_transforms("local-dir:OUT")``.

Command line (the shipped model; see ``embedded/PRETRAIN.md`` for its exact settings; ``--eval-every``
only reads the model and does not change it)::

    croft render-shapes --out DIR
    OMP_WAIT_POLICY=PASSIVE croft pretrain-embedded --out OUT --eval-data DIR --eval-every 300

then copy ``OUT/open_clip_config.json``, ``OUT/open_clip_model.safetensors`` and
``OUT/pretrain.json`` to ``croft_core/data/synth/embedded/``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from croft_core.seeds import PRETRAIN_STREAM
from croft_core.data.synth.world import (CLASSES, DOMAINS, NONSHAPE_KINDS, NONSHAPE_RATE, PRETRAIN_CLASS_WEIGHTS,
                                         PRETRAIN_DOMAIN_WEIGHTS, caption, nonshape_caption, sample,
                                         sample_nonshape)

logger = logging.getLogger(__name__)

MODEL_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
}
"""open_clip model config of the embedded CLIP (about 4.7 M parameters)."""

PREPROCESS_CFG: dict[str, Any] = {
    "size": 64, "mode": "RGB", "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
    "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0,
}

DOMAIN_WEIGHTS: tuple[float, ...] = PRETRAIN_DOMAIN_WEIGHTS
"""Pretraining style mix over ``DOMAINS`` (photo, sketch, cartoon, painting)."""

NONSHAPE = "nonshape"
"""The pool's domain tag of a non-shape image (its class is a kind of ``NONSHAPE_KINDS``)."""

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
INFO_NAME = "pretrain.json"


def build_model(model_cfg: dict[str, Any] | None = None) -> torch.nn.Module:
    """A randomly initialised open_clip CLIP from ``model_cfg`` (default :data:`MODEL_CFG`)."""
    import open_clip

    return open_clip.CLIP(**(model_cfg or MODEL_CFG))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 images -> normalised ``[N, 3, H, W]`` float tensor."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


class StreamPool:
    """A pool of rendered pretraining examples fed by an endless seeded stream."""

    def __init__(self, seed: int, pool_size: int, size: int = 64,
                 domain_weights: Sequence[float] = DOMAIN_WEIGHTS) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence([PRETRAIN_STREAM, seed]))
        self.size, self.domain_weights = size, tuple(domain_weights)
        self.images = np.zeros((pool_size, size, size, 3), dtype=np.uint8)
        self.meta: list[tuple[str, str, str]] = [("", "", "")] * pool_size
        self.cursor = 0
        self.rendered = 0
        self.refresh(pool_size)

    def _stream(self) -> Iterator[tuple[np.ndarray, tuple[str, str, str]]]:
        while True:
            if self.rng.random() < NONSHAPE_RATE:
                image, _, kind = sample_nonshape(self.rng, self.size)
                yield np.asarray(image), (kind, NONSHAPE, "")
                continue
            image, _, class_name, domain, colour = sample(
                self.rng, self.size, domain_weights=self.domain_weights,
                class_weights=PRETRAIN_CLASS_WEIGHTS)
            yield np.asarray(image), (class_name, domain, colour)

    def refresh(self, n: int) -> None:
        """Replace the ``n`` oldest pool entries by freshly rendered examples."""
        stream = self._stream()
        for _ in range(n):
            self.images[self.cursor], self.meta[self.cursor] = next(stream)
            self.cursor = (self.cursor + 1) % len(self.images)
        self.rendered += n

    def batch(self, batch_size: int) -> tuple[torch.Tensor, list[str]]:
        """A random batch of pool images with freshly drawn captions."""
        idx = self.rng.choice(len(self.images), size=batch_size, replace=False)
        captions = [self._caption(i) for i in idx]
        return to_tensor(self.images[idx]), captions

    def _caption(self, i: int) -> str:
        """A freshly drawn caption of pool entry ``i`` (a shape's or a non-shape's)."""
        class_name, domain, colour = self.meta[i]
        if domain == NONSHAPE:
            return nonshape_caption(class_name, self.rng)
        return caption(class_name, domain, colour, self.rng)


def lr_at(step: int, steps: int, warmup: int, lr: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "embedding" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def caption_targets(captions: Sequence[str]) -> torch.Tensor:
    """Soft InfoNCE targets: every pair with an identical caption counts as a positive.

    Coarse captions ("a polygon.") repeat within a batch; treating the repeats as
    negatives would punish the model for matching them and keep the learned
    temperature low.
    """
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    group = torch.tensor([ids[c] for c in captions])
    same = (group[:, None] == group[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def clip_loss(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor,
              captions: Sequence[str] | None = None) -> torch.Tensor:
    """Symmetric InfoNCE loss of one batch (identical ``captions`` share their positives)."""
    image_features, text_features, logit_scale = model(images, tokens)[:3]
    logits = logit_scale * image_features @ text_features.T
    target = torch.arange(len(images)) if captions is None else caption_targets(captions)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def save_local_dir(model: torch.nn.Module, out_dir: str | Path, model_cfg: dict[str, Any],
                   info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as an open_clip ``local-dir:`` folder with fp16 safetensors weights."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    if info is not None:
        (out / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    logger.info("wrote %s (%.2f MB)", out, (out / WEIGHTS_NAME).stat().st_size / 1e6)
    return out


def evaluate_local_dir(out_dir: str | Path, data_dir: str | Path, probe: bool = True) -> dict[str, float]:
    """Benchmark numbers of a saved folder (loaded the way users load it)."""
    from croft_core.runs import embedded_check as check

    return check.evaluate(out_dir, data_dir, probe=probe)


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one pretraining run (the ``croft pretrain-embedded`` flags)."""

    out: str  # local-dir folder to write (the shipped model is replaced by copying, see PRETRAIN.md)
    seed: int = 0
    steps: int = 1800
    warmup: int = 100
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    pool: int = 12000  # initial rendered pool size
    refresh: int = 6  # new images rendered per step
    threads: int = 2
    dedup: bool = True  # identical captions in a batch count as positives of each other
    eval_data: str | None = None  # shapes dataset folder: evaluate checkpoints on it
    eval_every: int = 0  # evaluate (and snapshot to OUT/stepN) every N steps; 0: only at the end


def _log_step(step: int, steps: int, loss: torch.Tensor, model: torch.nn.Module, lr: float,
              start: float) -> None:
    if step % 50 == 0 or step == steps - 1:
        logger.info("step %d/%d loss %.3f scale %.1f lr %.2e (%.0f s)", step, steps, loss.item(),
                    model.logit_scale.exp().item(), lr, time.time() - start)


def _snapshot(model: torch.nn.Module, config: PretrainConfig, step: int) -> dict[str, float]:
    """Save the model to ``OUT/step<step>`` and measure it on ``config.eval_data``."""
    ckpt = Path(config.out) / f"step{step}"
    save_local_dir(model, ckpt, MODEL_CFG)
    result = {"step": step, **evaluate_local_dir(ckpt, config.eval_data)}
    logger.info("eval %s", json.dumps({k: round(v, 3) for k, v in result.items()
                                       if not k.startswith(("auroc_", "zs_class_")) or k == "auroc_energy"}))
    model.train()
    return result


def _fit(model: torch.nn.Module, config: PretrainConfig, start: float
         ) -> tuple[StreamPool, float, list[dict[str, float]]]:
    """The training loop; returns the pool, the last loss and the evaluation history."""
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    pool = StreamPool(config.seed, config.pool)
    logger.info("rendered initial pool of %d in %.0f s", config.pool, time.time() - start)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    history: list[dict[str, float]] = []
    model.train()
    for step in range(config.steps):
        lr = lr_at(step, config.steps, config.warmup, config.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, captions = pool.batch(config.batch_size)
        loss = clip_loss(model, images, tokenizer(captions), captions if config.dedup else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        pool.refresh(config.refresh)
        _log_step(step, config.steps, loss, model, lr, start)
        done = step + 1
        if config.eval_data and config.eval_every and done % config.eval_every == 0 and done < config.steps:
            history.append(_snapshot(model, config, done))
    return pool, float(loss.item()), history


def train(config: PretrainConfig, command: str | None = None) -> dict[str, Any]:
    """Run the pretraining described by ``config``; returns the run information.

    Args:
        config: the run's settings.
        command: the command line that started the run, recorded in ``pretrain.json`` (the CLI
            passes ``"croft pretrain-embedded ..."``); ``None`` records the call's settings only.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    start = time.time()
    model = build_model(MODEL_CFG)
    pool, loss, history = _fit(model, config, start)
    wall = time.time() - start
    info: dict[str, Any] = {
        "command": command, "seed": config.seed, "steps": config.steps, "warmup": config.warmup,
        "batch_size": config.batch_size, "lr": config.lr, "weight_decay": config.weight_decay,
        "pool": config.pool, "refresh": config.refresh, "threads": config.threads, "dedup": config.dedup,
        "images_rendered": pool.rendered, "domain_weights": dict(zip(DOMAINS, DOMAIN_WEIGHTS)),
        "class_weights": {c: round(w, 4) for c, w in zip(CLASSES, PRETRAIN_CLASS_WEIGHTS)},
        "classes": list(CLASSES), "nonshape_rate": NONSHAPE_RATE, "nonshape_kinds": list(NONSHAPE_KINDS),
        "wall_time_s": round(wall, 1), "final_loss": round(loss, 4),
        "parameters": sum(p.numel() for p in model.parameters()), "history": history,
    }
    save_local_dir(model, config.out, MODEL_CFG, info)
    if config.eval_data:
        info["metrics"] = evaluate_local_dir(config.out, config.eval_data)
        info["metrics_data"] = {"dataset": "croft render-shapes --seed 0 (defaults)"}
        (Path(config.out) / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        logger.info("final %s", json.dumps(info["metrics"]))
    return info
