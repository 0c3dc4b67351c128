"""Training N prompt-learning configurations at once (``coop``, ``cocoop``, ``locoop`` under ``--search N``).

The N configurations of one (method, seed) see the same batches (the shuffle and the drawn views depend
only on the seed). Their learnable weights are stacked over a leading configuration axis: the shared
contexts ``[N_s, n, w]``, the class-specific ones ``[N_c, K, n, w]`` (kept apart so a shared context
still gets the sum of its classes' gradients; it is expanded to ``[K, n, w]`` only for the forward) and
CoCoOp's meta-nets (``[N, h, d]``, ``[N, h]``, ``[N, w, h]``, ``[N, w]``). Every batch runs ONE pass
of the frozen text tower for all configurations: ``N * K`` prompts for CoOp and LoCoOp, ``N * B * K``
for CoCoOp (each image's own prompts). The tower is tiny on the embedded model (4 layers, width 64,
16 tokens), so one configuration's step (K = 10 prompts) is mostly per-call overhead; the stacked
step of N * K prompts is bound by the tower's arithmetic instead (attention, matmuls and GELU lead
torch.profiler), which caps the saving at about 2.5x per step on a 2-core CPU (25 ms for a stacked
step of 8 configurations against 60-70 ms for their 8 steps, one thread). Numbers:
``bench/vectorised_search.py``.
The N losses are summed (each configuration's gradient is its own) and the prompt learners' SGD
(momentum 0.9, weight decay 5e-4, warm-up then cosine) is reproduced op for op with each
configuration's learning rate (:func:`sgd_step`).

Stacked per configuration: ``lr``, ``ctx_init`` (only the starting context differs),
``class_specific_ctx``, ``locoop_lambda`` and ``locoop_top_k``. Everything else (method, seed, epochs,
batch size, ``n_ctx``, ...) is shared within a group (:func:`~croft_core.runs.vectorised.group_configs`).
Validation runs stacked too (one tower call for CoOp's N * K prompts; CoCoOp's images in chunks),
and model selection is the library's own (:func:`croft_core.runs.train._select` on each
configuration's model), so histories and selected weights are those of
:func:`~croft_core.runs.train.train`; ``tests/test_vectorised.py`` checks it for the three methods.

Memory: the stacked CoCoOp step holds the text tower's activations of ``N * B * K`` prompts, at least
``N * B * K * L * w * layers`` floats (the residual stream alone; attention and the 4w MLP add several
times that). On the embedded model (N = 8, B = 1, K = 10, L = 16, w = 64, 4 layers) that is 3.3e5
floats (1.3 MB); at ViT-B-16 scale (K = 1000 classes, L = 77, w = 512, 12 layers) it is 3.8e9 floats
(15 GB) per step at N = 8, B = 1, against 1.9 GB one configuration at a time: there, train one by one
(``croft bench --search N --no-vectorise``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from croft_core.clip.features import FeatureSet, l2n
from croft_core.heads.checkpoint import CroftModel
from croft_core.heads.prompts import EVAL_PROMPTS_PER_CALL
from croft_core.objectives.steps import locoop_ood_regions
from croft_core.ood.metrics import accuracy
from croft_core.runs.train import (METHODS, TrainConfig, TrainResult, _Run, _select, lr_at_epoch,
                                   scheduled_epochs)
from croft_core.seeds import epoch_seed

PROMPT_HEADS = ("coop", "cocoop")
"""Heads (``METHODS[m]["head"]``) whose configurations :func:`train_prompt_group` stacks."""


def sgd_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
             buffers: list[torch.Tensor | None], lr: Sequence[torch.Tensor], *, momentum: float,
             weight_decay: float) -> None:
    """``torch.optim.SGD.step`` (single-tensor path) on stacked parameters ``[N, ...]``; ``lr[j]`` is
    ``[N]``, the learning rate of each configuration row of ``params[j]``; ``buffers`` are updated."""
    with torch.no_grad():
        for j, (p, grad) in enumerate(zip(params, grads)):
            if grad is None:  # no gradient reached it: SGD skips the parameter
                continue
            d_p = grad.add(p, alpha=weight_decay) if weight_decay else grad
            if momentum:
                if buffers[j] is None:
                    buffers[j] = d_p.clone().detach()
                else:
                    buffers[j].mul_(momentum).add_(d_p)
                d_p = buffers[j]
            p.addcmul_(d_p, -lr[j].view(-1, *[1] * (p.dim() - 1)))


def cross_entropies(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each configuration, ``[N, B, K] -> [N]`` (batch mean)."""
    n, b, k = logits.shape
    return F.cross_entropy(logits.reshape(n * b, k), y.repeat(n), reduction="none").view(n, b).mean(1)


class _Prompts:
    """The stacked contexts and meta-nets of one group, and their forward through the frozen tower."""

    def __init__(self, models: Sequence[CroftModel], cfgs: Sequence[TrainConfig]):
        heads = [m.head for m in models]
        first = heads[0]
        if any(h.n_ctx != first.n_ctx or not torch.equal(h.token_ids, first.token_ids) for h in heads):
            raise ValueError("configurations trained together need the same classes and n_ctx")
        self.tower, self.tau, self.n_ctx, self.token_ids = first.tower, first.logit_scale, first.n_ctx, first.token_ids
        shared = [i for i, h in enumerate(heads) if h.ctx.dim() == 2]
        specific = [i for i, h in enumerate(heads) if h.ctx.dim() == 3]
        self.rows = [rows for rows in (shared, specific) if rows]  # configurations of each context tensor
        self.inverse = torch.tensor(shared + specific).argsort().to(first.ctx.device)
        self.ctx = [torch.stack([heads[i].ctx.detach() for i in rows]).clone().requires_grad_(True)
                    for rows in self.rows]
        self.meta = ([torch.stack([p.detach() for p in zip_p]).clone().requires_grad_(True)
                      for zip_p in zip(*(h.meta_net.parameters() for h in heads))]
                     if first.meta_net is not None else [])  # W1 [N, h, d], b1 [N, h], W2 [N, w, h], b2 [N, w]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self.top_k = [c.locoop_top_k for c in cfgs]
        self.lam = torch.tensor([c.locoop_lambda for c in cfgs], device=first.ctx.device)

    @property
    def params(self) -> list[torch.Tensor]:
        return self.ctx + self.meta

    def contexts(self) -> torch.Tensor:
        """Every configuration's per-class context ``[N, K, n, w]`` (shared ones expanded)."""
        k = len(self.token_ids)
        parts = [c[:, None].expand(-1, k, -1, -1) if c.dim() == 3 else c for c in self.ctx]
        return torch.cat(parts)[self.inverse]

    def shifts(self, z: torch.Tensor) -> torch.Tensor:
        """CoCoOp's meta-net of every configuration on the normalised images ``z [B, d]``: ``[N, B, w]``."""
        w1, b1, w2, b2 = self.meta
        h = torch.relu(torch.baddbmm(b1[:, None], z.expand(len(w1), -1, -1), w1.transpose(1, 2)))
        return torch.baddbmm(b2[:, None], h, w2.transpose(1, 2))

    def text(self, ctx: torch.Tensor) -> torch.Tensor:
        """Raw text features ``[N, M, K, d]`` of the prompts with contexts ``[N, M, K, n, w]``, one tower call."""
        emb = self.tower.embed_tokens(self.token_ids)  # [K, L, w]
        n, m, k = ctx.shape[:3]
        prompts = torch.cat([emb[:, :1].expand(n, m, -1, -1, -1), ctx.to(emb.dtype),
                             emb[:, 1 + self.n_ctx:].expand(n, m, -1, -1, -1)], dim=3)  # [N, M, K, L, w]
        out = self.tower(prompts.flatten(0, 2), self.token_ids.argmax(-1).repeat(n * m))
        return out.view(n, m, k, -1)

    def cosines(self, f: torch.Tensor, local: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`~croft_core.heads.prompts.PromptHead.cosines` of every configuration:
        ``[N, B, K]`` and, with ``local [B, P, d]``, ``[N, B, P, K]``."""
        z, ctx = l2n(f), self.contexts()
        if not self.meta:  # CoOp: one set of K prompts per configuration
            t = l2n(self.text(ctx[:, None]))  # [N, 1, K, d]
            cos = z @ t.transpose(-1, -2)  # [N, 1, B, K]
            local_cos = l2n(local) @ t.transpose(-1, -2) if local is not None else None  # [N, B, P, K]
            return cos[:, 0], local_cos
        t = l2n(self.text(ctx[:, None] + self.shifts(z)[:, :, None, None, :]))  # [N, B, K, d]
        cos = torch.einsum("bd,nbkd->nbk", z, t)
        return cos, (torch.einsum("bpd,nbkd->nbpk", l2n(local), t) if local is not None else None)

    @torch.no_grad()
    def val_accuracies(self, val_set: FeatureSet) -> list[float]:
        """Every configuration's top-1 accuracy on the first view of ``val_set`` (CoCoOp's images in
        chunks of at most ``EVAL_PROMPTS_PER_CALL`` prompts, as the head's own inference)."""
        f, n = val_set.first_view(), len(self.inverse)
        step = len(f) if not self.meta else max(1, EVAL_PROMPTS_PER_CALL // (n * len(self.token_ids)))
        cos = torch.cat([self.cosines(f[i:i + step])[0] for i in range(0, len(f), step)], dim=1)  # [N, V, K]
        return [accuracy(self.tau * c, val_set.labels) for c in cos]

    def write_back(self, models: Sequence[CroftModel]) -> None:
        """Copy each configuration's weights into its model (for validation and selection)."""
        with torch.no_grad():
            for rows, ctx in zip(self.rows, self.ctx):
                for r, i in enumerate(rows):
                    models[i].head.ctx.copy_(ctx[r])
            for i, model in enumerate(models if self.meta else ()):  # CoCoOp's meta-nets
                for p, stacked in zip(model.head.meta_net.parameters(), self.meta):
                    p.copy_(stacked[i])


def _supervised(stack: _Prompts, f, local, y) -> dict[str, torch.Tensor]:
    """:func:`~croft_core.objectives.steps.supervised_step` of every configuration: the summed
    cross-entropies' gradients (the step itself is :func:`sgd_step`)."""
    loss = cross_entropies(stack.tau * stack.cosines(f)[0], y)
    return {"loss": loss}


def _locoop(stack: _Prompts, f, local, y) -> dict[str, torch.Tensor]:
    """:func:`~croft_core.objectives.steps.locoop_step`'s loss for every configuration (own lambda, top-K)."""
    cos, local_cos = stack.cosines(f, local)
    loss_id = cross_entropies(stack.tau * cos, y)
    local_logits = stack.tau * local_cos  # [N, B, P, K]
    regions = torch.stack([locoop_ood_regions(lg, y, k) for lg, k in zip(local_logits.detach(), stack.top_k)])
    per_region = -(local_logits.softmax(-1) * local_logits.log_softmax(-1)).sum(-1)  # [N, B, P]
    entropy = (per_region * regions).sum((1, 2)) / regions.sum((1, 2)).clamp(min=1)  # 0 without regions
    return {"loss": loss_id - stack.lam * entropy, "loss_id": loss_id, "local_entropy": entropy}


def _epoch(stack: _Prompts, cfg: TrainConfig, epoch: int, lrs: list[torch.Tensor], train_set: FeatureSet,
           step: int) -> tuple[dict[str, list[float]], int]:
    """One epoch of every configuration (``train._run_epoch``'s batches): mean logged losses, steps done."""
    n, device = len(train_set), stack.token_ids.device
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    order = torch.randperm(n, generator=gen).to(device)
    view = torch.randint(train_set.views, (n,), generator=gen).to(device)
    stop = n - n % cfg.batch_size if n >= cfg.batch_size else n
    locoop = METHODS[cfg.method]["step"] == "locoop"
    loss_of = _locoop if locoop else _supervised
    sums: dict[str, torch.Tensor] = {}
    batches = 0
    for start in range(0, stop, cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        local = train_set.local[view[idx], idx].float() if locoop else None
        log = loss_of(stack, train_set.features[view[idx], idx], local, train_set.labels[idx])
        grads = torch.autograd.grad(log["loss"].sum(), stack.params)
        sgd_step(stack.params, grads, stack.buffers, lrs, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        for k, v in log.items():  # float64 sums of float32 values, as the loop's Python floats
            sums[k] = sums.get(k, 0) + v.detach().double()
        batches, step = batches + 1, step + 1
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    return {k: (v / max(batches, 1)).tolist() for k, v in sums.items()}, step


def train_prompt_group(models: Sequence[CroftModel], cfgs: Sequence[TrainConfig], train_set: FeatureSet,
                       text: torch.Tensor, val_set: FeatureSet | None) -> list[TrainResult]:
    """:func:`~croft_core.runs.train.train` (without resume) for prompt configurations of one group."""
    cfg, device = cfgs[0], models[0].head.ctx.device
    if METHODS[cfg.method]["step"] == "locoop" and train_set.local is None:
        raise ValueError("LoCoOp trains on local image features: extract the training split with "
                         "local=True (prepare_features(..., local=True))")
    train_set, text = train_set.to(device), text.to(device)
    val_set = val_set.to(device) if val_set is not None else None
    stack, runs = _Prompts(models, cfgs), [_Run() for _ in cfgs]
    epochs, step = scheduled_epochs(cfg, len(train_set)), 0
    for epoch in range(epochs):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        per_config = [lr_at_epoch(c, epoch, epochs) for c in cfgs]
        lr = torch.tensor(per_config, device=device)
        lrs = [lr[rows] for rows in stack.rows] + [lr] * len(stack.meta)  # per row of each stacked tensor
        means, step = _epoch(stack, cfg, epoch, lrs, train_set, step)
        stack.write_back(models)
        accs = stack.val_accuracies(val_set) if val_set is not None else None
        for i, (model, run) in enumerate(zip(models, runs)):
            row = {"epoch": epoch + 1, "lr": per_config[i], **{k: v[i] for k, v in means.items()}}
            if accs is not None:
                row["val_accuracy"] = accs[i]
            _select(run, row, model.eval(), None, text)  # selection on the row's accuracy
            run.epoch, run.step = epoch + 1, step
    results = []
    for model, run in zip(models, runs):
        if run.best_state is not None:
            model.load_state_dict(run.best_state)
        results.append(TrainResult(model.eval(), run.history, run.best_epoch,
                                   run.best_score if val_set is not None and run.best_epoch > 0 else None))
    return results
