"""Measure a CLIP model on the ``shapes`` miniature benchmark (the embedded model's tuning tool).

Everything runs through the library's own protocol (:func:`croft_core.evaluate.prepare_features`
and :func:`croft_core.evaluate.evaluate` on the ``shapes`` definition, seed 1, 16 shots), so these
numbers are the ones ``croft eval --method zeroshot`` reports. On top of the zero-shot accuracies
(photo and per style) and energy AUROCs (overall and per OOD class) it fits the one thing the
library has no trainer for: a 16-shot logistic-regression probe on frozen L2-normalised features
(scikit-learn, ``C`` picked on the validation split) — the headroom a fine-tuning method could reach.

Command line::

    croft check-embedded --data DIR [--model FOLDER] [--json FILE]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from croft_core.synth.world import DOMAINS

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


def evaluate(model_dir: str | Path, data_dir: str | Path | None = None, probe: bool = True
             ) -> dict[str, float]:
    """All benchmark numbers (accuracies in %) of the ``local-dir:`` model in ``model_dir``.

    Args:
        model_dir: an open_clip ``local-dir:`` folder.
        data_dir: a rendered shapes dataset (``croft render-shapes``); default: the cached one.
        probe: also fit the logistic-regression probe.
    """
    from croft_core.backbones import load_backbone
    from croft_core.evaluate import benchmark_text_features, evaluate as run_protocol
    from croft_core.evaluate import prepare_features, zeroshot_model
    from croft_core.synth.benchmark import shapes_benchmark

    backbone = load_backbone(f"local-dir:{Path(model_dir).resolve()}")
    bench = shapes_benchmark(root=data_dir)
    feats = prepare_features(backbone, bench, shots=SHOTS, seed=SEED, cache_dir=None)
    text = benchmark_text_features(backbone, bench, cache_dir=None)
    results, _ = run_protocol(zeroshot_model(backbone, bench), text, feats)

    accuracy = {ID_DOMAIN: results["id"]["accuracy"], **{c["name"]: c["accuracy"] for c in results["covariate"]}}
    out: dict[str, float] = {"logit_scale": backbone.logit_scale}
    out.update({f"zs_{d}": 100.0 * accuracy[d] for d in DOMAINS})
    out["auroc_energy"] = results["semantic_all"]["energy"]["auroc"]
    out.update({f"auroc_{s['name']}": s["scores"]["energy"]["auroc"] for s in results["semantic"]})
    if probe:
        clf, c = linear_probe(feats.train, feats.val)
        out["probe_C"] = c
        for fs in [feats.id_test, *feats.covariate]:
            domain = ID_DOMAIN if fs is feats.id_test else fs.name
            out[f"probe_{domain}"] = float(100.0 * np.mean(clf.predict(_x(fs)) == fs.labels.numpy()))
    return out


def target_report(result: dict[str, float]) -> dict[str, bool]:
    """Which of the embedded-model targets (issue 3) ``result`` meets."""
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
