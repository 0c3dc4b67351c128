"""Contrastive pretraining of the tiny embedded CLIP from scratch on the shapes world.

The model is an open_clip :class:`~open_clip.CLIP` built from :data:`MODEL_CFG`
(ModifiedResNet image tower, layers ``[1, 1, 1, 1]``, width 16, 64 px; 4-layer,
width-64 text tower with context 16 and the standard CLIP BPE tokenizer; embed
dim 128). It is trained with the symmetric InfoNCE loss, AdamW, a step-based
schedule (linear warm-up then cosine decay to zero) and a fixed seed.

Data: a seeded, never-ending stream of freshly rendered images
(:func:`croft_core.synth.world.sample`) in a seed namespace different from the
benchmark dataset's. Rendering costs more than a training step on a CPU, so the
stream feeds a pool: the pool starts with ``--pool`` images, every step replaces
the ``--refresh`` oldest by new ones, and every batch draws images from the
pool with a *fresh* caption each time (a caption names the exact class only
sometimes, see :func:`croft_core.synth.world.caption`).

The result is written as an open_clip ``local-dir:`` folder::

    OUT/open_clip_config.json        # {"model_cfg": ..., "preprocess_cfg": ...}
    OUT/open_clip_model.safetensors  # fp16 weights
    OUT/pretrain.json                # command, seed, steps, wall time, numbers

and loads with ``open_clip.create_model_and_transforms("local-dir:OUT")``.

Command line (the shipped model; the defaults are its settings, about 15 minutes
on 2 CPU cores; ``--eval-every`` only reads the model and does not change it)::

    python -m croft_core.synth.dataset --out DIR
    OMP_WAIT_POLICY=PASSIVE python -m croft_core.synth.pretrain \\
        --out OUT --steps 1800 --eval-data DIR --eval-every 300

then copy ``OUT/open_clip_config.json``, ``OUT/open_clip_model.safetensors`` and
``OUT/pretrain.json`` to ``croft_core/synth/embedded/`` (see its ``PRETRAIN.md``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from croft_core.synth.world import CLASSES, DOMAINS, caption, sample

logger = logging.getLogger(__name__)

PRETRAIN_STREAM = 0xC11F_0001
"""Seed namespace of the pretraining stream (the benchmark uses another one)."""

MODEL_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
}
"""open_clip model config of the embedded CLIP (about 4.7 M parameters)."""

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS_CFG: dict[str, Any] = {
    "size": 64, "mode": "RGB", "mean": list(MEAN), "std": list(STD),
    "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0,
}

DOMAIN_WEIGHTS: tuple[float, ...] = (0.6, 0.1, 0.2, 0.1)
"""Pretraining style mix over ``DOMAINS`` (photo, sketch, cartoon, painting)."""

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
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


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
            image, _, class_name, domain, colour = sample(
                self.rng, self.size, domain_weights=self.domain_weights)
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
        captions = [caption(*self._caption_args(i)) for i in idx]
        return to_tensor(self.images[idx]), captions

    def _caption_args(self, i: int) -> tuple[str, str, str, np.random.Generator]:
        class_name, domain, colour = self.meta[i]
        return class_name, domain, colour, self.rng


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
    from croft_core.synth import check

    return check.evaluate(out_dir, data_dir, probe=probe)


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one pretraining run (the ``croft pretrain-embedded`` flags)."""

    out: str = str(Path(__file__).resolve().parent / "embedded")  # local-dir folder to write
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


def train(args: PretrainConfig) -> dict[str, Any]:
    """Run the pretraining described by ``args``; returns the run information."""
    import open_clip

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start = time.time()
    model = build_model(MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    pool = StreamPool(args.seed, args.pool)
    logger.info("rendered initial pool of %d in %.0f s", args.pool, time.time() - start)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    history: list[dict[str, float]] = []
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        images, captions = pool.batch(args.batch_size)
        loss = clip_loss(model, images, tokenizer(captions), captions if args.dedup else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        pool.refresh(args.refresh)
        if step % 50 == 0 or step == args.steps - 1:
            logger.info("step %d/%d loss %.3f scale %.1f lr %.2e (%.0f s)", step, args.steps, loss.item(),
                        model.logit_scale.exp().item(), optimizer.param_groups[0]["lr"], time.time() - start)
        if args.eval_data and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            ckpt = Path(args.out) / f"step{step + 1}"
            save_local_dir(model, ckpt, MODEL_CFG)
            result = {"step": step + 1, **evaluate_local_dir(ckpt, args.eval_data)}
            history.append(result)
            logger.info("eval %s", json.dumps({k: round(v, 3) for k, v in result.items()
                                               if not k.startswith("auroc_") or k == "auroc_energy"}))
            model.train()
    wall = time.time() - start
    info: dict[str, Any] = {
        "command": "python -m croft_core.synth.pretrain " + " ".join(sys.argv[1:]),
        "seed": args.seed, "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
        "lr": args.lr, "weight_decay": args.weight_decay, "pool": args.pool, "refresh": args.refresh,
        "threads": args.threads, "dedup": args.dedup, "images_rendered": pool.rendered, "domain_weights": dict(zip(DOMAINS, DOMAIN_WEIGHTS)),
        "classes": list(CLASSES), "wall_time_s": round(wall, 1), "final_loss": round(loss.item(), 4),
        "parameters": sum(p.numel() for p in model.parameters()), "history": history,
    }
    save_local_dir(model, args.out, MODEL_CFG, info)
    if args.eval_data:
        info["metrics"] = evaluate_local_dir(args.out, args.eval_data)
        info["metrics_data"] = {"dataset": "python -m croft_core.synth.dataset --seed 0 (defaults)"}
        (Path(args.out) / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
        logger.info("final %s", json.dumps(info["metrics"]))
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m croft_core.synth.pretrain``: the same as ``croft pretrain-embedded``."""
    from croft_core.cli import main as cli_main

    return cli_main(["pretrain-embedded", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
