"""The three training steps; each computes its losses from :mod:`croft_core.objectives.terms` and steps
its optimizers.

- :func:`official_step` reproduces the official training step exactly, defects included (generator
  inner loop that steps *every* optimizer with ``retain_graph``, the untransposed ``W_i`` and reversed
  mixing in the covariate branch, the shared-delta gradient, branch A/B, both reductions). What it
  does is selected by explicit arguments, never by dataset names (spec §5 item 3).
- :func:`clean_step` takes the decisions of spec §5: the generator step updates only ``W_g`` against
  detached adapters; the adapter step updates only ``(W_i, W_t)`` with ``W_g`` frozen; one adapter
  map everywhere; ``G_i`` and ``G_t`` computed directly (``||G_i||^2 + ||G_t||^2``).
- :func:`supervised_step` — cross-entropy for the baselines.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from croft_core.objectives.terms import energy_gradient_penalty, same_class_similarity
from croft_core.clip.features import l2n


def _step_all(loss: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Dassl's ``model_backward_and_update``: zero all, backward (graph kept), step all."""
    for opt in optimizers:
        opt.zero_grad()
    loss.backward(retain_graph=True)
    for opt in optimizers:
        opt.step()


def _official_generator_loop(head, z_img, z_txt, y, optimizers, lambda1: float,
                             gen_steps: int) -> dict[str, float]:
    """Step 1: ``gen_steps`` generator losses, each stepping every optimizer (graph kept)."""
    log: dict[str, float] = {}
    for _ in range(gen_steps):
        z_cov = head.perturb(z_img)
        loss_gen = (F.cross_entropy(head.logit_scale * z_cov @ z_txt.T, y)
                    + lambda1 * same_class_similarity(z_cov, z_img, y))
        _step_all(loss_gen, optimizers)
        log["loss_gen"] = loss_gen.detach().item()
    return log


def _official_covariate_loss(head, z_img, z_hat, z_txt, y, lambda1: float,
                             branch_a: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3: ``(L1, rows of the penalty)`` on features regenerated with the updated ``W_g``."""
    alpha, tau = head.image_ratio, head.logit_scale
    z_cov = head.perturb(z_img)
    if branch_a:
        sim = same_class_similarity(z_cov, z_hat, y)
        # untransposed W_i and reversed mixing, as the official EDR block (spec §5 item 6)
        c_tilde = alpha * z_cov + (1 - alpha) * z_cov @ head.image_weight
        return F.cross_entropy(tau * c_tilde @ z_txt.T, y) - lambda1 * sim, torch.cat([z_hat, z_cov])
    return F.cross_entropy(tau * z_cov @ z_txt.T, y), z_hat


def official_step(
    head,
    f: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    optimizers: Sequence[torch.optim.Optimizer],
    *,
    lambda1: float,
    lambda2: float,
    gen_steps: int = 1,
    use_generator: bool = True,
    cov_branch: bool = True,
    edr_reduction: str = "sum_mean",
    edr_temperature: float = 1.0,
    edr_delta: float = 1e-4,
) -> dict[str, float]:
    """One official CRoFT training step (``CRoFT.forward_backward``), defects included.

    Args:
        head: a :class:`~croft_core.heads.checkpoint.CroftHead` with ``generator_input="adapted"``.
        f: ``[N, d]`` raw image features; t: ``[K, d]`` class text features; y: ``[N]`` labels.
        optimizers: ``(adapter optimizer, generator optimizer)``; every loss steps all of them.
        lambda1, lambda2: weights of the similarity and energy-gradient terms.
        gen_steps: generator inner-loop steps (``gen_step``).
        use_generator: ``WCCF``; False drops the generator loop and L1.
        cov_branch: branch A (covariate CE on the re-adapted generated features, ``-lambda1 D``,
            generated rows in the penalty) vs branch B (CE on the generated features only).
        edr_reduction, edr_temperature, edr_delta: see
            :func:`~croft_core.objectives.terms.energy_gradient_penalty`.

    Returns:
        Scalar losses of the step, for logging.
    """
    z_hat, t_hat = l2n(f), l2n(t)
    z_img, z_txt = head.adapt_image(f), head.adapt_text(t)  # step 0: kept and reused below
    logits = head.logit_scale * z_img @ z_txt.T
    log: dict[str, float] = {}
    if use_generator:
        log.update(_official_generator_loop(head, z_img, z_txt, y, optimizers, lambda1, gen_steps))
    loss_l1, rows = _official_covariate_loss(head, z_img, z_hat, z_txt, y, lambda1,
                                             use_generator and cov_branch)
    loss_l2 = energy_gradient_penalty(
        rows, t_hat, head.image_weight, head.text_weight, image_ratio=head.image_ratio,
        text_ratio=head.text_ratio, temperature=edr_temperature, reduction=edr_reduction,
        combine="shared", delta=edr_delta)
    loss_edr = loss_l1 + lambda2 * loss_l2 if use_generator else lambda2 * loss_l2
    loss_ce = F.cross_entropy(logits, y)
    loss = loss_ce + loss_edr
    _step_all(loss, optimizers)
    log.update(loss=loss.detach().item(), loss_ce=loss_ce.detach().item(),
               loss_l1=loss_l1.detach().item(), loss_l2=loss_l2.detach().item())
    return log


def _clean_generator_steps(head, z_hat, t, y, generator_opt, lambda1: float,
                           gen_steps: int) -> dict[str, float]:
    """Clean step 1: ``W_g`` alone against detached adapters, ``gen_steps`` times."""
    log: dict[str, float] = {}
    w_i, w_t = head.image_weight.detach(), head.text_weight.detach()
    z_txt_fixed = head.adapt_text(t, w_t)
    for _ in range(gen_steps):
        x_cov = head.perturb(z_hat)
        loss_gen = (F.cross_entropy(head.logit_scale * head.adapt_image(x_cov, w_i) @ z_txt_fixed.T, y)
                    + lambda1 * same_class_similarity(x_cov, z_hat, y))
        generator_opt.zero_grad()
        loss_gen.backward()
        generator_opt.step()
        log["loss_gen"] = loss_gen.detach().item()
    return log


def _clean_adapter_loss(head, f, t, y, *, lambda2: float, use_generator: bool, edr_reduction: str,
                        edr_temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clean step 2: ``CE(ID) [+ CE(adapt(x^c))] [+ lambda2 ||G||^2]`` with ``W_g`` frozen."""
    tau = head.logit_scale
    z_hat, t_hat = l2n(f), l2n(t)
    z_txt = head.adapt_text(t)
    loss_ce = F.cross_entropy(tau * head.adapt_image(f) @ z_txt.T, y)
    loss, rows, log = loss_ce, z_hat, {}
    if use_generator:
        x_cov = head.perturb(z_hat, head.generator_weight.detach())
        loss_cov = F.cross_entropy(tau * head.adapt_image(x_cov) @ z_txt.T, y)
        loss = loss + loss_cov
        rows = torch.cat([z_hat, x_cov])  # [2N, d]
        log["loss_cov"] = loss_cov.detach().item()
    if lambda2:
        loss_l2 = energy_gradient_penalty(
            rows, t_hat, head.image_weight.T, head.text_weight.T, image_ratio=head.image_ratio,
            text_ratio=head.text_ratio, temperature=edr_temperature, reduction=edr_reduction,
            combine="separate", delta=0.0)
        loss = loss + lambda2 * loss_l2
        log["loss_l2"] = loss_l2.detach().item()
    log["loss_ce"] = loss_ce.detach().item()
    return loss, log


def clean_step(
    head,
    f: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    optimizers: Sequence[torch.optim.Optimizer],
    *,
    lambda1: float,
    lambda2: float,
    gen_steps: int = 1,
    use_generator: bool = True,
    edr_reduction: str = "sample_sum",
    edr_temperature: float = 1.0,
) -> dict[str, float]:
    """One step of the clean CRoFT objective (spec §5 decisions 4-7): an explicit min-max.

    1. Generator (``W_g`` only, adapters detached), ``gen_steps`` times: perturb the CLIP feature,
       ``x^c = n(f̂ W_g + f̂)``, and minimise ``CE(tau adapt(x^c) z_T^T, y) + lambda1 D(x^c, f̂)``:
       stay classifiable while moving away from same-class features (worst-case covariate shift).
    2. Adapters (``W_i, W_t`` only, ``W_g`` frozen): minimise ``CE(ID) + CE(adapt(x^c))
       + lambda2 (||dPhi/dW_i||^2 + ||dPhi/dW_t||^2)`` with ``Phi`` over the ID and generated rows,
       computed through the same adapter maps as the forward pass (so ``Phi`` is exactly the
       exponentiated negative energy, at temperature T, of the features the classifier sees).

    Args:
        head: a :class:`~croft_core.heads.checkpoint.CroftHead` with ``generator_input="zeroshot"``.
        optimizers: ``(adapter optimizer, generator optimizer)``, each stepped on its own loss.
        Other arguments as :func:`official_step`.
    """
    adapter_opt, generator_opt = optimizers
    log: dict[str, float] = {}
    if use_generator:
        log.update(_clean_generator_steps(head, l2n(f), t, y, generator_opt, lambda1, gen_steps))
    loss, adapter_log = _clean_adapter_loss(head, f, t, y, lambda2=lambda2, use_generator=use_generator,
                                            edr_reduction=edr_reduction,
                                            edr_temperature=edr_temperature)
    adapter_opt.zero_grad()
    loss.backward()
    adapter_opt.step()
    log.update(adapter_log, loss=loss.detach().item())
    return log


def supervised_step(head, f: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                    optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, float]:
    """Cross-entropy step for the trained baselines (CLIP-Adapter, Tip-Adapter-F)."""
    loss = F.cross_entropy(head(f, t), y)
    for opt in optimizers:
        opt.zero_grad()
    loss.backward()
    for opt in optimizers:
        opt.step()
    return {"loss": loss.detach().item()}


def locoop_ood_regions(local_logits: torch.Tensor, y: torch.Tensor, top_k: int) -> torch.Tensor:
    """LoCoOp's OOD regions: ``[B, P]`` True where the label is not among a region's top-K classes.

    ``top_k`` is capped at ``K - 1`` (with ``K`` or more every region would contain the label).
    """
    k = max(1, min(top_k, local_logits.shape[-1] - 1))
    top = local_logits.topk(k, dim=-1).indices  # [B, P, k]
    return ~(top == y[:, None, None]).any(dim=-1)


def locoop_entropy(local_logits: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the class distribution on the selected regions (0 when there are none)."""
    chosen = local_logits[regions]  # [R, K]
    if not len(chosen):
        return local_logits.sum() * 0.0
    return -(chosen.softmax(-1) * chosen.log_softmax(-1)).sum(-1).mean()


def locoop_step(head, f: torch.Tensor, local: torch.Tensor, y: torch.Tensor,
                optimizers: Sequence[torch.optim.Optimizer], *, lam: float = 0.25,
                top_k: int = 200) -> dict[str, float]:
    """LoCoOp (Miyai et al., NeurIPS 2023): CoOp's cross-entropy minus ``lam`` times the entropy of
    the local regions whose top-K classes exclude the label (entropy maximisation pushes those
    regions, background and other objects, away from every ID class).

    Args:
        head: a :class:`~croft_core.heads.prompts.PromptHead`.
        f: ``[B, d]`` global image features; ``local``: ``[B, P, d]`` local features.
        y: ``[B]`` labels. ``lam``: the paper's 0.25; 0 is CoOp. ``top_k``: the paper's 200.
    """
    cos, local_cos = head.cosines(f, local)
    loss_id = F.cross_entropy(head.logit_scale * cos, y)
    local_logits = head.logit_scale * local_cos  # [B, P, K]
    entropy = locoop_entropy(local_logits, locoop_ood_regions(local_logits.detach(), y, top_k))
    loss = loss_id - lam * entropy
    for opt in optimizers:
        opt.zero_grad()
    loss.backward()
    for opt in optimizers:
        opt.step()
    return {"loss": loss.detach().item(), "loss_id": loss_id.detach().item(),
            "local_entropy": entropy.detach().item()}
