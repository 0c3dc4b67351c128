"""Prompt-learning heads: CoOp, CoCoOp (and LoCoOp, which trains a CoOp head with another loss).

- CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022): ``n_ctx`` learnable
  context vectors replace the words in front of the class name, ``[SOS] v_1 ... v_n [CLASS] . [EOS]``
  (class token at the end), shared by all classes or one set per class (``class_specific``). The
  prompts go through CLIP's **frozen** text encoder (token embedding -> context positions replaced ->
  transformer -> ``ln_final`` -> ``text_projection`` at the end-of-text position, the pieces of
  open_clip's ``CLIP.encode_text``); the logits are ``tau * cos(f, t_k)`` with the cached image
  features. The text tower runs forward and backward at every step.
- CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022): CoOp
  plus a meta-network ``Linear(d, d/16) - ReLU - Linear(d/16, w)`` that maps each (normalised) image
  feature to a shift ``pi(x)`` added to every context vector, so every image has its own K prompts.
  The ``B x K`` prompts of a batch go through the text encoder in one call: activation memory is
  ``B * K * L * w * layers`` floats (e.g. 32 images x 1000 classes x 77 tokens x 512 x 12 layers
  at ViT-B-16 scale, tens of GB: the paper trains with batch 1; on the embedded model, 32 x 10 x
  10 x 64 x 4 is about 3 MB).

Defaults follow CoCoOp's and CoOp's "ctxv1" configs: ``n_ctx = 4`` initialised from the words
"a photo of a" (so the untrained head *is* the zero-shot classifier of the template
"a photo of a {}."). CoOp's headline config uses 16 random context vectors, which do not fit the
embedded model's 16-token text context (``[SOS] + 16 + name + "." + [EOS]`` > 16): there the prompt
length is checked and a clear error says how many fit; pass ``ctx_init=""`` and ``n_ctx=16`` on a
77-token backbone (ViT-B-16) for the paper's setting.

The frozen text encoder is *attached* (:meth:`PromptHead.attach`), never registered as a submodule:
checkpoints hold only the context vectors, the meta-net and the zero-shot context (for WiSE), never
the backbone; the prompts' token ids are rebuilt from the class names in ``config.json``. A head
loaded from a checkpoint must be attached to its backbone before use;
:meth:`croft_core.heads.checkpoint.CroftModel.attach_backbone` does both.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from croft_core.clip.features import l2n

EVAL_PROMPTS_PER_CALL = 8192  # CoCoOp at inference: images are chunked so one call holds at most this many prompts
CTX_PLACEHOLDER = "X"  # one token in CLIP's BPE; its embeddings are replaced by the context


@torch.no_grad()
def _reset_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """``nn.Linear.reset_parameters`` with the draws taken from ``generator`` (on the CPU)."""
    weight = torch.empty(layer.weight.shape)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(layer.in_features)
    layer.weight.copy_(weight)
    layer.bias.copy_(torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=generator))


class TextTower:
    """The frozen pieces of an open_clip ``CLIP`` text tower, called on token *embeddings*."""

    def __init__(self, clip_model: nn.Module):
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
        missing = [n for n in needed if getattr(clip_model, n, None) is None]
        if missing or getattr(clip_model, "text_pool_type", "argmax") not in ("argmax", "eos"):
            raise ValueError(f"prompt learning needs open_clip's built-in CLIP text tower (causal, "
                             f"pooled at the end-of-text token); this model lacks {missing or 'it'}")
        self.model = clip_model

    @property
    def width(self) -> int:
        return self.model.token_embedding.weight.shape[1]

    @property
    def context_length(self) -> int:
        return self.model.positional_embedding.shape[0]

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., L]`` token ids -> ``[..., L, w]`` frozen token embeddings."""
        return self.model.token_embedding(tokens)

    def __call__(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """``[B, L, w]`` prompt embeddings and ``[B]`` end-of-text positions -> ``[B, d]`` raw text
        features. The sequence is cut after the last end-of-text token: exact, the tower is causal."""
        m = self.model
        length = int(eot.max()) + 1
        cast = m.transformer.get_cast_dtype()
        x = x[:, :length].to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)[torch.arange(len(x), device=x.device), eot]  # [B, w]
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class PromptHead(nn.Module):
    """CoOp (``meta_hidden == 0``) or CoCoOp (``meta_hidden > 0``) on cached image features.

    Args:
        embed_dim: CLIP's joint width d.
        ctx_dim: the text tower's token width w.
        num_classes: K.
        context_length: L of the tokenised prompts.
        n_ctx: learnable context vectors.
        logit_scale: CLIP's frozen tau.
        class_specific: one context per class (CoOp's CSC) instead of a shared one.
        meta_hidden: CoCoOp's meta-net hidden width (``d // 16`` in the paper); 0 = CoOp.
    """

    class_agnostic = False  # the token ids of the training classes are part of the head

    def __init__(self, embed_dim: int, ctx_dim: int, num_classes: int, context_length: int, n_ctx: int,
                 logit_scale: float = 100.0, class_specific: bool = False, meta_hidden: int = 0):
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        self.logit_scale, self.n_ctx = logit_scale, n_ctx
        shape = (num_classes, n_ctx, ctx_dim) if class_specific else (n_ctx, ctx_dim)
        self.ctx = nn.Parameter(torch.zeros(shape))
        self.register_buffer("ctx_zeroshot", torch.zeros(shape))  # the "a photo of a" context (WiSE)
        # the prompts' token ids: rebuilt from the class names by tokenize(), never saved (a
        # checkpoint holds float tensors only, and nothing is allocated from an untrusted config)
        self.register_buffer("token_ids", torch.zeros(num_classes, 0, dtype=torch.long), persistent=False)
        self.meta_net = (nn.Sequential(nn.Linear(embed_dim, meta_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(meta_hidden, ctx_dim)) if meta_hidden else None)
        self._tower: TextTower | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def attach(self, clip_model: nn.Module) -> "PromptHead":
        """Use ``clip_model``'s frozen text tower (not stored in the state dict)."""
        tower = TextTower(clip_model)
        if tower.width != self.ctx.shape[-1]:
            raise ValueError(f"this prompt head was built for a text tower of width {self.ctx.shape[-1]}; "
                             f"the backbone's has width {tower.width}")
        for p in clip_model.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_tower", tower)  # a plain attribute: never a submodule
        return self

    @property
    def tower(self) -> TextTower:
        if self._tower is None or not self.token_ids.shape[1]:
            raise RuntimeError("this prompt-learning head has no text encoder: attach its backbone first "
                               "(CroftModel.attach_backbone(backbone))")
        return self._tower

    @torch.no_grad()
    def tokenize(self, tokenizer, classnames: Sequence[str]) -> None:
        """Tokenise the prompts ``X ... X {class}.`` (the X positions are the context's)."""
        n = self.n_ctx
        if len(classnames) != self.token_ids.shape[0]:
            raise ValueError(f"the head has {self.token_ids.shape[0]} classes, got {len(classnames)} names")
        prompts = [" ".join([CTX_PLACEHOLDER] * n) + " " + str(c).replace("_", " ") + "." for c in classnames]
        tokens = tokenizer(prompts)  # [K, L]
        eot = tokens.argmax(-1)
        lengths = [len(tokenizer.encode(p)) + 2 if hasattr(tokenizer, "encode") else int(e) + 1
                   for p, e in zip(prompts, eot)]
        too_long = [c for c, k in zip(classnames, lengths) if k > tokens.shape[1]]
        if too_long:
            fits = tokens.shape[1] - (max(lengths) - n)
            raise ValueError(f"{n} context tokens + the class name do not fit the text encoder's "
                             f"{tokens.shape[1]}-token context (e.g. {too_long[0]!r}); use n_ctx <= {fits}")
        self.token_ids = tokens.to(self.ctx.device)

    @torch.no_grad()
    def init_prompts(self, tokenizer, classnames: Sequence[str], ctx_init: str = "",
                     generator: torch.Generator | None = None) -> None:
        """Tokenise the prompts and initialise the context.

        ``ctx_init`` (e.g. "a photo of a", which must have ``n_ctx`` tokens) copies those words'
        embeddings into the context (and into ``ctx_zeroshot``); empty: N(0, 0.02) as CoOp. With a
        ``generator``, CoCoOp's meta-net is redrawn from it too (``nn.Linear``'s initialisation), so
        the initial weights depend on the run's seed alone, not on what the process ran before (a
        search's configurations start the same whether trained one by one or stacked).
        """
        self.tokenize(tokenizer, classnames)
        tower, n = self.tower, self.n_ctx
        if ctx_init:
            init = tokenizer([ctx_init]).to(self.token_ids.device)
            words = int(init.argmax(-1)) - 1
            if words != n:
                raise ValueError(f"ctx_init {ctx_init!r} has {words} tokens but n_ctx is {n}")
            vectors = tower.embed_tokens(init)[0, 1:1 + n].float()  # [n, w]
            self.ctx_zeroshot.copy_(vectors.expand_as(self.ctx_zeroshot))
            self.ctx.copy_(self.ctx_zeroshot)
        else:
            self.ctx.copy_(torch.randn(self.ctx.shape, generator=generator) * 0.02)
            self.ctx_zeroshot.zero_()
        if self.meta_net is not None and generator is not None:
            for layer in (self.meta_net[0], self.meta_net[2]):
                _reset_linear(layer, generator)

    # -- forward ----------------------------------------------------------------------------------
    def _eot(self) -> torch.Tensor:
        return self.token_ids.argmax(-1)  # [K] the end-of-text token has the largest id

    def text_features(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Raw class text features ``[K, d]`` of the prompts with context ``ctx`` (default: the
        learned one; ``[n, w]`` or ``[K, n, w]``)."""
        ctx = self.ctx if ctx is None else ctx
        emb = self.tower.embed_tokens(self.token_ids)  # [K, L, w]
        k = emb.shape[0]
        ctx = ctx.expand(k, -1, -1) if ctx.dim() == 2 else ctx  # [K, n, w]
        prompts = torch.cat([emb[:, :1], ctx.to(emb.dtype), emb[:, 1 + self.n_ctx:]], dim=1)
        return self.tower(prompts, self._eot())

    def conditioned_text_features(self, f: torch.Tensor) -> torch.Tensor:
        """CoCoOp: raw text features ``[B, K, d]`` of each image's prompts ``ctx + pi(n(f_i))``."""
        shift = self.meta_net(l2n(f))  # [B, w]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0)  # [1 or K, n, w]
        ctx = ctx.unsqueeze(0) + shift[:, None, None, :]  # [B, 1 or K, n, w]
        emb = self.tower.embed_tokens(self.token_ids)  # [K, L, w]
        b, (k, length, w) = len(f), emb.shape
        ctx = ctx.expand(b, k, -1, -1)
        prompts = torch.cat([emb[:, :1].expand(b, -1, -1, -1), ctx.to(emb.dtype),
                             emb[:, 1 + self.n_ctx:].expand(b, -1, -1, -1)], dim=2)  # [B, K, L, w]
        out = self.tower(prompts.reshape(b * k, length, w), self._eot().repeat(b))
        return out.view(b, k, -1)

    def embed_image(self, f: torch.Tensor) -> torch.Tensor:
        return l2n(f)

    def cosines(self, f: torch.Tensor, local: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cosines ``[N, K]`` of the images to their class prompts, and of the local features
        ``[N, P, d]`` to the same prompts, ``[N, P, K]`` (None without ``local``)."""
        z = l2n(f)
        if self.meta_net is None:
            t = l2n(self.text_features())  # [K, d]
            return z @ t.T, (l2n(local) @ t.T if local is not None else None)
        if torch.is_grad_enabled() or len(f) * len(self.token_ids) <= EVAL_PROMPTS_PER_CALL:
            t = l2n(self.conditioned_text_features(f))  # [N, K, d]
            cos = torch.einsum("nd,nkd->nk", z, t)
            return cos, (torch.einsum("npd,nkd->npk", l2n(local), t) if local is not None else None)
        step = max(1, EVAL_PROMPTS_PER_CALL // len(self.token_ids))  # inference: bounded memory
        parts = [self.cosines(f[i:i + step], None if local is None else local[i:i + step])
                 for i in range(0, len(f), step)]
        return (torch.cat([c for c, _ in parts]),
                None if local is None else torch.cat([lc for _, lc in parts]))

    def forward(self, f: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[N, K]``; ``t`` (the benchmark's text features) only checks the class count."""
        k = self.token_ids.shape[0]
        if t is not None and t.shape[0] != k:
            raise ValueError(f"this prompt head was trained on {k} classes; it cannot score a "
                             f"vocabulary of {t.shape[0]}")
        return self.logit_scale * self.cosines(f)[0]
