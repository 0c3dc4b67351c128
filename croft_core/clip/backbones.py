"""Frozen open_clip backbones: loading, preprocessing and cached text classifiers.

CRoFT (Zhu et al., ICML 2024) never changes the CLIP encoders: both towers and ``logit_scale`` are
frozen (CROFT_SPEC.md §1.1). This module is the only place that talks to open_clip.

Backbone ``SPEC`` strings (DESIGN.md):

- ``MODEL:TAG`` — an open_clip architecture and pretrained tag, e.g. ``ViT-B-16:openai``,
  ``RN50:openai``, ``ViT-B-16:laion400m_e31``. ``MODEL:random`` builds the architecture with random
  weights (benchmarks and tests only).
- ``hf-hub:ORG/REPO`` — an open_clip checkpoint on the Hugging Face Hub.
- ``local-dir:PATH`` — a folder with ``open_clip_config.json`` and weights.
- ``embedded`` — the tiny CLIP shipped with this package (``croft_core/data/synth/embedded``).

Two SPECs may name the same weights (``embedded`` and its ``local-dir:`` folder, ``ViT-B/16`` and
``ViT-B-16``): :func:`same_backbone` is the one rule that decides whether a checkpoint fits a
backbone. On-disk caches are keyed by :attr:`Backbone.cache_id`, which names everything that changes
the numbers: the weights (for ``hf-hub:`` and Hub-hosted pretrained tags, the resolved commit of the
cached snapshot; for folders, the weight files' names, sizes and times) and the load precision.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from croft_core.data import DEFAULT_CACHE_DIR
from croft_core.errors import CroftError
from croft_core.data.synth import EMBEDDED_DIR

logger = logging.getLogger(__name__)



class BackboneUnavailableError(CroftError, RuntimeError):
    """Raised when a backbone's weights are neither cached nor downloadable (e.g. offline)."""


@dataclass
class Backbone:
    """A frozen open_clip model with its tokenizer and transforms.

    Attributes:
        model: the open_clip model, in eval mode, with every parameter frozen.
        tokenizer: open_clip tokenizer for the model (``list[str] -> LongTensor[B, L]``).
        preprocess: the model's own evaluation transform (PIL image -> tensor).
        spec: the ``SPEC`` string it was loaded from.
        cache_id: identifies the numbers the model computes (weights, revision, precision) for
            on-disk caches; ``None`` disables caching.
    """

    model: torch.nn.Module
    tokenizer: Callable
    preprocess: Callable
    spec: str
    cache_id: str | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def train_transform(self) -> Callable:
        """The official CRoFT training augmentation (CROFT_SPEC.md §2.2).

        RandomResizedCrop (torchvision's default scale (0.08, 1), bicubic) + horizontal flip +
        the model's own normalisation. Expects RGB PIL images.
        """
        normalize = next(t for t in self.preprocess.transforms if isinstance(t, T.Normalize))
        return T.Compose([
            T.RandomResizedCrop(self.image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ])

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) image embeddings ``[B, d]`` for preprocessed pixels ``[B, 3, H, W]``."""
        return self.model.encode_image(pixels.to(self.device)).float()


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split a ``SPEC`` into an open_clip model name and a pretrained tag (``None`` for schemas).

    Raises:
        ValueError: for an empty spec or a bare architecture name without a tag.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty backbone spec; use e.g. 'ViT-B-16:openai', 'hf-hub:ORG/REPO', "
                         "'local-dir:PATH' or 'embedded'")
    if spec == "embedded":
        return f"local-dir:{EMBEDDED_DIR}", None
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    name, sep, tag = spec.rpartition(":")
    if not sep or not name or not tag:
        raise ValueError(f"backbone spec {spec!r} has no pretrained tag; write MODEL:TAG, e.g. "
                         f"'ViT-B-16:openai' (or 'ViT-B-16:random' for random weights)")
    return name.replace("/", "-"), tag


def _hub_reachable() -> bool:
    from croft_core.offline import hub_unreachable_reason

    return hub_unreachable_reason() is None


def _pretrained_is_cached(model_name: str, tag: str) -> bool:
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    repo = cfg.get("hf_hub", "")
    if not repo:
        return False
    repo_id = repo.strip("/")
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return True
    return False


def _offline_message(what: str) -> str:
    return (f"cannot load {what}: its weights are not in the local cache and the Hugging Face Hub "
            f"is unreachable (offline or HF_HUB_OFFLINE=1). Download them once on a machine with "
            f"internet (they are cached under ~/.cache/huggingface), point to a copy with "
            f"'local-dir:PATH', or use the bundled 'embedded' backbone.")


def _hub_revision(repo_id: str, filenames: Sequence[str]) -> str | None:
    """The commit of the cached Hub snapshot holding the first of ``filenames`` found, if any."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return Path(hit).parent.name  # .../snapshots/<commit>/<filename>
    return None


_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _local_dir_source(model_name: str) -> tuple[str, str]:
    """``(open_clip model name, weights id)`` of a ``local-dir:`` folder."""
    path = Path(model_name.removeprefix("local-dir:")).expanduser().resolve()
    if not (path / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"backbone folder {path} must contain open_clip_config.json and "
                                f"open_clip_model.safetensors (the layout open_clip's "
                                f"'local-dir:' loader expects)")
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    stamp = ":".join(f"{w.name}:{w.stat().st_size}:{int(w.stat().st_mtime)}" for w in weights)
    return f"local-dir:{path}", f"local-dir:{path}:{stamp}"


def _check_hub_source(spec: str, model_name: str) -> None:
    if not _hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        repo_id = model_name.removeprefix("hf-hub:")
        if not isinstance(try_to_load_from_cache(repo_id, "open_clip_config.json"), str):
            raise BackboneUnavailableError(_offline_message(spec))


def _check_pretrained_source(model_name: str, tag: str) -> None:
    import open_clip

    if open_clip.get_model_config(model_name) is None:
        raise ValueError(f"unknown open_clip architecture {model_name!r}; see open_clip.list_models()")
    if not open_clip.get_pretrained_cfg(model_name, tag):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"unknown pretrained tag {tag!r} for {model_name}; known tags: {tags}")
    if not _pretrained_is_cached(model_name, tag) and not _hub_reachable():
        raise BackboneUnavailableError(_offline_message(f"{model_name} pretrained={tag!r}"))


def _weights_id(spec: str, model_name: str, tag: str | None) -> str:
    """The spec plus the Hub commit its weights were loaded from (call after loading)."""
    import open_clip

    if model_name.startswith("hf-hub:"):
        repo_id = model_name.removeprefix("hf-hub:")
    else:
        repo_id = open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", "").strip("/")
    revision = _hub_revision(repo_id, _WEIGHT_FILES) if repo_id else None
    return f"{spec}@{revision}" if revision else spec


def load_backbone(spec: str, device: str | torch.device = "cpu", precision: str = "fp32") -> Backbone:
    """Load a frozen open_clip backbone from a ``SPEC`` string.

    Args:
        spec: see the module docstring.
        device: where to put the model.
        precision: open_clip precision (``fp32``, ``fp16``, ``bf16``, ``amp``...); part of the
            cache id, so caches of different precisions never mix.

    Returns:
        A :class:`Backbone` whose model is in eval mode with ``requires_grad_(False)`` on every
        parameter, ``logit_scale`` included (``lock_*_tower`` would leave it trainable).

    Raises:
        BackboneUnavailableError: weights neither cached nor downloadable; fails in well under a
            second when offline.
        FileNotFoundError / ValueError: a bad ``local-dir:`` folder or spec.
    """
    import open_clip

    model_name, tag = parse_spec(spec)
    weights_id: str | None = None
    kwargs: dict = {}
    if model_name.startswith("local-dir:"):
        model_name, weights_id = _local_dir_source(model_name)
    elif model_name.startswith("hf-hub:"):
        _check_hub_source(spec, model_name)
    elif tag == "random":
        kwargs["load_weights"] = False
    else:
        _check_pretrained_source(model_name, tag)
        kwargs["pretrained"] = tag

    logger.info("loading backbone %s", spec)
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, device=device, precision=precision, **kwargs)
    model.eval().requires_grad_(False)
    if weights_id is None and tag != "random":
        weights_id = _weights_id(spec, model_name, tag)
    return Backbone(model=model, tokenizer=open_clip.get_tokenizer(model_name), preprocess=preprocess,
                    spec=spec, cache_id=None if weights_id is None else f"{weights_id}|{precision}")


def _resolved_spec(spec: str) -> tuple[str, str | None]:
    name, tag = parse_spec(spec)
    if name.startswith("local-dir:"):
        name = "local-dir:" + str(Path(name.removeprefix("local-dir:")).expanduser().resolve())
    return name, tag


def same_backbone(a: str, b: str) -> bool:
    """Whether two backbone SPECs name the same weights: ``embedded`` = its ``local-dir:`` folder,
    ``ViT-B/16`` = ``ViT-B-16``, relative = absolute folders. Unparseable SPECs compare as text.

    The one compatibility rule for checkpoints and backbones (CLI, pipeline and app).
    """
    try:
        return _resolved_spec(a) == _resolved_spec(b)
    except ValueError:
        return a == b


def _supports_truncation(model: torch.nn.Module) -> bool:
    """Truncation is exact for open_clip's built-in causal text tower with EOT/argmax pooling."""
    return (hasattr(model, "token_embedding") and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) in ("argmax", "eos"))


def encode_text_truncated(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on tokens cut to the batch's longest sequence.

    CLIP's text transformer is causal and pools at the end-of-text token, so padding positions after
    the longest sequence never influence the result: dropping them is exact (checked to 1e-5 in
    tests) and saves most of the compute for short class prompts (77 -> ~10 tokens).

    Args:
        model: an open_clip ``CLIP``; other models fall back to ``encode_text``.
        tokens: ``[B, L]`` token ids, right-padded with 0.

    Returns:
        Raw text embeddings ``[B, d]``.
    """
    if not _supports_truncation(model):
        return model.encode_text(tokens)
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else 1
    tokens = tokens[:, :length]  # [B, length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [B, length, width]
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    from open_clip.transformer import text_global_pool

    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return x


def _text_cache_path(cache_dir: Path, cache_id: str, classnames: Sequence[str],
                     templates: Sequence[str], text_mode: str) -> Path:
    key = "\x1f".join([cache_id, text_mode, "\x1e".join(templates), "\x1e".join(classnames)])
    return Path(cache_dir) / "text" / f"{hashlib.sha1(key.encode()).hexdigest()}.safetensors"


def _check_text_inputs(classnames: Sequence[str], templates: Sequence[str], text_mode: str) -> None:
    if len(classnames) == 0:
        raise ValueError("the class vocabulary is empty; give at least one class name")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template must contain '{}' where the class name goes")
    if text_mode not in ("normalized", "raw"):
        raise ValueError(f"text_mode must be 'normalized' or 'raw', got {text_mode!r}")
    if text_mode == "raw" and len(templates) != 1:
        raise ValueError("text_mode='raw' keeps one unnormalised embedding, so it needs exactly one "
                         "template")


def _encode_prompts(backbone: Backbone, classnames: Sequence[str], templates: Sequence[str],
                    batch_size: int) -> torch.Tensor:
    """Raw embeddings ``[K, M, d]`` (float32) of every (class, template) prompt."""
    prompts = [t.format(c.replace("_", " ")) for c in classnames for t in templates]
    chunks = []
    for i in range(0, len(prompts), batch_size):
        tokens = backbone.tokenizer(prompts[i:i + batch_size]).to(backbone.device)
        chunks.append(encode_text_truncated(backbone.model, tokens).float())
    return torch.cat(chunks).view(len(classnames), len(templates), -1)


@torch.no_grad()
def build_text_classifier(
    backbone: Backbone,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    text_mode: str = "normalized",
    batch_size: int = 256,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
) -> torch.Tensor:
    """Encode a class vocabulary into one text embedding per class.

    Args:
        backbone: the frozen backbone.
        classnames: K class names; underscores become spaces in prompts.
        templates: prompt templates with one ``{}`` each.
        text_mode: ``"normalized"`` (each template embedding L2-normalised, averaged, renormalised:
            unit vectors, as open_clip's zero-shot classifier and CRoFT's ImageNet setup) or
            ``"raw"`` (the official single-template PACS/VLCS mode: the unnormalised embedding of the
            one template; CROFT_SPEC.md §1.1).
        batch_size: prompts per text-encoder call.
        cache_dir: on-disk cache keyed by backbone weights, templates, mode and class names;
            ``None`` disables it.

    Returns:
        ``[K, d]`` float32 tensor on the backbone's device.
    """
    classnames = [str(c) for c in classnames]
    templates = list(templates)
    _check_text_inputs(classnames, templates, text_mode)
    path = None
    if cache_dir is not None and backbone.cache_id is not None:
        path = _text_cache_path(Path(cache_dir), backbone.cache_id, classnames, templates, text_mode)
        if path.is_file():
            from safetensors.torch import load_file

            return load_file(str(path))["text_features"].to(backbone.device)

    emb = _encode_prompts(backbone, classnames, templates, batch_size)  # [K, M, d]
    if text_mode == "raw":
        features = emb[:, 0]
    else:
        features = F.normalize(F.normalize(emb, dim=-1).mean(dim=1), dim=-1)

    if path is not None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # concurrent writers: own tmp each
        save_file({"text_features": features.cpu().contiguous()}, str(tmp))
        os.replace(tmp, path)
    return features


def encode_image_with_local(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global image features ``[B, d]`` (exactly ``model.encode_image``) and local features
    ``[B, P, d]`` in the same joint space, as GL-MCM and LoCoOp take them:

    - modified ResNet (attention pooling): the attention pool's value projection then output
      projection of every spatial position, ``c_proj(v_proj(x_p))`` (MaskCLIP's trick, which GL-MCM
      uses for ResNets), without the positional embedding; ``P = H * W`` of the last feature map;
    - ViT: the patch tokens after ``ln_post``, projected with ``proj``; ``P`` = number of patches.

    Raises:
        ValueError: an image tower that is neither (e.g. a timm or Hugging Face tower).
    """
    visual = model.visual
    if hasattr(visual, "attnpool") and hasattr(visual, "stem"):
        x = visual.stem(pixels)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)  # [B, C, H, W]
        pool = visual.attnpool
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        return pool(x), pool.c_proj(pool.v_proj(tokens))
    if hasattr(visual, "output_tokens") and hasattr(visual, "proj"):
        before = visual.output_tokens
        visual.output_tokens = True
        try:
            pooled, tokens = visual(pixels)
        finally:
            visual.output_tokens = before
        return pooled, (tokens @ visual.proj if visual.proj is not None else tokens)
    raise ValueError(f"local features need an open_clip ModifiedResNet or VisionTransformer image tower, "
                     f"not {type(visual).__name__}")
