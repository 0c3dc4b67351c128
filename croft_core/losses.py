"""CRoFT objective terms as plain functions of tensors, and the two training steps.

Terms (CROFT_SPEC.md §2):

- :func:`same_class_similarity` — ``D = (1/N^2) sum_{n,m} 1[y_n = y_m] <a_n, b_m>``, the similarity of
  generated covariate features to same-class features (the ``lambda1`` term).
- :func:`energy_gradient_penalty` — the energy-distribution-reshaping (EDR) term: the squared norm
  of the gradient, w.r.t. the adapter matrices, of ``Phi = reduce_{n,k} exp(<u_n, v_k> / T)``, i.e. of
  the exponentiated negative energies; needs a double backward (``create_graph=True``).

Steps:

- :func:`official_step` reproduces the official training step exactly, defects included (generator
  inner loop that steps *every* optimizer with ``retain_graph``, the untransposed ``W_i`` and reversed
  mixing in the covariate branch, the shared-delta gradient, branch A/B, both reductions). What it
  does is selected by explicit arguments, never by dataset names (spec §5 item 3).
- :func:`clean_step` takes the decisions of spec §5: the generator step updates only ``W_g`` against
  detached adapters; the adapter step updates only ``(W_i, W_t)`` with ``W_g`` frozen; one adapter
  map everywhere; ``G_i`` and ``G_t`` computed directly (``||G_i||^2 + ||G_t||^2``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .methods import l2n

EDR_REDUCTIONS = {  # name -> (reduction of Phi over (n, k), reduction of G^2 over matrix entries)
    "sum_mean": ("sum", "mean"),  # official Setup-I ("46" datasets)
    "mean_sum": ("mean", "sum"),  # official Setup-II (PACS / VLCS)
    "sample_sum": ("sample_mean", "sum"),  # clean default: per-sample mean of Phi, sum of squares
}


def same_class_similarity(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(1/N^2) sum_{n,m} 1[y_n = y_m] <a_n, b_m>`` for ``a, b [N, d]`` and ``labels [N]``."""
    mask = (labels[:, None] == labels[None, :]).to(a.dtype)  # [N, N], diagonal included
    return (mask * (a @ b.T)).sum() / labels.numel() ** 2


def energy_gradient_penalty(
    features: torch.Tensor,
    text_features: torch.Tensor,
    image_weight: torch.Tensor,
    text_weight: torch.Tensor,
    *,
    image_ratio: float = 0.2,
    text_ratio: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "sum_mean",
    combine: str = "shared",
    delta: float = 1e-4,
) -> torch.Tensor:
    """CRoFT's energy-gradient penalty ``L2`` (CROFT_SPEC.md §2 step 3.4).

    With ``A_i = W_i + delta_i`` and ``A_t = W_t + delta_t`` (``delta`` a constant matrix):

    ``u_n = n(alpha x_n A_i + (1 - alpha) x_n)``, ``v_k = n(beta t_k A_t + (1 - beta) t_k)``,
    ``Phi = reduce_{n,k} exp(<u_n, v_k> / T)``, ``G_* = dPhi / d delta_*``.

    Matrices multiply from the right (``x @ A``), as in the official EDR code; pass ``W.T`` to use
    the forward convention ``x W^T``. The result is differentiable w.r.t. every input (double
    backward).

    Args:
        features: ``[N, d]`` image rows (official: zero-shot features, plus generated ones).
        text_features: ``[K, d]`` text rows (official: normalised zero-shot text features).
        image_weight: ``[d, d]`` image adapter matrix.
        text_weight: ``[d, d]`` text adapter matrix.
        image_ratio: alpha.
        text_ratio: beta.
        temperature: T of the energy (official: 1, with no logit scale).
        reduction: key of :data:`EDR_REDUCTIONS`.
        combine: ``"shared"`` — one delta for both matrices, so ``G = G_i + G_t`` (official);
            ``"separate"`` — ``||G_i||^2 + ||G_t||^2``, the norm of the full gradient.
        delta: value of the perturbation the gradient is taken at (official 1e-4; 0 is exact).

    Returns:
        Scalar penalty.
    """
    if reduction not in EDR_REDUCTIONS:
        raise ValueError(f"reduction must be one of {sorted(EDR_REDUCTIONS)}, got {reduction!r}")
    if combine not in ("shared", "separate"):
        raise ValueError(f"combine must be 'shared' or 'separate', got {combine!r}")
    phi_reduction, penalty_reduction = EDR_REDUCTIONS[reduction]
    d = image_weight.shape[0]
    delta_i = torch.full((d, d), float(delta), dtype=image_weight.dtype, device=image_weight.device,
                         requires_grad=True)
    delta_t = delta_i if combine == "shared" else delta_i.detach().clone().requires_grad_(True)

    u = l2n(image_ratio * features @ (image_weight + delta_i) + (1 - image_ratio) * features)
    v = l2n(text_ratio * text_features @ (text_weight + delta_t) + (1 - text_ratio) * text_features)
    potential = torch.exp(u @ v.T / temperature)  # [N, K]
    if phi_reduction == "sum":
        phi = potential.sum()
    elif phi_reduction == "mean":
        phi = potential.mean()
    else:
        phi = potential.sum(dim=1).mean()

    wrt = [delta_i] if combine == "shared" else [delta_i, delta_t]
    grads = torch.autograd.grad(phi, wrt, create_graph=True)
    squares = sum((g ** 2).sum() for g in grads)
    return squares / d ** 2 if penalty_reduction == "mean" else squares


def _step_all(loss: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Dassl's ``model_backward_and_update``: zero all, backward (graph kept), step all."""
    for opt in optimizers:
        opt.zero_grad()
    loss.backward(retain_graph=True)
    for opt in optimizers:
        opt.step()


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
        head: a :class:`~croft_core.model.CroftHead` with ``generator_input="adapted"``.
        f: ``[N, d]`` raw image features; t: ``[K, d]`` class text features; y: ``[N]`` labels.
        optimizers: ``(adapter optimizer, generator optimizer)``; every loss steps all of them.
        lambda1, lambda2: weights of the similarity and energy-gradient terms.
        gen_steps: generator inner-loop steps (``gen_step``).
        use_generator: ``WCCF``; False drops the generator loop and L1.
        cov_branch: branch A (covariate CE on the re-adapted generated features, ``-lambda1 D``,
            generated rows in the penalty) vs branch B (CE on the generated features only).
        edr_reduction, edr_temperature, edr_delta: see :func:`energy_gradient_penalty`.

    Returns:
        Scalar losses of the step, for logging.
    """
    alpha, tau = head.image_ratio, head.logit_scale
    z_hat, t_hat = l2n(f), l2n(t)
    z_img, z_txt = head.adapt_image(f), head.adapt_text(t)  # step 0: kept and reused below
    logits = tau * z_img @ z_txt.T

    log: dict[str, float] = {}
    if use_generator:
        for _ in range(gen_steps):
            z_cov = head.perturb(z_img)
            loss_gen = (F.cross_entropy(tau * z_cov @ z_txt.T, y)
                        + lambda1 * same_class_similarity(z_cov, z_img, y))
            _step_all(loss_gen, optimizers)
            log["loss_gen"] = loss_gen.detach().item()

    z_cov = head.perturb(z_img)  # regenerate with the updated W_g
    if use_generator and cov_branch:  # branch A
        sim = same_class_similarity(z_cov, z_hat, y)
        # untransposed W_i and reversed mixing, as the official EDR block (spec §5 item 6)
        c_tilde = alpha * z_cov + (1 - alpha) * z_cov @ head.image_weight
        loss_l1 = F.cross_entropy(tau * c_tilde @ z_txt.T, y) - lambda1 * sim
        rows = torch.cat([z_hat, z_cov])  # [2N, d]
    else:  # branch B
        loss_l1 = F.cross_entropy(tau * z_cov @ z_txt.T, y)
        rows = z_hat
    loss_l2 = energy_gradient_penalty(
        rows, t_hat, head.image_weight, head.text_weight, image_ratio=alpha,
        text_ratio=head.text_ratio, temperature=edr_temperature, reduction=edr_reduction,
        combine="shared", delta=edr_delta)
    loss_edr = loss_l1 + lambda2 * loss_l2 if use_generator else lambda2 * loss_l2
    loss_ce = F.cross_entropy(logits, y)
    loss = loss_ce + loss_edr
    _step_all(loss, optimizers)
    log.update(loss=loss.detach().item(), loss_ce=loss_ce.detach().item(), loss_l1=loss_l1.detach().item(),
               loss_l2=loss_l2.detach().item())
    return log


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
        head: a :class:`~croft_core.model.CroftHead` with ``generator_input="zeroshot"``.
        optimizers: ``(adapter optimizer, generator optimizer)``, each stepped on its own loss.
        Other arguments as :func:`official_step`.
    """
    adapter_opt, generator_opt = optimizers
    tau = head.logit_scale
    z_hat, t_hat = l2n(f), l2n(t)
    log: dict[str, float] = {}

    if use_generator:
        w_i, w_t = head.image_weight.detach(), head.text_weight.detach()
        z_txt_fixed = head.adapt_text(t, w_t)
        for _ in range(gen_steps):
            x_cov = head.perturb(z_hat)
            loss_gen = (F.cross_entropy(tau * head.adapt_image(x_cov, w_i) @ z_txt_fixed.T, y)
                        + lambda1 * same_class_similarity(x_cov, z_hat, y))
            generator_opt.zero_grad()
            loss_gen.backward()
            generator_opt.step()
            log["loss_gen"] = loss_gen.detach().item()

    z_txt = head.adapt_text(t)
    loss_ce = F.cross_entropy(tau * head.adapt_image(f) @ z_txt.T, y)
    loss = loss_ce
    rows = z_hat
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
    adapter_opt.zero_grad()
    loss.backward()
    adapter_opt.step()
    log.update(loss=loss.detach().item(), loss_ce=loss_ce.detach().item())
    return log


def supervised_step(head, f: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                    optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, float]:
    """Cross-entropy step for the baselines (CLIP-Adapter, Tip-Adapter-F, linear probe)."""
    loss = F.cross_entropy(head(f, t), y)
    for opt in optimizers:
        opt.zero_grad()
    loss.backward()
    for opt in optimizers:
        opt.step()
    return {"loss": loss.detach().item()}
