"""WiSE-style weight-space interpolation of a fine-tuned head toward its zero-shot initialisation.

WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022) evaluates
``theta(alpha) = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned`` without retraining;
``alpha = 1`` is the fine-tuned head, ``alpha = 0`` the zero-shot one. Here only the *head* is
interpolated (the backbone is frozen), for every head whose weights have a zero-shot point:

- CRoFT: ``W_i = W_t = W_g = I`` (the identity init makes it zero-shot CLIP);
- CLIP-Adapter: the bottleneck MLP at zero (``z = n(0.8 n(f))``, zero-shot up to rounding);
- CoOp / LoCoOp: the context at the embeddings of its initial words (``ctx_init``, "a photo of
  a"); CoCoOp: the same context and the meta-net at zero. A prompt head trained from a random
  context has no zero-shot point and raises.

Endpoints are exact: ``alpha = 0`` gives the zero-shot state bit for bit, ``alpha = 1`` the
fine-tuned one.
"""

from __future__ import annotations

import torch

from croft_core.heads.checkpoint import CroftModel

WISE_HEADS = ("croft", "clip_adapter", "coop", "cocoop")


def zeroshot_state(model: CroftModel) -> dict[str, torch.Tensor]:
    """The state dict at which ``model``'s head is the zero-shot classifier (same keys and shapes).

    Raises:
        ValueError: the head has no zero-shot point (Tip-Adapter, linear probe, a prompt head
            trained from a random context).
    """
    head = model.config.head
    if head not in WISE_HEADS:
        raise ValueError(f"WiSE interpolation needs a head with a zero-shot initialisation "
                         f"({', '.join(WISE_HEADS)}); {model.config.method} has a {head} head")
    if head in ("coop", "cocoop") and not model.config.ctx_init:
        raise ValueError(f"this {model.config.method} head was trained from a random context, so it has no "
                         f"zero-shot point to interpolate toward (train with ctx_init='a photo of a')")
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if head == "croft":
            out[key] = torch.eye(value.shape[0], dtype=value.dtype, device=value.device)
        elif head == "clip_adapter" or key.startswith("head.meta_net."):
            out[key] = torch.zeros_like(value)
        elif key == "head.ctx":
            out[key] = state["head.ctx_zeroshot"].clone()
        else:  # the zero-shot context itself
            out[key] = value.clone()
    return out


def wise(model: CroftModel, alpha: float) -> CroftModel:
    """A new model whose head weights are ``(1 - alpha) * zero-shot + alpha * model``.

    Args:
        model: a trained model with a head in :data:`WISE_HEADS` (prompt heads attached).
        alpha: in ``[0, 1]``; 1 = ``model``'s weights, 0 = the zero-shot weights, exactly.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"WiSE alpha must be in [0, 1], got {alpha}")
    zero, tuned = zeroshot_state(model), model.state_dict()
    mixed = {}
    for key, ft in tuned.items():
        if not ft.is_floating_point() or alpha == 1:
            mixed[key] = ft.clone()
        elif alpha == 0:
            mixed[key] = zero[key]
        else:
            mixed[key] = torch.lerp(zero[key], ft, float(alpha))
    out = CroftModel(model.config)
    out.load_state_dict(mixed, strict=True)
    tower = getattr(model.head, "_tower", None)
    if tower is not None:  # a prompt head: the same frozen text tower and prompts
        object.__setattr__(out.head, "_tower", tower)
        out.head.token_ids = model.head.token_ids.clone()
    device = next(iter(model.parameters()), torch.empty(0)).device
    return out.to(device).eval()
