"""Measure a CLIP model on the ``shapes`` miniature benchmark (the embedded model's tuning tool).

Everything runs through the library's own protocol (:func:`croft_core.runs.evaluate.prepare_features`
and :func:`croft_core.runs.evaluate.evaluate` on the ``shapes`` definition, seed 1, 16 shots), so these
numbers are the ones ``croft eval --method zeroshot`` reports. On top of the zero-shot accuracies
(photo, per style and per ID class on photos) and energy AUROCs (near-OOD pooled and per unseen
class; the far-OOD ``non-shapes`` set apart, also with the negative-label score) it fits
a 16-shot logistic-regression probe on frozen L2-normalised features
(scikit-learn, ``C`` picked on the validation split) — the headroom a fine-tuning method could reach.
:func:`target_report` checks the issue-9 targets of the shipped model (zero-shot only).

Command line (``croft`` parses it; this module reads no argv)::

    croft check-embedded --data DIR [--model FOLDER] [--json FILE]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from croft_core.data.synth.world import DOMAINS

logger = logging.getLogger(__name__)

SHOTS = 16
SEED = 1
ID_DOMAIN = "photo"
PROBE_CS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


def _x(feature_set) -> np.ndarray:
    return F.normalize(feature_set.first_view(), dim=-1).numpy()


def linear_probe(train, validation, cs: Sequence[float] = PROBE_CS) -> tuple[LogisticRegression, float]:
    """Logistic regression on frozen features (``FeatureSet`` s); ``C`` picked on validation accuracy."""
    best: tuple[float, float, LogisticRegression] | None = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(_x(train), train.labels.numpy())
        acc = float(np.mean(clf.predict(_x(validation)) == validation.labels.numpy()))
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    assert best is not None
    return best[2], best[1]


def per_class_accuracy(model, text_features, feature_set, classnames: Sequence[str]) -> dict[str, float]:
    """``{"zs_class_<name>": accuracy in %}`` of ``model`` on ``feature_set``, one entry per class."""
    from croft_core.runs.evaluate import compute_scores

    logits, _ = compute_scores(model, feature_set.first_view(), text_features)
    pred, labels = logits.argmax(-1).numpy(), feature_set.labels.numpy()
    return {f"zs_class_{name}": float(100.0 * np.mean(pred[labels == k] == k))
            for k, name in enumerate(classnames) if np.any(labels == k)}


def evaluate(model_dir: str | Path, data_dir: str | Path | None = None, probe: bool = True
             ) -> dict[str, float]:
    """All benchmark numbers (accuracies in %) of the ``local-dir:`` model in ``model_dir``.

    Args:
        model_dir: an open_clip ``local-dir:`` folder.
        data_dir: a rendered shapes dataset (``croft render-shapes``); default: the cached one.
        probe: also fit the logistic-regression probe.
    """
    from croft_core.clip.backbones import load_backbone
    from croft_core.runs.evaluate import benchmark_text_features, evaluate as run_protocol
    from croft_core.runs.evaluate import prepare_features, zeroshot_model
    from croft_core.data.benchmarks.shapes import shapes_benchmark

    backbone = load_backbone(f"local-dir:{Path(model_dir).resolve()}")
    bench = shapes_benchmark(root=data_dir)
    feats = prepare_features(backbone, bench, shots=SHOTS, seed=SEED, cache_dir=None)
    text = benchmark_text_features(backbone, bench, cache_dir=None)
    zs = zeroshot_model(backbone, bench)
    results, _ = run_protocol(zs, text, feats)

    accuracy = {ID_DOMAIN: results["id"]["accuracy"], **{c["name"]: c["accuracy"] for c in results["covariate"]}}
    out: dict[str, float] = {"logit_scale": backbone.logit_scale}
    out.update({f"zs_{d}": 100.0 * accuracy[d] for d in DOMAINS})
    out.update(per_class_accuracy(zs, text, feats.id_test, bench.classnames))
    near = results.get("semantic_near", results["semantic_all"])
    out["auroc_energy"] = near["energy"]["auroc"]
    out.update({f"auroc_{s['name']}": s["scores"]["energy"]["auroc"] for s in results["semantic"]
                if s.get("group") != "far"})
    if "semantic_far" in results:
        far = results["semantic_far"]
        out["far_auroc_energy"] = far["energy"]["auroc"]
        out["far_fpr95_energy"] = far["energy"]["fpr95"]
        if "neglabel" in far:
            out["far_auroc_neglabel"] = far["neglabel"]["auroc"]
            out["far_fpr95_neglabel"] = far["neglabel"]["fpr95"]
    if probe:
        clf, c = linear_probe(feats.train, feats.val)
        out["probe_C"] = c
        for fs in [feats.id_test, *feats.covariate]:
            domain = ID_DOMAIN if fs is feats.id_test else fs.name
            out[f"probe_{domain}"] = float(100.0 * np.mean(clf.predict(_x(fs)) == fs.labels.numpy()))
    return out


NEAR_OOD_AUROC = 0.85
"""A semantic class whose energy AUROC is below this counts as near-OOD."""

FAR_OOD_AUROC = 0.97
"""The far-OOD (non-shape) set's negative-label AUROC must reach this (issue 19)."""


def target_report(result: dict[str, float]) -> dict[str, bool]:
    """Which of the embedded-model targets (issue 9) ``result`` meets.

    Zero-shot must be competent on photos (the styles carry the headroom for fine-tuning) and the
    unseen shapes (near-OOD, pooled without the far-OOD set) must be mostly, not entirely, separable
    by energy; the non-shape images (far-OOD, issue 19) must be rejected by the negative labels.
    """
    zs = result["zs_photo"]
    drops = [zs - result[f"zs_{d}"] for d in DOMAINS if d != ID_DOMAIN]
    per_class = [v for k, v in result.items() if k.startswith("zs_class_")]
    semantic = [v for k, v in result.items() if k.startswith("auroc_") and k != "auroc_energy"]
    return {
        "zs_photo >= 90": zs >= 90.0,
        "every ID class >= 80": bool(per_class) and min(per_class) >= 80.0,
        "two styles >= 15 below photo": sum(d >= 15.0 for d in drops) >= 2,
        "auroc_energy in [0.85, 0.97]": 0.85 <= result["auroc_energy"] <= 0.97,
        "two semantic classes below 0.85": sum(a < NEAR_OOD_AUROC for a in semantic) >= 2,
        "far-OOD neglabel auroc >= 0.97": result.get("far_auroc_neglabel", 0.0) >= FAR_OOD_AUROC,
    }


def format_table(result: dict[str, float]) -> str:
    """A plain-text table of ``result`` and the target checks."""
    lines = [f"{k:<28} {v:8.3f}" for k, v in result.items()]
    lines += [f"{k:<34} {'OK' if ok else 'MISS'}" for k, ok in target_report(result).items()]
    return "\n".join(lines)
