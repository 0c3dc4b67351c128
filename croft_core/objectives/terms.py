"""CRoFT's objective terms as pure functions of tensors (CROFT_SPEC.md §2).

- :func:`same_class_similarity` — ``D = (1/N^2) sum_{n,m} 1[y_n = y_m] <a_n, b_m>``, the similarity of
  generated covariate features to same-class features (the ``lambda1`` term).
- :func:`energy_gradient_penalty` — the energy-distribution-reshaping (EDR) term: the squared norm
  of the gradient, w.r.t. the adapter matrices, of ``Phi = reduce_{n,k} exp(<u_n, v_k> / T)``, i.e. of
  the exponentiated negative energies; needs a double backward (``create_graph=True``).

Nothing here steps an optimizer; the training steps that combine these terms are in
:mod:`croft_core.objectives.steps`.
"""

from __future__ import annotations

import torch

from croft_core.clip.features import l2n

EDR_REDUCTIONS = {  # name -> (reduction of Phi over (n, k), reduction of G^2 over matrix entries)
    "sum_mean": ("sum", "mean"),  # official Setup-I ("46" datasets)
    "mean_sum": ("mean", "sum"),  # official Setup-II (PACS / VLCS)
    "sample_sum": ("sample_mean", "sum"),  # clean default: per-sample mean of Phi, sum of squares
}


def same_class_similarity(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(1/N^2) sum_{n,m} 1[y_n = y_m] <a_n, b_m>`` for ``a, b [N, d]`` and ``labels [N]``."""
    mask = (labels[:, None] == labels[None, :]).to(a.dtype)  # [N, N], diagonal included
    return (mask * (a @ b.T)).sum() / labels.numel() ** 2


def _check_edr_options(reduction: str, combine: str) -> None:
    if reduction not in EDR_REDUCTIONS:
        raise ValueError(f"reduction must be one of {sorted(EDR_REDUCTIONS)}, got {reduction!r}")
    if combine not in ("shared", "separate"):
        raise ValueError(f"combine must be 'shared' or 'separate', got {combine!r}")


def _reduce_potential(potential: torch.Tensor, how: str) -> torch.Tensor:
    """``Phi`` from ``exp(<u_n, v_k> / T) [N, K]``: total sum, mean, or per-sample sum averaged."""
    if how == "sum":
        return potential.sum()
    if how == "mean":
        return potential.mean()
    return potential.sum(dim=1).mean()


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

    With ``A_i = W_i + delta_i``, ``A_t = W_t + delta_t`` (``delta`` a constant matrix),
    ``u_n = n(alpha x_n A_i + (1 - alpha) x_n)``, ``v_k = n(beta t_k A_t + (1 - beta) t_k)``,
    ``Phi = reduce_{n,k} exp(<u_n, v_k> / T)`` and ``G_* = dPhi / d delta_*``. Matrices multiply
    from the right (``x @ A``), as in the official EDR code; pass ``W.T`` for the forward
    convention ``x W^T``. Differentiable w.r.t. every input (double backward).

    Args:
        features: ``[N, d]`` image rows; text_features: ``[K, d]`` text rows.
        image_weight, text_weight: ``[d, d]`` adapter matrices.
        image_ratio, text_ratio: alpha, beta.
        temperature: T of the energy (official: 1, with no logit scale).
        reduction: key of :data:`EDR_REDUCTIONS`.
        combine: ``"shared"`` — one delta for both matrices, so ``G = G_i + G_t`` (official);
            ``"separate"`` — ``||G_i||^2 + ||G_t||^2``, the norm of the full gradient.
        delta: value of the perturbation the gradient is taken at (official 1e-4; 0 is exact).

    Returns:
        Scalar penalty.
    """
    _check_edr_options(reduction, combine)
    phi_reduction, penalty_reduction = EDR_REDUCTIONS[reduction]
    d = image_weight.shape[0]
    delta_i = torch.full((d, d), float(delta), dtype=image_weight.dtype, device=image_weight.device,
                         requires_grad=True)
    delta_t = delta_i if combine == "shared" else delta_i.detach().clone().requires_grad_(True)

    u = l2n(image_ratio * features @ (image_weight + delta_i) + (1 - image_ratio) * features)
    v = l2n(text_ratio * text_features @ (text_weight + delta_t) + (1 - text_ratio) * text_features)
    phi = _reduce_potential(torch.exp(u @ v.T / temperature), phi_reduction)  # from [N, K]

    wrt = [delta_i] if combine == "shared" else [delta_i, delta_t]
    grads = torch.autograd.grad(phi, wrt, create_graph=True)
    squares = sum((g ** 2).sum() for g in grads)
    return squares / d ** 2 if penalty_reduction == "mean" else squares
