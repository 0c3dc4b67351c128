"""Measure a CLIP model on the ``shapes`` miniature benchmark (a tuning tool).

The benchmark (see :mod:`croft_core.synth.world`): ID classes are
``ID_CLASSES`` (the first ten classes), the other classes are semantic OOD.

* train      -- 16 shots per ID class, ``photo`` domain, from the ``train`` split;
* ID test    -- ``test`` split, ID classes, ``photo``;
* covariate  -- ``test`` split, ID classes, each of ``sketch``/``cartoon``/``painting``;
* semantic   -- ``test`` split, OOD classes, ``photo``.

Measured: zero-shot accuracy (single template ``"a photo of a {}."``) on ID
photo and per style, a 16-shot linear probe on frozen L2-normalised image
features (scikit-learn logistic regression, ``C`` picked on the validation
split), and the energy-score AUROC (``S(x) = logsumexp_k(scale * cos)``, ID
positive) for semantic OOD, overall and per OOD class.

Command line::

    python -m croft_core.synth.check --model croft_core/synth/embedded --data DIR
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import datasets
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from croft_core.metrics import auroc
from croft_core.synth.world import CLASSES, DOMAINS, ID_CLASSES

logger = logging.getLogger(__name__)

TEMPLATE = "a photo of a {}."
SHOTS = 16
ID_DOMAIN = "photo"
PROBE_CS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


@dataclass
class Features:
    """L2-normalised image features and integer labels of one evaluation set."""

    x: torch.Tensor
    y: np.ndarray


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, Callable, Callable]:
    """Load an open_clip ``local-dir:`` model: ``(model, preprocess, tokenizer)``."""
    import open_clip

    name = f"local-dir:{model_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


@torch.no_grad()
def encode_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised image features of an already preprocessed ``[N, 3, H, W]`` batch."""
    chunks = [model.encode_image(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)


@torch.no_grad()
def text_classifier(model: torch.nn.Module, tokenizer: Callable, classnames: Sequence[str],
                    template: str = TEMPLATE) -> torch.Tensor:
    """L2-normalised text embeddings ``[K, D]`` of ``template`` filled with each class name."""
    tokens = tokenizer([template.format(c) for c in classnames])
    return torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)


def select(split: datasets.Dataset, classes: Sequence[int], domain: str) -> list[int]:
    """Row indices of ``split`` whose label is in ``classes`` and domain is ``domain``."""
    wanted, d = set(classes), DOMAINS.index(domain)
    return [i for i, (y, dom) in enumerate(zip(split["label"], split["domain"])) if y in wanted and dom == d]


def few_shot_rows(split: datasets.Dataset, classes: Sequence[int], domain: str, shots: int,
                  seed: int = 0) -> list[int]:
    """``shots`` seeded random rows per class of ``classes`` in ``domain``."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(split["label"])
    rows = np.asarray(select(split, classes, domain))
    chosen: list[int] = []
    for c in classes:
        pool = rows[labels[rows] == c]
        chosen.extend(sorted(rng.choice(pool, size=min(shots, len(pool)), replace=False).tolist()))
    return chosen


def benchmark_features(model: torch.nn.Module, preprocess: Callable, data: datasets.DatasetDict,
                       shots: int = SHOTS, seed: int = 0) -> dict[str, Features]:
    """Features of every evaluation set of the ``shapes`` benchmark, keyed by set name."""
    id_idx = list(range(len(ID_CLASSES)))
    ood_idx = list(range(len(ID_CLASSES), len(CLASSES)))
    sets = {
        "train": (data["train"], few_shot_rows(data["train"], id_idx, ID_DOMAIN, shots, seed)),
        "validation": (data["validation"], select(data["validation"], id_idx, ID_DOMAIN)),
        "id": (data["test"], select(data["test"], id_idx, ID_DOMAIN)),
        "semantic": (data["test"], select(data["test"], ood_idx, ID_DOMAIN)),
    }
    for domain in DOMAINS:
        if domain != ID_DOMAIN:
            sets[domain] = (data["test"], select(data["test"], id_idx, domain))
    out: dict[str, Features] = {}
    for name, (split, rows) in sets.items():
        subset = split.select(rows)
        images = torch.stack([preprocess(img.convert("RGB")) for img in subset["image"]])
        out[name] = Features(encode_images(model, images), np.asarray(subset["label"]))
    return out


def zero_shot_accuracy(feats: Features, classifier: torch.Tensor) -> float:
    """Top-1 accuracy (%) of the nearest text embedding."""
    pred = (feats.x @ classifier.T).argmax(dim=1).numpy()
    return float(100.0 * np.mean(pred == feats.y))


def energy(feats: Features, classifier: torch.Tensor, logit_scale: float) -> np.ndarray:
    """Energy score ``logsumexp_k(logit_scale * cos(x, t_k))`` (higher = more ID)."""
    return torch.logsumexp(logit_scale * feats.x @ classifier.T, dim=1).numpy()


def linear_probe(train: Features, validation: Features, cs: Sequence[float] = PROBE_CS
                 ) -> tuple[LogisticRegression, float]:
    """Logistic regression on frozen features; ``C`` picked by validation accuracy."""
    best: tuple[float, float, LogisticRegression] | None = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000)
        clf.fit(train.x.numpy(), train.y)
        acc = float(np.mean(clf.predict(validation.x.numpy()) == validation.y))
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    assert best is not None
    return best[2], best[1]


def evaluate_zero_shot(model: torch.nn.Module, tokenizer: Callable,
                       feats: dict[str, Features]) -> dict[str, float]:
    """Zero-shot accuracies per domain and energy AUROCs (overall and per OOD class)."""
    classifier = text_classifier(model, tokenizer, ID_CLASSES)
    scale = float(model.logit_scale.detach().exp())
    result: dict[str, float] = {"logit_scale": scale}
    for domain in DOMAINS:
        result[f"zs_{domain}"] = zero_shot_accuracy(feats["id" if domain == ID_DOMAIN else domain], classifier)
    id_energy = energy(feats["id"], classifier, scale)
    ood_energy = energy(feats["semantic"], classifier, scale)
    result["auroc_energy"] = auroc(id_energy, ood_energy)
    for c in range(len(ID_CLASSES), len(CLASSES)):
        mask = feats["semantic"].y == c
        result[f"auroc_{CLASSES[c]}"] = auroc(id_energy, ood_energy[mask])
    return result


def evaluate_probe(feats: dict[str, Features]) -> dict[str, float]:
    """16-shot linear-probe accuracies (ID photo and per covariate domain)."""
    clf, c = linear_probe(feats["train"], feats["validation"])
    result: dict[str, float] = {"probe_C": c}
    for domain in DOMAINS:
        f = feats["id" if domain == ID_DOMAIN else domain]
        result[f"probe_{domain}"] = float(100.0 * np.mean(clf.predict(f.x.numpy()) == f.y))
    return result


def evaluate(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable,
             data: datasets.DatasetDict, probe: bool = True) -> dict[str, float]:
    """All benchmark numbers of ``model`` on the shapes ``data``."""
    feats = benchmark_features(model, preprocess, data)
    result = evaluate_zero_shot(model, tokenizer, feats)
    if probe:
        result.update(evaluate_probe(feats))
    return result


TARGETS: dict[str, str] = {
    "zs_photo": "55..85",
    "probe_photo": ">= zs_photo + 8",
    "auroc_energy": "0.70..0.95",
    "covariate": ">= 2 styles at least 10 below zs_photo",
}


def target_report(result: dict[str, float]) -> dict[str, bool]:
    """Which of the embedded-model targets ``result`` meets."""
    zs = result["zs_photo"]
    drops = [zs - result[f"zs_{d}"] for d in DOMAINS if d != ID_DOMAIN]
    return {
        "zs_photo in [55, 85]": 55.0 <= zs <= 85.0,
        "probe_photo >= zs_photo + 8": result.get("probe_photo", -1.0) >= zs + 8.0,
        "two styles >= 10 below photo": sum(d >= 10.0 for d in drops) >= 2,
        "auroc_energy in [0.70, 0.95]": 0.70 <= result["auroc_energy"] <= 0.95,
    }


def format_table(result: dict[str, float]) -> str:
    """A plain-text table of ``result`` and the target checks."""
    lines = [f"{k:<28} {v:8.3f}" for k, v in result.items()]
    lines += [f"{k:<34} {'OK' if ok else 'MISS'}" for k, ok in target_report(result).items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m croft_core.synth.check``: the same as ``croft check-embedded``."""
    import sys

    from croft_core.cli import main as cli_main

    return cli_main(["check-embedded", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
