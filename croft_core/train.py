"""Training on cached features: one loop for CRoFT and every baseline, read top to bottom.

The official recipe (CROFT_SPEC.md §2.2) is the default: SGD (lr 0.002, momentum 0.9, weight decay
0.1), one warm-up epoch at a constant 1e-5, cosine annealing stepped per epoch, 30 epochs, batch 32
(``drop_last`` when the set has at least one full batch), best-on-validation model selection.

Each epoch draws one of the ``V`` cached augmented views per image and a shuffle from a generator
seeded by ``(seed, epoch)``, so a run is deterministic on CPU and an interrupted run resumed from its
last epoch checkpoint ends with exactly the weights of an uninterrupted one. Training state is saved
as safetensors + JSON (never pickles).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .features import FeatureSet
from .losses import clean_step, official_step, supervised_step
from .model import CroftModel, HeadConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (saved in the checkpoint's ``config.json``)."""

    method: str = "croft"  # key of METHODS
    lambda1: float = 5.0  # weight of the same-class similarity term (generator push-away)
    lambda2: float = 5.0  # weight of the energy-gradient (EDR) penalty
    gen_steps: int = 1  # generator inner-loop steps per batch (official: 10 at 1 shot, else 1)
    use_generator: bool = True  # official WCCF
    cov_branch: bool = True  # official branch A (Setup-I, PACS ViT); False = branch B (VLCS)
    edr_reduction: str = "sum_mean"  # sum_mean (Setup-I) | mean_sum (Setup-II) | sample_sum
    edr_temperature: float = 1.0  # T of the energy inside the penalty (official 1, no tau)
    image_ratio: float = 0.2  # alpha
    text_ratio: float = 0.5  # beta
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 0.1  # the CRoFT repo's Dassl default; pulls adapters towards zero-shot
    epochs: int = 30
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    batch_size: int = 32
    seed: int = 1
    max_steps: int | None = None  # stop after this many optimisation steps (smoke tests)


# method -> (head, step, TrainConfig defaults). The step decides the objective.
METHODS: dict[str, dict[str, Any]] = {
    "zeroshot": {"head": "zeroshot", "step": None, "defaults": {}},
    "clip_adapter": {"head": "clip_adapter", "step": "supervised", "defaults": {}},
    "tip_adapter": {"head": "tip_adapter", "step": "supervised",
                    "defaults": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01,
                                 "epochs": 20}},
    "linear_probe": {"head": "linear_probe", "step": "supervised",
                     "defaults": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4}},
    "croft": {"head": "croft", "step": "official", "defaults": {}},
    "croft_noedr": {"head": "croft", "step": "official", "defaults": {"lambda2": 0.0}},
    "croft_clean": {"head": "croft", "step": "clean", "defaults": {"edr_reduction": "sample_sum"}},
}


def method_config(method: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of ``method``: its defaults, then ``overrides`` (``None`` values ignored)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}")
    values = {**METHODS[method]["defaults"], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(method=method, **values)


@dataclass
class TrainResult:
    model: CroftModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float | None


def init_model(cfg: TrainConfig, *, embed_dim: int, logit_scale: float, classnames: Sequence[str],
               train_set: FeatureSet | None = None, text_features: torch.Tensor | None = None,
               backbone: str = "", templates: Sequence[str] = (),
               text_mode: str = "normalized") -> CroftModel:
    """Build the untrained model of ``cfg.method`` (Tip-Adapter's cache and the linear probe's
    zero-shot initialisation are filled from ``train_set`` / ``text_features``)."""
    spec = METHODS[cfg.method]
    cache_size = len(train_set) if spec["head"] == "tip_adapter" else 0
    config = HeadConfig(
        head=spec["head"], method=cfg.method, embed_dim=embed_dim, num_classes=len(classnames),
        logit_scale=logit_scale, image_ratio=cfg.image_ratio, text_ratio=cfg.text_ratio,
        generator_input="zeroshot" if spec["step"] == "clean" else "adapted",
        cache_size=cache_size, backbone=backbone, classnames=tuple(classnames),
        templates=tuple(templates), text_mode=text_mode, training=asdict(cfg))
    model = CroftModel(config)
    if spec["head"] == "tip_adapter":
        if train_set is None:
            raise ValueError("Tip-Adapter needs the training features to build its cache")
        mean_view = torch.nn.functional.normalize(train_set.features, dim=-1).mean(0)  # [N, d]
        model.head.init_cache(mean_view, train_set.labels)
    if spec["head"] == "linear_probe":
        if text_features is None:
            raise ValueError("the linear probe is initialised from the text features")
        model.head.init_from_text(text_features)
    return model


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: Dassl's constant warm-up then cosine over ``epochs``."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / cfg.epochs))


def _optimizers(model: CroftModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    def make(params):
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-4)
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")

    if model.config.head == "croft":  # two optimizers, as the official code registers
        return [make(model.head.adapter_parameters()), make(model.head.generator_parameters())]
    return [make([p for p in model.parameters() if p.requires_grad])]


def _step(model: CroftModel, cfg: TrainConfig, f, t, y, optimizers) -> dict[str, float]:
    kind = METHODS[cfg.method]["step"]
    if kind == "official":
        return official_step(model.head, f, t, y, optimizers, lambda1=cfg.lambda1,
                             lambda2=cfg.lambda2, gen_steps=cfg.gen_steps,
                             use_generator=cfg.use_generator, cov_branch=cfg.cov_branch,
                             edr_reduction=cfg.edr_reduction, edr_temperature=cfg.edr_temperature)
    if kind == "clean":
        return clean_step(model.head, f, t, y, optimizers, lambda1=cfg.lambda1, lambda2=cfg.lambda2,
                          gen_steps=cfg.gen_steps, use_generator=cfg.use_generator,
                          edr_reduction=cfg.edr_reduction, edr_temperature=cfg.edr_temperature)
    return supervised_step(model.head, f, t, y, optimizers)


@torch.no_grad()
def accuracy_on(model: CroftModel, features: FeatureSet, text_features: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on the first view of ``features``."""
    logits = model(features.first_view(), text_features)
    return (logits.argmax(-1) == features.labels).float().mean().item()


def train(model: CroftModel, train_set: FeatureSet, text_features: torch.Tensor, cfg: TrainConfig, *,
          val_set: FeatureSet | None = None, out_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True) -> TrainResult:
    """Train ``model`` on cached features; returns the best-on-validation model.

    Args:
        model: from :func:`init_model`; trained in place, on the device of its parameters.
        train_set: ``[V, N, d]`` training features with labels.
        text_features: ``[K, d]`` class text features (frozen; computed once).
        cfg: the run's hyper-parameters.
        val_set: validation features for model selection (best accuracy, strict improvement);
            without it the last epoch is kept.
        out_dir: if given, training state is saved there after every epoch, and a run found there
            is resumed when ``resume`` (its config must match ``cfg``).
        progress: show a tqdm bar over epochs.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    train_set, text_features = train_set.to(device), text_features.to(device)
    val_set = val_set.to(device) if val_set is not None else None
    history: list[dict[str, float]] = []
    if METHODS[cfg.method]["step"] is None:  # zero-shot: nothing to train
        acc = accuracy_on(model, val_set, text_features) if val_set is not None else None
        return TrainResult(model, history, 0, acc)

    optimizers = _optimizers(model, cfg)
    start_epoch, best_acc, best_epoch, best_state, step = 0, -1.0, -1, None, 0
    state_dir = Path(out_dir) / "train_state" if out_dir is not None else None
    if state_dir is not None and resume and _state_exists(state_dir):
        start_epoch, best_acc, best_epoch, best_state, history, step = _load_state(
            state_dir, model, optimizers, cfg)
        logger.info("resuming %s from epoch %d", state_dir, start_epoch)

    n, views = len(train_set), train_set.views
    drop_last = n >= cfg.batch_size
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train {cfg.method}", disable=not progress,
               initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        lr = lr_at_epoch(cfg, epoch)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).to(device)
        view = torch.randint(views, (n,), generator=gen).to(device)
        stop = n - n % cfg.batch_size if drop_last else n
        model.train()
        sums: dict[str, float] = {}
        batches = 0
        for start in range(0, stop, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            f = train_set.features[view[idx], idx]  # [B, d]
            logs = _step(model, cfg, f, text_features, train_set.labels[idx], optimizers)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            batches, step = batches + 1, step + 1
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        model.eval()
        row = {"epoch": epoch + 1, "lr": lr, **{k: v / max(batches, 1) for k, v in sums.items()}}
        if val_set is not None:
            row["val_accuracy"] = accuracy_on(model, val_set, text_features)
        history.append(row)
        score = row.get("val_accuracy", float(epoch))
        if score > best_acc:
            best_acc, best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "val_accuracy")})
        if state_dir is not None:
            _save_state(state_dir, model, optimizers, cfg, epoch + 1, best_acc, best_epoch,
                        best_state, history, step)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, best_epoch,
                       best_acc if val_set is not None and best_epoch > 0 else None)


# ---- training state (safetensors + JSON) -------------------------------------------------------

def _state_exists(state_dir: Path) -> bool:
    return (state_dir / "state.json").is_file() or (state_dir.with_name(state_dir.name + ".old")
                                                     / "state.json").is_file()


def _save_state(state_dir: Path, model, optimizers, cfg, epoch, best_acc, best_epoch, best_state,
                history, step) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
    opt_meta = []
    for j, opt in enumerate(optimizers):
        sd = opt.state_dict()
        plain_state = {}
        for idx, slots in sd["state"].items():
            for name, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"opt{j}.{idx}.{name}"] = value
                else:
                    plain_state.setdefault(str(idx), {})[name] = value
        opt_meta.append({"param_groups": sd["param_groups"], "plain_state": plain_state})
    meta = {"epoch": epoch, "step": step, "best_val": best_acc, "best_epoch": best_epoch,
            "history": history, "config": asdict(cfg), "optimizers": opt_meta,
            "has_best": best_state is not None}
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta))
    old = state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        os.replace(state_dir, old)
    os.replace(tmp, state_dir)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(state_dir: Path, model, optimizers, cfg):
    from safetensors.torch import load_file

    if not (state_dir / "state.json").is_file():  # interrupted between the two renames
        state_dir = state_dir.with_name(state_dir.name + ".old")
    meta = json.loads((state_dir / "state.json").read_text())
    saved = {k: v for k, v in meta["config"].items() if k != "max_steps"}
    wanted = {k: v for k, v in asdict(cfg).items() if k != "max_steps"}
    if saved != wanted:
        diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
        raise ValueError(f"{state_dir} holds a run with a different configuration ({diff}); use a "
                         f"new output folder or disable resuming")
    device = next(iter(model.parameters())).device
    tensors = load_file(str(state_dir / "state.safetensors"), device=str(device))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = ({k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
                  if meta["has_best"] else None)
    for j, opt in enumerate(optimizers):
        om = meta["optimizers"][j]
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(f"opt{j}."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, slots in om["plain_state"].items():
            state.setdefault(int(idx), {}).update(slots)
        opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    return (meta["epoch"], meta["best_val"], meta["best_epoch"], best_state, meta["history"],
            meta["step"])
