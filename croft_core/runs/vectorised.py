"""Training N configurations at once on cached features (``croft bench --search N``): CRoFT's here,
the prompt learners' (``coop``, ``cocoop``, ``locoop``) in :mod:`croft_core.runs.stacked_prompts`.

The N configurations of one (method, seed) see the same batches: the shuffle and the drawn views
depend only on the seed (:mod:`croft_core.runs.train`). Their adapter and generator matrices are
stacked over a leading configuration axis (``[N, d, d]``), every batch runs one batched forward for
all of them, and each configuration gets its own gradient because the N losses are independent and
summed (the derivative of a sum is each term's own). The optimizer is Dassl's SGD, reproduced op for
op (weight decay, momentum buffer, ``p -= lr * buf``) with each configuration's learning rate.

What is stacked per configuration: ``lr``, ``lambda1``, ``lambda2`` and ``edr_reduction`` (the EDR
reduction is chosen per configuration from the reductions every one of them computes). Every other
option (the seed, batch size, epochs and ``min_steps``, which fix the data order and step count;
``gen_steps``, the branches, the ratios, the optimizer's momentum and decay) is shared within a
group: :func:`group_configs` splits the configurations into such groups, and each is trained on its
own. The prompt learners stack ``lr``, ``ctx_init``, ``class_specific_ctx``, ``locoop_lambda`` and
``locoop_top_k`` the same way. A group whose method has no stacked step (anything but ``croft``,
``croft_noedr``, ``croft_clean``, ``coop``, ``cocoop`` and ``locoop`` with SGD) falls back to
:func:`~croft_core.runs.train.train`, one configuration after another.

The stacked steps reproduce :func:`~croft_core.objectives.steps.official_step` (defects included:
the generator loop steps every matrix and reuses the step's first adapted features, the covariate
branch uses the untransposed ``W_i`` and reversed mixing, one shared delta in the EDR term) and
:func:`~croft_core.objectives.steps.clean_step`; ``tests/test_vectorised.py`` checks both against the
library's loop (same validation accuracies, weights within float32 rounding). The training state is
not saved per epoch here (no resume); the sequential loop does that.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from croft_core.clip.features import FeatureSet, l2n
from croft_core.heads.checkpoint import CroftModel
from croft_core.objectives.terms import EDR_REDUCTIONS
from croft_core.ood.metrics import accuracy
from croft_core.runs.stacked_prompts import PROMPT_HEADS, cross_entropies, sgd_step, train_prompt_group
from croft_core.runs.train import METHODS, TrainConfig, TrainResult, lr_at_epoch, scheduled_epochs, train
from croft_core.seeds import epoch_seed

logger = logging.getLogger(__name__)

STACKED_OPTIONS = ("lr", "lambda1", "lambda2", "edr_reduction",  # CRoFT's
                   "ctx_init", "class_specific_ctx", "locoop_lambda", "locoop_top_k")  # the prompt learners'
"""Options that may differ between configurations trained together (everything else is shared; each
method ignores the other family's options, so stacking them is harmless)."""

VECTORISED_STEPS = ("official", "clean")
"""Training steps (``METHODS[m]["step"]``) with a stacked version here; the prompt learners' heads
(:data:`~croft_core.runs.stacked_prompts.PROMPT_HEADS`) are stacked by :mod:`croft_core.runs.stacked_prompts`."""

_PARAMS = ("image_weight", "text_weight", "generator_weight")


def supports_vectorised(cfg: TrainConfig) -> bool:
    """Whether configurations of ``cfg.method`` can be trained stacked (CRoFT's steps and the prompt
    learners, with SGD)."""
    spec = METHODS[cfg.method]
    return (spec["step"] in VECTORISED_STEPS or spec["head"] in PROMPT_HEADS) and cfg.optimizer == "sgd"


def group_configs(cfgs: Sequence[TrainConfig]) -> list[list[int]]:
    """Indices of ``cfgs`` grouped so that a group differs only in :data:`STACKED_OPTIONS`
    (and has ``lambda2`` zero everywhere or nowhere: the clean step skips a zero term), in order of
    first appearance."""
    groups: dict[tuple, list[int]] = {}
    blank = {name: getattr(TrainConfig(), name) for name in STACKED_OPTIONS}
    for i, cfg in enumerate(cfgs):
        groups.setdefault((replace(cfg, **blank), cfg.lambda2 == 0), []).append(i)
    return list(groups.values())


def train_many(models: Sequence[CroftModel], cfgs: Sequence[TrainConfig], train_set: FeatureSet,
               text_features: torch.Tensor, *, val_set: FeatureSet | None = None,
               progress: bool = False) -> list[TrainResult]:
    """Train ``models[i]`` with ``cfgs[i]``; stacked where :func:`supports_vectorised`, else one by one.

    Returns what :func:`~croft_core.runs.train.train` returns for each configuration (same order):
    each model holds its best-on-validation weights and its own history.
    """
    if len(models) != len(cfgs):
        raise ValueError(f"{len(models)} models for {len(cfgs)} configurations")
    results: list[TrainResult | None] = [None] * len(cfgs)
    for group in group_configs(cfgs):
        chosen = [cfgs[i] for i in group]
        if supports_vectorised(chosen[0]) and METHODS[chosen[0].method]["head"] in PROMPT_HEADS:
            done = train_prompt_group([models[i] for i in group], chosen, train_set, text_features, val_set)
        elif supports_vectorised(chosen[0]):
            done = _train_group([models[i] for i in group], chosen, train_set, text_features, val_set, progress)
        else:
            logger.info("%s has no stacked step: training %d configurations one by one", chosen[0].method, len(group))
            done = [train(models[i], train_set, text_features, cfgs[i], val_set=val_set, progress=progress)
                    for i in group]
        for i, result in zip(group, done):
            results[i] = result
    return results  # type: ignore[return-value]


# ---- stacked pieces: [N, ...] over configurations ------------------------------------------------

class _Group:
    """The shared options, per-configuration values and stacked weights of one group."""

    def __init__(self, models: Sequence[CroftModel], cfgs: Sequence[TrainConfig]):
        head, cfg = models[0].head, cfgs[0]
        device = head.image_weight.device
        self.cfg, self.step = cfg, METHODS[cfg.method]["step"]
        self.alpha, self.beta, self.tau = head.image_ratio, head.text_ratio, head.logit_scale
        self.params = [torch.stack([getattr(m.head, name).detach() for m in models]).clone().requires_grad_(True)
                       for name in _PARAMS]  # W_i, W_t, W_g: [N, d, d]
        self.buffers: list[torch.Tensor | None] = [None, None, None]  # SGD momentum, per matrix
        self.lambda1 = torch.tensor([c.lambda1 for c in cfgs], device=device)
        self.lambda2 = torch.tensor([c.lambda2 for c in cfgs], device=device)
        for c in cfgs:
            if c.edr_reduction not in EDR_REDUCTIONS:
                raise ValueError(f"edr_reduction must be one of {sorted(EDR_REDUCTIONS)}, got {c.edr_reduction!r}")
        self.reduction = [EDR_REDUCTIONS[c.edr_reduction] for c in cfgs]
        self.lr = torch.zeros(len(cfgs), device=device)

    def sgd(self, grads: Sequence[torch.Tensor | None], which: Sequence[int]) -> None:
        """torch.optim.SGD's step (single-tensor path) on the matrices ``which``, lr per configuration."""
        params, buffers = [self.params[j] for j in which], [self.buffers[j] for j in which]
        sgd_step(params, grads, buffers, [self.lr] * len(params), momentum=self.cfg.momentum,
                 weight_decay=self.cfg.weight_decay)
        for j, buffer in zip(which, buffers):
            self.buffers[j] = buffer

def _adapt(x: torch.Tensor, w: torch.Tensor, ratio: float) -> torch.Tensor:
    """``n(ratio x W^T + (1 - ratio) x)`` for every configuration: ``x [B, d]`` or ``[N, B, d]``."""
    return l2n(ratio * x @ w.transpose(-1, -2) + (1 - ratio) * x)


def _perturb(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return l2n(x @ w + x)


_ce = cross_entropies  # [N, B, K] -> [N]


def _similarity(a: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`~croft_core.objectives.terms.same_class_similarity` per configuration: ``[N]``."""
    mask = (y[:, None] == y[None, :]).to(a.dtype)
    return (mask * (a @ b.transpose(-1, -2))).sum((-2, -1)) / y.numel() ** 2


def _reduce(potential: torch.Tensor, how: Sequence[str]) -> torch.Tensor:
    """Each configuration's ``Phi`` from ``[N, R, K]``, with its own reduction."""
    ways = {"sum": lambda p: p.sum((1, 2)), "mean": lambda p: p.mean((1, 2)),
            "sample_mean": lambda p: p.sum(2).mean(1)}
    phi = None
    for name in dict.fromkeys(how):
        value = ways[name](potential)
        mask = torch.tensor([h == name for h in how], device=potential.device)
        phi = value if phi is None else torch.where(mask, value, phi)
    return phi


def _penalty(group: _Group, rows: torch.Tensor, t_hat: torch.Tensor, w_img: torch.Tensor,
             w_txt: torch.Tensor, *, shared: bool, delta: float) -> torch.Tensor:
    """:func:`~croft_core.objectives.terms.energy_gradient_penalty` per configuration: ``[N]``."""
    n, d = w_img.shape[0], w_img.shape[-1]
    delta_i = torch.full((n, d, d), float(delta), dtype=w_img.dtype, device=w_img.device, requires_grad=True)
    delta_t = delta_i if shared else delta_i.detach().clone().requires_grad_(True)
    a, b = group.alpha, group.beta
    u = l2n(a * rows @ (w_img + delta_i) + (1 - a) * rows)  # [N, R, d]
    v = l2n(b * t_hat @ (w_txt + delta_t) + (1 - b) * t_hat)  # [N, K, d]
    phi = _reduce(torch.exp(u @ v.transpose(-1, -2) / group.cfg.edr_temperature), [r[0] for r in group.reduction])
    wrt = [delta_i] if shared else [delta_i, delta_t]
    grads = torch.autograd.grad(phi.sum(), wrt, create_graph=True)  # configurations are independent
    squares = sum((g ** 2).sum((-2, -1)) for g in grads)
    by_mean = torch.tensor([r[1] == "mean" for r in group.reduction], device=squares.device)
    return torch.where(by_mean, squares / d ** 2, squares)


def _official(group: _Group, f: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`~croft_core.objectives.steps.official_step` for every configuration at once."""
    cfg, (w_i, w_t, w_g), tau = group.cfg, group.params, group.tau
    z_hat, t_hat = l2n(f), l2n(t)
    z_img, z_txt = _adapt(f, w_i, group.alpha), _adapt(t, w_t, group.beta)  # kept and reused below
    log: dict[str, torch.Tensor] = {}
    for _ in range(cfg.gen_steps if cfg.use_generator else 0):  # every loss steps every matrix
        z_cov = _perturb(z_img, w_g)
        loss_gen = _ce(tau * z_cov @ z_txt.transpose(-1, -2), y) + group.lambda1 * _similarity(z_cov, z_img, y)
        group.sgd(torch.autograd.grad(loss_gen.sum(), group.params, retain_graph=True), (0, 1, 2))
        log["loss_gen"] = loss_gen.detach()
    z_cov = _perturb(z_img, w_g)
    if cfg.use_generator and cfg.cov_branch:  # branch A, untransposed W_i and reversed mixing
        c_tilde = group.alpha * z_cov + (1 - group.alpha) * z_cov @ w_i
        loss_l1 = _ce(tau * c_tilde @ z_txt.transpose(-1, -2), y) - group.lambda1 * _similarity(z_cov, z_hat, y)
        rows = torch.cat([z_hat.expand_as(z_cov), z_cov], dim=1)
    else:
        loss_l1, rows = _ce(tau * z_cov @ z_txt.transpose(-1, -2), y), z_hat
    loss_l2 = _penalty(group, rows, t_hat, w_i, w_t, shared=True, delta=1e-4)
    loss_edr = loss_l1 + group.lambda2 * loss_l2 if cfg.use_generator else group.lambda2 * loss_l2
    loss_ce = _ce(tau * z_img @ z_txt.transpose(-1, -2), y)
    loss = loss_ce + loss_edr
    group.sgd(torch.autograd.grad(loss.sum(), group.params, allow_unused=True), (0, 1, 2))
    return {**log, "loss": loss.detach(), "loss_ce": loss_ce.detach(), "loss_l1": loss_l1.detach(),
            "loss_l2": loss_l2.detach()}


def _clean(group: _Group, f: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`~croft_core.objectives.steps.clean_step` for every configuration at once."""
    cfg, (w_i, w_t, w_g), tau = group.cfg, group.params, group.tau
    z_hat, t_hat = l2n(f), l2n(t)
    log: dict[str, torch.Tensor] = {}
    if cfg.use_generator:  # W_g alone against detached adapters
        fixed_i, txt_fixed = w_i.detach(), _adapt(t, w_t.detach(), group.beta)
        for _ in range(cfg.gen_steps):
            x_cov = _perturb(z_hat, w_g)
            loss_gen = (_ce(tau * _adapt(x_cov, fixed_i, group.alpha) @ txt_fixed.transpose(-1, -2), y)
                        + group.lambda1 * _similarity(x_cov, z_hat, y))
            group.sgd(torch.autograd.grad(loss_gen.sum(), [w_g]), (2,))
            log["loss_gen"] = loss_gen.detach()
    z_txt = _adapt(t, w_t, group.beta)
    loss_ce = _ce(tau * _adapt(f, w_i, group.alpha) @ z_txt.transpose(-1, -2), y)
    loss, rows = loss_ce, z_hat
    if cfg.use_generator:
        x_cov = _perturb(z_hat, w_g.detach())
        loss_cov = _ce(tau * _adapt(x_cov, w_i, group.alpha) @ z_txt.transpose(-1, -2), y)
        loss, rows = loss + loss_cov, torch.cat([z_hat.expand_as(x_cov), x_cov], dim=1)
        log["loss_cov"] = loss_cov.detach()
    if cfg.lambda2:  # the group shares whether lambda2 is zero (group_configs)
        loss_l2 = _penalty(group, rows, t_hat, w_i.transpose(-1, -2), w_t.transpose(-1, -2), shared=False,
                           delta=0.0)
        loss = loss + group.lambda2 * loss_l2
        log["loss_l2"] = loss_l2.detach()
    group.sgd(torch.autograd.grad(loss.sum(), [w_i, w_t]), (0, 1))
    return {**log, "loss_ce": loss_ce.detach(), "loss": loss.detach()}


# ---- the loop: train.train's epochs, batches and selection, for a group ---------------------------

@torch.no_grad()
def _val_accuracies(group: _Group, val_set: FeatureSet, text: torch.Tensor) -> list[float]:
    w_i, w_t, _ = group.params
    logits = group.tau * _adapt(val_set.first_view(), w_i, group.alpha) @ _adapt(text, w_t, group.beta).transpose(-1, -2)
    return [accuracy(per_config, val_set.labels) for per_config in logits]


def _epoch(group: _Group, train_set: FeatureSet, text: torch.Tensor, epoch: int, step: int,
           ) -> tuple[dict[str, list[float]], int, int]:
    """One epoch for every configuration: mean logged losses, batches run, steps done."""
    cfg, n, device = group.cfg, len(train_set), text.device
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    order = torch.randperm(n, generator=gen).to(device)
    view = torch.randint(train_set.views, (n,), generator=gen).to(device)
    stop = n - n % cfg.batch_size if n >= cfg.batch_size else n
    run_step = _official if group.step == "official" else _clean
    sums: dict[str, torch.Tensor] = {}
    batches = 0
    for start in range(0, stop, cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        log = run_step(group, train_set.features[view[idx], idx], text, train_set.labels[idx])
        for k, v in log.items():  # float64 sums of float32 values, as the loop's Python floats
            sums[k] = sums.get(k, 0) + v.double()
        batches, step = batches + 1, step + 1
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    return {k: (v / max(batches, 1)).tolist() for k, v in sums.items()}, batches, step


def _train_group(models: Sequence[CroftModel], cfgs: Sequence[TrainConfig], train_set: FeatureSet,
                 text: torch.Tensor, val_set: FeatureSet | None, progress: bool) -> list[TrainResult]:
    """:func:`~croft_core.runs.train.train` (without resume) for configurations that share a group."""
    device = models[0].head.image_weight.device
    train_set, text = train_set.to(device), text.to(device)
    val_set = val_set.to(device) if val_set is not None else None
    group, cfg, count = _Group(models, cfgs), cfgs[0], len(cfgs)
    epochs = scheduled_epochs(cfg, len(train_set))
    histories: list[list[dict[str, float]]] = [[] for _ in cfgs]
    best = [(-1.0, -1, None)] * count  # (score, epoch, weights)
    step = 0
    bar = tqdm(total=epochs, desc=f"train {count} x {cfg.method} (stacked)", disable=not progress)
    for epoch in range(epochs):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        lrs = [lr_at_epoch(c, epoch, epochs) for c in cfgs]
        group.lr = torch.tensor(lrs, device=device)
        means, _, step = _epoch(group, train_set, text, epoch, step)
        accs = _val_accuracies(group, val_set, text) if val_set is not None else None
        for i in range(count):
            row = {"epoch": epoch + 1, "lr": lrs[i], **{k: v[i] for k, v in means.items()}}
            if accs is not None:
                row["val_accuracy"] = accs[i]
            histories[i].append(row)
            score = row.get("val_accuracy", float(epoch))
            if score > best[i][0]:  # strict improvement, as train._select
                best[i] = (score, epoch + 1, [p[i].detach().clone() for p in group.params])
        bar.update(1)
    bar.close()
    results = []
    for i, model in enumerate(models):
        score, best_epoch, weights = best[i]
        with torch.no_grad():
            for name, value in zip(_PARAMS, weights if weights is not None else [p[i] for p in group.params]):
                getattr(model.head, name).copy_(value)
        model.eval()
        results.append(TrainResult(model, histories[i], best_epoch,
                                   score if val_set is not None and best_epoch > 0 else None))
    return results

