"""Training on cached features: one loop for CRoFT and the trained baselines, read top to bottom.

The official recipe (CROFT_SPEC.md §2.2) is the default: SGD (lr 0.002, momentum 0.9, weight decay
0.1), one warm-up epoch at a constant 1e-5, cosine annealing stepped per epoch, 30 epochs, batch 32
(``drop_last`` when the set has at least one full batch), best-on-validation model selection.

``min_steps`` (off by default) is the recipe for small data: when ``epochs`` epochs would make fewer
than ``min_steps`` optimizer steps, the run gets ``ceil(min_steps / steps_per_epoch)`` epochs instead
(:func:`scheduled_epochs`); the cosine schedule spans the scaled epochs, the warm-up keeps its
``warmup_epochs``, and the model is still selected on validation after every epoch.

The linear probe is not trained by this loop: it is the CLIP paper's L-BFGS logistic regression
(:mod:`croft_core.heads.probe`), exported as the same :class:`~croft_core.heads.baselines.LinearProbeHead`.

Each epoch draws one of the ``V`` cached augmented views per image and a shuffle from a generator
seeded by ``(seed, epoch)``, so a run is deterministic on CPU. With ``out_dir`` the training state is
saved (safetensors + JSON, never pickles) after every *complete* epoch; rerunning with the same
configuration resumes from the last one and ends with exactly the weights of an uninterrupted run.
A run stopped by ``max_steps`` inside an epoch saves nothing for that epoch, and a different
configuration (``max_steps`` and ``min_steps`` included) raises :class:`ResumeConflictError`
instead of resuming.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from croft_core.errors import CroftError
from croft_core.clip.features import FeatureSet
from croft_core.ood.metrics import accuracy
from croft_core.heads.checkpoint import CroftModel, HeadConfig
from croft_core.heads.probe import fit_linear_probe
from croft_core.heads.prompts import TextTower
from croft_core.seeds import epoch_seed
from croft_core.objectives.steps import clean_step, locoop_step, official_step, supervised_step

logger = logging.getLogger(__name__)


class ResumeConflictError(CroftError, ValueError):
    """``out_dir`` holds the training state of a run with a different configuration."""


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
    min_steps: int | None = None  # scale epochs up to at least this many steps (None = official)
    tip_alpha: float = 1.0  # Tip-Adapter's cache weight (the repo's default)
    tip_beta: float = 1.17  # Tip-Adapter's affinity sharpness
    probe_c: float | None = None  # linear probe: fit this C only (None: its own sweep on validation)
    n_ctx: int = 4  # prompt methods: learnable context vectors (CoCoOp's 4; CoOp's 16 needs 77 tokens)
    ctx_init: str = "a photo of a"  # prompt methods: initial context words ("" = N(0, 0.02))
    class_specific_ctx: bool = False  # prompt methods: one context per class (CoOp's CSC)
    locoop_lambda: float = 0.25  # LoCoOp: weight of the local entropy term (the paper's 0.25)
    locoop_top_k: int = 200  # LoCoOp: a region is OOD when its top-K classes miss the label (capped at K-1)


# method -> (head, step, TrainConfig defaults). The step decides the objective ("lbfgs": the
# linear probe's closed-form fit; the SGD options of TrainConfig do not apply to it).
METHODS: dict[str, dict[str, Any]] = {
    "zeroshot": {"head": "zeroshot", "step": None, "defaults": {}},
    "clip_adapter": {"head": "clip_adapter", "step": "supervised", "defaults": {}},
    "tip_adapter": {"head": "tip_adapter", "step": "supervised",
                    "defaults": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01,
                                 "epochs": 20}},
    "linear_probe": {"head": "linear_probe", "step": "lbfgs", "defaults": {}},
    "croft": {"head": "croft", "step": "official", "defaults": {}},
    "croft_noedr": {"head": "croft", "step": "official", "defaults": {"lambda2": 0.0}},
    "croft_clean": {"head": "croft", "step": "clean", "defaults": {"edr_reduction": "sample_sum"}},
    # prompt learning (croft_core.heads.prompts): the CoOp/CoCoOp/LoCoOp papers' SGD recipe
    # (lr 0.002, weight decay 5e-4, one warm-up epoch at 1e-5, cosine); CoOp and LoCoOp 50 epochs
    # of batch 32 (CoOp's ImageNet / LoCoOp's schedule), CoCoOp 10 epochs of batch 1
    "coop": {"head": "coop", "step": "supervised", "defaults": {"weight_decay": 5e-4, "epochs": 50}},
    "cocoop": {"head": "cocoop", "step": "supervised",
               "defaults": {"weight_decay": 5e-4, "epochs": 10, "batch_size": 1}},
    "locoop": {"head": "coop", "step": "locoop", "defaults": {"weight_decay": 5e-4, "epochs": 50}},
}

# method -> {TrainConfig field: values}: the hyper-parameter space ``croft bench --search N`` draws N
# configurations from, the same N for every method (zero-shot has nothing to tune). Numeric lists are
# in increasing order, so a chosen value at either end lies on the edge of the space. lambda2's scale
# depends on the reduction (CROFT_SPEC §5 item 9: sum_mean is the Setup-I grid 1-20, mean_sum the
# Setup-II grid up to 1000), so the CRoFT space spans both.
SEARCH_SPACES: dict[str, dict[str, list]] = {
    "croft": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "lambda1": [1.0, 5.0, 15.0],
              "lambda2": [0.1, 1.0, 5.0, 20.0, 100.0, 1000.0], "edr_reduction": ["sum_mean", "mean_sum"]},
    "croft_noedr": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "lambda1": [1.0, 5.0, 15.0]},
    "croft_clean": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "lambda1": [1.0, 5.0, 15.0],
                    "lambda2": [0.1, 1.0, 5.0, 20.0, 100.0, 1000.0]},
    "clip_adapter": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "image_ratio": [0.05, 0.1, 0.2, 0.4, 0.6, 0.8]},
    "tip_adapter": {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "tip_alpha": [0.1, 0.3, 1.0, 3.0, 10.0],
                    "tip_beta": [0.5, 1.0, 1.17, 2.0, 3.5, 5.5, 7.0]},
    "linear_probe": {"probe_c": [10.0 ** k for k in range(-4, 7)]},
    # prompt learning: lr and the context (its initialisation; CoOp's class-specific contexts)
    "coop": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "ctx_init": ["a photo of a", ""],
             "class_specific_ctx": [False, True]},
    "cocoop": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "ctx_init": ["a photo of a", ""]},
    "locoop": {"lr": [5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2], "locoop_lambda": [0.1, 0.25, 0.5, 1.0],
               "locoop_top_k": [2, 50, 200]},
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


def search_configs(method: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct configurations of ``method`` drawn uniformly from :data:`SEARCH_SPACES`.

    The draw is seeded by ``(method, seed)``, so a bench is reproducible and every method gets the
    same budget ``n`` (all of a space smaller than ``n``; none for a method without a space).
    """
    if n < 0:
        raise ValueError(f"the search budget must be >= 0, got {n}")
    space = SEARCH_SPACES.get(method, {})
    if not space or not n:
        return []
    unknown = set(space) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"SEARCH_SPACES[{method!r}] names unknown training options {sorted(unknown)}")
    sizes = [len(v) for v in space.values()]
    total = math.prod(sizes)
    rng = random.Random(f"{method}/{seed}")
    picks = rng.sample(range(total), min(n, total))
    out = []
    for index in picks:  # mixed-radix decoding of one cell of the product
        config = {}
        for (name, values), size in zip(reversed(space.items()), reversed(sizes)):
            index, digit = divmod(index, size)
            config[name] = values[digit]
        out.append(dict(reversed(config.items())))
    return out


def on_edge(method: str, config: dict[str, Any]) -> list[str]:
    """The options of ``config`` at the smallest or largest value of ``method``'s numeric space."""
    space = SEARCH_SPACES.get(method, {})
    edge = []
    for name, value in config.items():
        values = space.get(name, [])
        numeric = len(values) > 1 and all(isinstance(v, (int, float)) for v in values)
        if numeric and value in (min(values), max(values)):
            edge.append(name)
    return edge


@dataclass
class TrainResult:
    model: CroftModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float | None
    stopped: bool = False  # ended early by ``should_stop`` (the best model so far is kept)


def init_model(cfg: TrainConfig, *, embed_dim: int, logit_scale: float, classnames: Sequence[str],
               train_set: FeatureSet | None = None, text_features: torch.Tensor | None = None,
               backbone: str = "", templates: Sequence[str] = (),
               text_mode: str = "normalized", clip=None) -> CroftModel:
    """Build the untrained model of ``cfg.method`` (Tip-Adapter's cache and the linear probe's
    zero-shot initialisation are filled from ``train_set`` / ``text_features``; prompt-learning
    heads tokenise their prompts with ``clip``, the loaded
    :class:`~croft_core.clip.backbones.Backbone`, and run its frozen text tower)."""
    spec = METHODS[cfg.method]
    cache_size = len(train_set) if spec["head"] == "tip_adapter" else 0
    prompt = spec["head"] in ("coop", "cocoop")
    if prompt and clip is None:
        raise ValueError(f"{cfg.method} learns prompts through the text encoder: pass clip=<Backbone>")
    tower = TextTower(clip.model) if prompt else None
    config = HeadConfig(
        head=spec["head"], method=cfg.method, embed_dim=embed_dim, num_classes=len(classnames),
        logit_scale=logit_scale, image_ratio=cfg.image_ratio, text_ratio=cfg.text_ratio,
        generator_input="zeroshot" if spec["step"] == "clean" else "adapted",
        cache_size=cache_size, tip_alpha=cfg.tip_alpha, tip_beta=cfg.tip_beta, n_ctx=cfg.n_ctx,
        ctx_init=cfg.ctx_init, class_specific_ctx=cfg.class_specific_ctx, ctx_dim=tower.width if tower else 0,
        context_length=tower.context_length if tower else 0, backbone=backbone,
        classnames=tuple(classnames), templates=tuple(templates), text_mode=text_mode,
        training=asdict(cfg))
    model = CroftModel(config)
    if prompt:
        model.attach_backbone(clip)
        model.to(clip.device)
        model.head.init_prompts(clip.tokenizer, classnames, cfg.ctx_init,
                                generator=torch.Generator().manual_seed(cfg.seed))
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


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps in one epoch over ``n_train`` images (``drop_last`` with a full batch)."""
    if n_train >= cfg.batch_size:
        return n_train // cfg.batch_size
    return 1 if n_train > 0 else 0


def scheduled_epochs(cfg: TrainConfig, n_train: int) -> int:
    """The epochs a run makes: ``cfg.epochs``, scaled up to ``ceil(min_steps / steps_per_epoch)``
    when ``cfg.min_steps`` is set (> 0) and ``cfg.epochs`` epochs would make fewer steps."""
    if cfg.min_steps is not None and cfg.min_steps < 0:
        raise ValueError(f"min_steps must be >= 0 (0 or None = the official epochs), got {cfg.min_steps}")
    per_epoch = steps_per_epoch(cfg, n_train)
    if not cfg.min_steps or per_epoch == 0:
        return cfg.epochs
    return max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))


def lr_at_epoch(cfg: TrainConfig, epoch: int, epochs: int | None = None) -> float:
    """Learning rate of 0-based ``epoch``: Dassl's constant warm-up then cosine over ``epochs``
    (default ``cfg.epochs``; :func:`scheduled_epochs` when ``min_steps`` scales the run)."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    total = cfg.epochs if epochs is None else epochs
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / total))


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


def _step(model: CroftModel, cfg: TrainConfig, f, t, y, optimizers, local=None) -> dict[str, float]:
    kind = METHODS[cfg.method]["step"]
    if kind == "locoop":
        return locoop_step(model.head, f, local, y, optimizers, lam=cfg.locoop_lambda,
                           top_k=cfg.locoop_top_k)
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
def _val_accuracy(model: CroftModel, features: FeatureSet, text_features: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on the first view of ``features``."""
    return accuracy(model(features.first_view(), text_features), features.labels)


@dataclass
class _Run:
    """Progress of a run: what the training state saves after each complete epoch."""

    epoch: int = 0  # complete epochs done
    step: int = 0  # optimizer steps done
    best_score: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _budget_spent(cfg: TrainConfig, run: _Run) -> bool:
    return cfg.max_steps is not None and run.step >= cfg.max_steps


def _run_epoch(model: CroftModel, cfg: TrainConfig, train_set: FeatureSet, text_features, optimizers,
               run: _Run, epochs: int) -> tuple[dict[str, float], bool]:
    """Train one epoch (``run.epoch``); returns its history row and whether it ran to the end."""
    lr = lr_at_epoch(cfg, run.epoch, epochs)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
    device, n = text_features.device, len(train_set)
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, run.epoch))
    order = torch.randperm(n, generator=gen).to(device)
    view = torch.randint(train_set.views, (n,), generator=gen).to(device)
    stop = n - n % cfg.batch_size if n >= cfg.batch_size else n
    needs_local = METHODS[cfg.method]["step"] == "locoop"
    model.train()
    sums: dict[str, float] = {}
    batches = 0
    for start in range(0, stop, cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        f = train_set.features[view[idx], idx]  # [B, d]
        local = train_set.local[view[idx], idx].float() if needs_local else None  # [B, P, d]
        for k, v in _step(model, cfg, f, text_features, train_set.labels[idx], optimizers, local).items():
            sums[k] = sums.get(k, 0.0) + v
        batches, run.step = batches + 1, run.step + 1
        if _budget_spent(cfg, run):
            break
    model.eval()
    row = {"epoch": run.epoch + 1, "lr": lr, **{k: v / max(batches, 1) for k, v in sums.items()}}
    return row, batches == steps_per_epoch(cfg, n)


def _select(run: _Run, row: dict[str, float], model: CroftModel, val_set, text_features) -> None:
    """Append ``row`` (with validation accuracy) and keep the best model (strict improvement)."""
    if val_set is not None:
        row["val_accuracy"] = _val_accuracy(model, val_set, text_features)
    run.history.append(row)
    score = row.get("val_accuracy", float(run.epoch))
    if score > run.best_score:
        run.best_score, run.best_epoch = score, run.epoch + 1
        run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(model: CroftModel, train_set: FeatureSet, text_features: torch.Tensor, cfg: TrainConfig, *,
          val_set: FeatureSet | None = None, out_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True, on_epoch: Callable[[dict[str, float], int], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train ``model`` on cached features; returns the best-on-validation model.

    Args:
        model: from :func:`init_model`; trained in place, on the device of its parameters.
        train_set: ``[V, N, d]`` training features with labels.
        text_features: ``[K, d]`` class text features (frozen; computed once).
        cfg: the run's hyper-parameters.
        val_set: validation features for model selection (best accuracy, strict improvement);
            without it the last epoch is kept.
        out_dir: if given, training state is saved there after every complete epoch, and a run
            found there is resumed when ``resume``.
        progress: show a tqdm bar over epochs.
        on_epoch: called after every epoch with its history row and the scheduled epoch count
            (live curves in the app).
        should_stop: checked before every epoch; when it returns True the run ends there and the
            best model so far is returned with ``stopped=True`` (the app's Stop button, time caps).

    Raises:
        ResumeConflictError: ``out_dir`` holds the state of a run with another configuration.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    train_set, text_features = train_set.to(device), text_features.to(device)
    val_set = val_set.to(device) if val_set is not None else None
    kind = METHODS[cfg.method]["step"]
    if kind == "locoop" and train_set.local is None:
        raise ValueError("LoCoOp trains on local image features: extract the training split with "
                         "local=True (prepare_features(..., local=True))")
    if kind is None:  # zero-shot: nothing to train
        acc = _val_accuracy(model, val_set, text_features) if val_set is not None else None
        return TrainResult(model, [], 0, acc)
    if kind == "lbfgs":
        history, selected = fit_linear_probe(model.head, train_set, val_set, c=cfg.probe_c)
        return TrainResult(model.eval(), history, 1, selected.get("val_accuracy"))

    optimizers = _optimizers(model, cfg)
    run = _Run()
    state_dir = Path(out_dir) / "train_state" if out_dir is not None else None
    if state_dir is not None and resume and _state_exists(state_dir):
        run = _load_state(state_dir, model, optimizers, cfg)
        logger.info("resuming %s from epoch %d", state_dir, run.epoch)
    epochs = scheduled_epochs(cfg, len(train_set))
    bar = tqdm(total=epochs, initial=run.epoch, desc=f"train {cfg.method}", disable=not progress)
    stopped = False
    while run.epoch < epochs and not _budget_spent(cfg, run):
        if should_stop is not None and should_stop():
            stopped = True
            break
        row, complete = _run_epoch(model, cfg, train_set, text_features, optimizers, run, epochs)
        _select(run, row, model, val_set, text_features)
        run.epoch += 1
        if state_dir is not None and complete:
            _save_state(state_dir, model, optimizers, cfg, run)
        if on_epoch is not None:
            on_epoch(row, epochs)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "val_accuracy")})
    bar.close()
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    model.eval()
    return TrainResult(model, run.history, run.best_epoch,
                       run.best_score if val_set is not None and run.best_epoch > 0 else None, stopped)


# ---- training state (safetensors + JSON) -------------------------------------------------------

def _state_exists(state_dir: Path) -> bool:
    return (state_dir / "state.json").is_file() or (state_dir.with_name(state_dir.name + ".old")
                                                     / "state.json").is_file()


def _optimizer_tensors(optimizers, tensors: dict[str, torch.Tensor]) -> list[dict]:
    """Optimizer states: tensors go into ``tensors`` (``opt{j}.{param}.{slot}``), the rest to JSON."""
    opt_meta = []
    for j, opt in enumerate(optimizers):
        sd = opt.state_dict()
        plain_state: dict[str, dict] = {}
        for idx, slots in sd["state"].items():
            for name, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"opt{j}.{idx}.{name}"] = value
                else:
                    plain_state.setdefault(str(idx), {})[name] = value
        opt_meta.append({"param_groups": sd["param_groups"], "plain_state": plain_state})
    return opt_meta


def _save_state(state_dir: Path, model, optimizers, cfg: TrainConfig, run: _Run) -> None:
    """Write the state after a complete epoch; the swap of folders keeps one valid copy at all times."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (run.best_state or {}).items()})
    meta = {"epoch": run.epoch, "step": run.step, "best_val": run.best_score,
            "best_epoch": run.best_epoch, "history": run.history, "config": asdict(cfg),
            "optimizers": _optimizer_tensors(optimizers, tensors),
            "has_best": run.best_state is not None}
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


def _check_same_config(state_dir: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    wanted, defaults = asdict(cfg), asdict(TrainConfig(method=cfg.method))
    # an option newer than the saved state counts as its default
    diff = sorted(k for k in wanted if saved.get(k, defaults[k]) != wanted[k])
    if diff:
        raise ResumeConflictError(
            f"{state_dir} holds a run with a different configuration ({diff}); rerun with the same "
            f"options to resume it, or use a new output folder (or disable resuming to start over)")


def _load_state(state_dir: Path, model, optimizers, cfg: TrainConfig) -> _Run:
    from safetensors.torch import load_file

    if not (state_dir / "state.json").is_file():  # interrupted between the two renames
        state_dir = state_dir.with_name(state_dir.name + ".old")
    meta = json.loads((state_dir / "state.json").read_text())
    _check_same_config(state_dir, meta["config"], cfg)
    device = next(iter(model.parameters())).device
    tensors = load_file(str(state_dir / "state.safetensors"), device=str(device))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = ({k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
                  if meta["has_best"] else None)
    for j, opt in enumerate(optimizers):
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(f"opt{j}."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, slots in meta["optimizers"][j]["plain_state"].items():
            state.setdefault(int(idx), {}).update(slots)
        opt.load_state_dict({"state": state, "param_groups": meta["optimizers"][j]["param_groups"]})
    return _Run(meta["epoch"], meta["step"], meta["best_val"], meta["best_epoch"], best_state,
                meta["history"])
