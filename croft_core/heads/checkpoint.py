"""The CRoFT head and the Hub-loadable checkpoint wrapper.

CRoFT (Zhu et al., ICML 2024, arXiv 2405.16417) keeps CLIP frozen and trains three d x d matrices,
all initialised to the identity (CROFT_SPEC.md §1.2-1.4):

- image adapter ``W_i``:  ``z_I = n(alpha * f W_i^T + (1 - alpha) * f)``
- text adapter ``W_t``:   ``z_T = n(beta * t W_t^T + (1 - beta) * t)``
- covariate generator ``W_g``: ``z^c = n(z_I W_g + z_I)`` (official: on the adapted feature) or
  ``z^c = adapt(n(f̂ W_g + f̂))`` (clean objective: perturb the CLIP feature, then adapt it
  with the same adapter as every other image feature).

Logits are ``tau * <z_I, z_T>`` with CLIP's frozen ``tau``; the energy score is their logsumexp.

A checkpoint (:class:`CroftModel`) holds only the trained head plus ``config.json`` (backbone,
method, hyper-parameters, class names, templates, calibrated threshold, ID score sample, metrics)
and a model card; the frozen backbone is never stored. Weights are safetensors, loaded strictly.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin
from torch import nn

from croft_core.clip.features import l2n
from croft_core.heads.baselines import ClipAdapterHead, LinearProbeHead, TipAdapterHead, ZeroShotHead
from croft_core.heads.prompts import PromptHead

logger = logging.getLogger(__name__)


class CroftHead(nn.Module):
    """Image/text adapters and covariate-feature generator of CRoFT. Class-agnostic.

    Args:
        embed_dim: CLIP embedding width d (read from the backbone, never guessed).
        logit_scale: CLIP's frozen ``tau = exp(logit_scale)``.
        image_ratio: alpha, the adapter's share on the image side (official 0.2).
        text_ratio: beta, the adapter's share on the text side (official 0.5).
        generator_input: ``"adapted"`` (official) or ``"zeroshot"`` (clean objective).
    """

    class_agnostic = True

    def __init__(self, embed_dim: int, logit_scale: float = 100.0, image_ratio: float = 0.2,
                 text_ratio: float = 0.5, generator_input: str = "adapted"):
        super().__init__()
        if generator_input not in ("adapted", "zeroshot"):
            raise ValueError(f"generator_input must be 'adapted' or 'zeroshot', got {generator_input!r}")
        self.logit_scale, self.image_ratio, self.text_ratio = logit_scale, image_ratio, text_ratio
        self.generator_input = generator_input
        self.image_weight = nn.Parameter(torch.eye(embed_dim))  # W_i
        self.text_weight = nn.Parameter(torch.eye(embed_dim))  # W_t
        self.generator_weight = nn.Parameter(torch.eye(embed_dim))  # W_g

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.image_weight, self.text_weight]

    def generator_parameters(self) -> list[nn.Parameter]:
        return [self.generator_weight]

    def adapt_image(self, f: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``z_I = n(alpha f W_i^T + (1 - alpha) f)``; ``[N, d] -> [N, d]`` unit rows."""
        w = self.image_weight if weight is None else weight
        return l2n(self.image_ratio * f @ w.T + (1 - self.image_ratio) * f)

    def adapt_text(self, t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``z_T = n(beta t W_t^T + (1 - beta) t)``; ``[K, d] -> [K, d]`` unit rows."""
        w = self.text_weight if weight is None else weight
        return l2n(self.text_ratio * t @ w.T + (1 - self.text_ratio) * t)

    def perturb(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The generator map ``n(x W_g + x)`` (CROFT_SPEC.md §1.4)."""
        w = self.generator_weight if weight is None else weight
        return l2n(x @ w + x)

    def generate(self, f: torch.Tensor) -> torch.Tensor:
        """Worst-case covariate-shifted version of the adapted image feature, ``[N, d]`` unit rows."""
        if self.generator_input == "adapted":
            return self.perturb(self.adapt_image(f))
        return self.adapt_image(self.perturb(l2n(f)))

    def embed_image(self, f: torch.Tensor) -> torch.Tensor:
        return self.adapt_image(f)

    def forward(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, K]`` = ``tau * z_I z_T^T`` for raw image ``f [N, d]`` and text ``t [K, d]``."""
        return self.logit_scale * self.adapt_image(f) @ self.adapt_text(t).T


@dataclass(frozen=True)
class HeadConfig:
    """Everything a checkpoint needs to be rebuilt and used; saved as ``config.json``."""

    head: str = "croft"  # croft | zeroshot | clip_adapter | tip_adapter | linear_probe | coop | cocoop
    method: str = "croft"  # the training recipe that produced it (provenance, e.g. croft_clean)
    embed_dim: int = 512  # read from the backbone
    num_classes: int = 0  # classes the head was trained on (class-tied heads need it)
    logit_scale: float = 100.0  # CLIP's frozen tau
    image_ratio: float = 0.2  # alpha (CRoFT) / residual ratio (CLIP-Adapter)
    text_ratio: float = 0.5  # beta (CRoFT)
    generator_input: str = "adapted"  # official "adapted"; clean "zeroshot"
    adapter_reduction: int = 4  # CLIP-Adapter bottleneck
    cache_size: int = 0  # Tip-Adapter cache entries
    tip_alpha: float = 1.0
    tip_beta: float = 1.17
    n_ctx: int = 4  # prompt heads: learnable context vectors
    ctx_init: str = "a photo of a"  # prompt heads: words the context starts from ("" = random)
    class_specific_ctx: bool = False  # prompt heads: one context per class (CoOp's CSC)
    ctx_dim: int = 0  # prompt heads: the text tower's token width (read from the backbone)
    context_length: int = 0  # prompt heads: tokens per prompt (read from the backbone)
    meta_reduction: int = 16  # CoCoOp: meta-net hidden width = embed_dim // meta_reduction
    backbone: str = ""  # SPEC of the frozen backbone, e.g. "ViT-B-16:openai"
    classnames: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    text_mode: str = "normalized"
    training: dict = field(default_factory=dict)  # the TrainConfig that produced it
    threshold: float | None = None  # calibrated energy threshold (accept if score >= threshold)
    threshold_score: str = "energy"
    threshold_tpr: float = 0.95
    id_scores: tuple[float, ...] = ()  # ID reference scores (for plots and re-calibration)
    metrics: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("classnames", "templates", "id_scores"):  # JSON gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def from_dict(cls, data: dict) -> "HeadConfig":
        """Build from ``config.json`` contents; unknown keys (newer versions) are ignored."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def build_head(config: HeadConfig) -> nn.Module:
    """Instantiate the head a config describes."""
    c = config
    factories = {
        "croft": lambda: CroftHead(c.embed_dim, c.logit_scale, c.image_ratio, c.text_ratio,
                                   c.generator_input),
        "zeroshot": lambda: ZeroShotHead(c.logit_scale),
        "clip_adapter": lambda: ClipAdapterHead(c.embed_dim, c.logit_scale, c.image_ratio,
                                                c.adapter_reduction),
        "tip_adapter": lambda: TipAdapterHead(c.embed_dim, c.num_classes, c.cache_size,
                                              c.logit_scale, c.tip_alpha, c.tip_beta),
        "linear_probe": lambda: LinearProbeHead(c.embed_dim, c.num_classes, c.logit_scale),
        "coop": lambda: PromptHead(c.embed_dim, c.ctx_dim, c.num_classes, c.context_length, c.n_ctx,
                                   c.logit_scale, c.class_specific_ctx),
        "cocoop": lambda: PromptHead(c.embed_dim, c.ctx_dim, c.num_classes, c.context_length, c.n_ctx,
                                     c.logit_scale, c.class_specific_ctx,
                                     meta_hidden=max(1, c.embed_dim // max(1, c.meta_reduction))),
    }
    if c.head not in factories:
        raise ValueError(f"unknown head {c.head!r}; known heads: {sorted(factories)}")
    return factories[c.head]()


MODEL_CARD = """---
{{ card_data }}
---

# {{ title }}

An open-set CLIP classification head trained with CRoFT Lab (method `{{ method }}`). It holds only
the trained adapters; the frozen backbone is `{{ backbone }}` (open_clip) and is loaded separately.

- Paper: CRoFT: Robust Fine-Tuning with Concurrent Optimization for OOD Generalization and Open-Set
  OOD Detection (Zhu et al., ICML 2024), {{ paper_url }}
- Classes ({{ num_classes }}): {{ classes }}
- Rejection: energy score `S(x) = logsumexp_k(tau * cos(z_img, z_text_k))`; an image is "unknown"
  when `S(x) < {{ threshold }}` (calibrated at {{ tpr }} ID TPR).

## Metrics

{{ metrics_table }}

## Use

The library is the `croft-lab` distribution (not on PyPI; the `croft` package there is an unrelated
project). Install it from a checkout of the CRoFT Lab repository:

```bash
pip install .            # in the repository's root; `pip install ".[app]"` adds the Gradio app
```

```python
from croft_core import CroftModel, load_backbone
model = CroftModel.from_pretrained("{{ repo_id }}")
backbone = load_backbone(model.config.backbone)
```

Evaluate it on a benchmark: `croft eval --backbone {{ backbone }} --benchmark NAME --checkpoint {{ repo_id }}`.
"""


def _metrics_table(metrics: dict) -> str:
    rows = [(k, v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float))]
    if not rows:
        return "No metrics recorded."
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v:.4f} |" for k, v in rows)


LIBRARY_NAME = "croft"
LICENSE = "mit"  # the repository's LICENSE
PIPELINE_TAG = "zero-shot-image-classification"
CARD_TAGS = ["clip", "open-set-recognition", "ood-detection", "croft"]
PAPER_URL = "https://arxiv.org/abs/2405.16417"
CARD_REPO_PLACEHOLDER = "path/to/checkpoint-folder"
"""What a local card says where the repo id goes; :func:`croft_core.heads.hub.push_checkpoint` fills it in."""


def base_model_id(spec: str) -> str | None:
    """The Hub repo a backbone's weights come from: ``hf-hub:ORG/REPO`` -> ``ORG/REPO``,
    ``ViT-B-16:openai`` -> open_clip's ``hf_hub`` of that tag (``timm/vit_base_patch16_clip_224.openai``);
    None for local folders, the embedded model and random weights."""
    if spec.startswith("hf-hub:"):
        return spec.removeprefix("hf-hub:").strip("/") or None
    name, sep, tag = spec.rpartition(":")
    if not sep or not name or name.startswith("local-dir") or tag == "random":
        return None
    import open_clip

    try:
        cfg = open_clip.get_pretrained_cfg(name.replace("/", "-"), tag) or {}
    except (KeyError, RuntimeError):
        return None
    return cfg.get("hf_hub", "").strip("/") or None


def _eval_results(config: HeadConfig, results: dict | None) -> tuple[str | None, list]:
    """``(dataset name, EvalResult list)`` from a results JSON (:func:`croft_core.runs.evaluate.evaluate`),
    else from the config's flat metrics (``id_accuracy``, ``accuracy/<set>``, ``energy_auroc``, ...)."""
    from huggingface_hub import EvalResult

    results = results or {}
    dataset = results.get("benchmark") or config.training.get("benchmark")
    name = str(dataset) if dataset else "evaluation set"
    found: list[tuple[str, str, float]] = []  # (metric type, metric name, value)
    if isinstance(results.get("id"), dict) and "accuracy" in results["id"]:
        found.append(("accuracy", f"ID accuracy ({results['id'].get('name', 'test')})", results["id"]["accuracy"]))
        for c in results.get("covariate") or []:
            found.append(("accuracy", f"covariate-shift accuracy ({c['name']})", c["accuracy"]))
        energy = (results.get("semantic_all") or {}).get("energy") or {}
        for key in ("auroc", "fpr95", "aupr_in"):
            if key in energy:
                found.append((key, f"semantic-shift detection {key.upper()} (energy)", energy[key]))
    else:
        for key, value in sorted(config.metrics.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kind = "accuracy" if "accuracy" in key else key.removeprefix("energy_")
                found.append((kind, key, value))
    out = [EvalResult(task_type=PIPELINE_TAG, task_name="Open-set image classification", dataset_type=name,
                      dataset_name=name, metric_type=kind, metric_name=label, metric_value=round(float(value), 4))
           for kind, label, value in found if value == value]  # NaN: not a result
    return (str(dataset) if dataset else None), out


def render_model_card(config: HeadConfig, repo_id: str | None = None, results: dict | None = None) -> str:
    """The model card (``README.md``) of a checkpoint, for the Hub repo ``repo_id``.

    The front matter follows the Hub's conventions: ``license``, ``library_name``, ``pipeline_tag``,
    ``base_model`` (the Hub repo of the backbone's weights, when it has one), ``datasets`` (the
    benchmark, when it is a Hub dataset id), ``tags`` and ``model-index`` with the evaluation
    results (from ``results``, the run's results JSON, else the config's metrics).

    Without ``repo_id`` (a local folder) the usage snippet names :data:`CARD_REPO_PLACEHOLDER`,
    never this machine's path; ``croft push`` fills in the repo it uploads to.
    """
    c = config
    title = f"CRoFT Lab head: {c.method} on {c.backbone or 'CLIP'}"
    dataset, evals = _eval_results(c, results)
    data = ModelCardData(library_name=LIBRARY_NAME, license=LICENSE, pipeline_tag=PIPELINE_TAG,
                         tags=sorted(CARD_TAGS), base_model=base_model_id(c.backbone),
                         datasets=[dataset] if dataset and "/" in dataset else None,
                         model_name=title if evals else None, eval_results=evals or None)
    card = ModelCard.from_template(
        data, template_str=MODEL_CARD,
        paper_url=PAPER_URL, title=title,
        method=c.method, backbone=c.backbone, num_classes=len(c.classnames),
        classes=", ".join(c.classnames[:50]) + (" ..." if len(c.classnames) > 50 else ""),
        threshold="uncalibrated" if c.threshold is None else f"{c.threshold:.4f}",
        tpr=c.threshold_tpr, metrics_table=_metrics_table(c.metrics),
        repo_id=repo_id or CARD_REPO_PLACEHOLDER)
    return str(card)


class CroftModel(nn.Module, PyTorchModelHubMixin, library_name=LIBRARY_NAME, tags=list(CARD_TAGS),
                 paper_url=PAPER_URL, model_card_template=MODEL_CARD):
    """A trained head plus its :class:`HeadConfig`; save/load/push with the Hub mixin.

    ``save(dir)`` writes ``config.json``, ``model.safetensors`` and a model card;
    ``CroftModel.from_pretrained(dir_or_repo_id)`` rebuilds it and loads the weights strictly.
    Push a saved folder with :func:`croft_core.heads.hub.push_checkpoint` (``croft push``), which writes
    the card for the target repo.
    """

    def __init__(self, config: HeadConfig | dict):
        super().__init__()
        if isinstance(config, dict):  # from config.json
            config = HeadConfig.from_dict(config)
        self.config = config
        self.head = build_head(config)

    @property
    def class_agnostic(self) -> bool:
        return self.head.class_agnostic

    @property
    def needs_backbone(self) -> bool:
        """Whether the head runs CLIP's text tower itself (prompt learning): see :meth:`attach_backbone`."""
        return hasattr(self.head, "attach")

    def attach_backbone(self, backbone) -> "CroftModel":
        """Give a prompt-learning head its frozen text encoder (a no-op for every other head)."""
        if self.needs_backbone:
            self.head.attach(backbone.model)
            self.head.tokenize(backbone.tokenizer, self.config.classnames)
        return self

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, K]`` from raw image features ``[N, d]`` and text features ``[K, d]``."""
        return self.head(image_features, text_features)

    def embed_image(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.head.embed_image(image_features)

    def update_config(self, **changes: Any) -> "CroftModel":
        """Replace config fields (e.g. the calibrated threshold) in place; returns ``self``."""
        self.config = replace(self.config, **changes)
        self._hub_mixin_config = asdict(self.config)
        return self

    def save(self, directory: str | Path) -> Path:
        """``save_pretrained`` with the current config and a model card listing the metrics."""
        directory = Path(directory)
        (directory / "README.md").unlink(missing_ok=True)  # the mixin never overwrites a card
        self.save_pretrained(directory, config=asdict(self.config))
        return directory

    def generate_model_card(self, *args, repo_id: str | None = None, **kwargs) -> ModelCard:
        """The mixin's card hook (``save_pretrained``, ``push_to_hub``): :func:`render_model_card`."""
        return ModelCard(render_model_card(self.config, repo_id))

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs):
        """The mixin's ``push_to_hub``, with the card written for ``repo_id``."""
        return super().push_to_hub(repo_id, model_card_kwargs={"repo_id": repo_id,
                                                               **(model_card_kwargs or {})}, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool,
                         local_files_only: bool, token, map_location: str = "cpu", strict: bool = True,
                         **model_kwargs):
        """Strict safetensors-only loading (never unpickles)."""
        from safetensors.torch import load_file

        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / "model.safetensors"
            if not weights.is_file():
                raise FileNotFoundError(f"checkpoint folder {model_id} has no model.safetensors")
        else:
            from huggingface_hub import hf_hub_download

            weights = hf_hub_download(model_id, "model.safetensors", revision=revision,
                                      cache_dir=cache_dir, force_download=force_download,
                                      token=token, local_files_only=local_files_only)
        state = load_file(str(weights), device=map_location)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {model_id} does not match its config.json "
                             f"(head={model.config.head}, embed_dim={model.config.embed_dim}, "
                             f"num_classes={model.config.num_classes}): {err}") from err
        return model.eval()


def read_checkpoint_config(path: str | Path) -> HeadConfig:
    """Read ``config.json`` of a local checkpoint folder without loading weights."""
    data = json.loads((Path(path) / "config.json").read_text())
    return HeadConfig.from_dict(data)
