"""Run a benchmark protocol: features -> (train) -> accuracy under covariate shift and open-set
detection, written as the results JSON of DESIGN.md.

Protocol (CROFT_SPEC.md §3, with the spec's §5 fixes as defaults):

- accuracy on the ID test split and on every covariate-shifted split (same classes);
- detection of every semantic-shift split against the ID test split with each score (energy, MCM,
  MSP, MaxLogit, KNN): AUROC, AUPR-In, AUPR-Out, FPR95; ``correct_only=True`` reproduces the
  official "correctly classified ID reference only" variant;
- full-spectrum detection (covariate splits counted as ID, OpenOOD v1.5) and accuracy over ID +
  covariate;
- the deployment threshold: the energy at 95% TPR on the *validation* split (never the test split),
  with the acceptance rates it gives on the test splits.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import metrics, scoring
from .backbones import DEFAULT_CACHE_DIR, Backbone, build_text_classifier
from .detector import ThresholdDetector
from .features import FeatureSet
from .model import CroftModel, HeadConfig
from .prompts import get_templates

logger = logging.getLogger(__name__)

LOGIT_SCORES = ("energy", "mcm", "msp", "max_logit")
ALL_SCORES = LOGIT_SCORES + ("knn",)


@dataclass
class BenchmarkFeatures:
    """Cached features of every split of one (benchmark, shots, seed)."""

    train: FeatureSet
    val: FeatureSet
    id_test: FeatureSet
    covariate: list[FeatureSet] = field(default_factory=list)
    semantic: list[FeatureSet] = field(default_factory=list)
    splits: dict[str, Any] = field(default_factory=dict)  # role -> LoadedSplit(s), for the manifest


def prepare_features(backbone: Backbone, benchmark, *, shots: int | None, seed: int, views: int = 8,
                     cache_dir: str | Path | None = DEFAULT_CACHE_DIR, batch_size: int = 64,
                     num_workers: int = 0, need_train: bool = True, amp: bool = True,
                     amp_dtype: str = "fp16") -> BenchmarkFeatures:
    """Materialise the benchmark's splits and extract (or load cached) features for each.

    Every source is checked first (:func:`~croft_core.benchmarks.check_sources`), so a missing
    folder or an unreachable Hub id fails before any image is encoded. Under ``torchrun`` (after
    :func:`croft_core.distributed.init_distributed`) each split is encoded in shards across the ranks
    and gathered into the same cache files a single process writes; every rank gets every feature.

    Args:
        backbone: the frozen backbone.
        benchmark: a :class:`~croft_core.benchmarks.Benchmark`.
        shots: few-shot training images per class (``None`` = all).
        seed: seeds the few-shot sample, the validation sample and the augmentations.
        views: augmented views per training image (1 plain view when the benchmark sets
            ``train_augment=False``).
        cache_dir: feature cache root (``None`` disables caching).
        batch_size: images per encoder call.
        num_workers: image-decoding worker processes.
        need_train: False skips the training split (zero-shot evaluation only needs val and test).
        amp, amp_dtype: autocast precision on CUDA (see :func:`croft_core.features.encode_split`).
    """
    from .benchmarks import ROLES, check_sources, materialize
    from .distributed import extract_features as extract

    check_sources(benchmark, ROLES if need_train else tuple(r for r in ROLES if r != "train"))

    def encode(split, **kw):
        return extract(backbone, split, cache_dir=cache_dir, batch_size=batch_size,
                       num_workers=num_workers, amp=amp, amp_dtype=amp_dtype, **kw)

    splits = {"val": materialize(benchmark, "val", shots=shots, seed=seed),
              "id_test": materialize(benchmark, "id_test", shots=shots, seed=seed),
              "covariate": materialize(benchmark, "covariate", shots=shots, seed=seed),
              "semantic": materialize(benchmark, "semantic", shots=shots, seed=seed)}
    if need_train:
        splits["train"] = materialize(benchmark, "train", shots=shots, seed=seed)
    augment = benchmark.train_augment  # False: the benchmark's images do not survive random crops
    train = (encode(splits["train"], views=views if augment else 1, augment=augment, seed=seed)
             if need_train
             else FeatureSet(torch.zeros(1, 0, backbone.embed_dim), torch.zeros(0, dtype=torch.long), []))
    return BenchmarkFeatures(
        train=train, val=encode(splits["val"]), id_test=encode(splits["id_test"]),
        covariate=[encode(s) for s in splits["covariate"]],
        semantic=[encode(s) for s in splits["semantic"]], splits=splits)


def benchmark_text_features(backbone: Backbone, benchmark, classnames: Sequence[str] | None = None,
                            cache_dir: str | Path | None = DEFAULT_CACHE_DIR) -> torch.Tensor:
    """Text classifier of the benchmark's classes with its template set and text mode."""
    return build_text_classifier(backbone, classnames or benchmark.classnames,
                                 get_templates(benchmark.templates), text_mode=benchmark.text_mode,
                                 cache_dir=cache_dir)


@torch.no_grad()
def compute_scores(model: CroftModel, features: torch.Tensor, text_features: torch.Tensor, *,
                   bank: torch.Tensor | None = None, knn_k: int = 1,
                   mcm_temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Logits ``[N, K]`` and every OOD score (higher = more in-distribution) for ``features [N, d]``."""
    logits = model(features, text_features)
    out = {"energy": scoring.energy(logits),
           "mcm": scoring.mcm(logits, temperature=mcm_temperature, logit_scale=model.config.logit_scale),
           "msp": scoring.msp(logits), "max_logit": scoring.max_logit(logits)}
    if bank is not None and len(bank):
        out["knn"] = scoring.knn_score(model.embed_image(features), bank, k=min(knn_k, len(bank)))
    return logits, {k: v.detach().cpu().numpy().astype(np.float64) for k, v in out.items()}


def _hits(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """``[N]`` bool: which samples are classified correctly."""
    return (logits.argmax(-1).cpu() == labels.cpu()).numpy()


def _accuracy(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else float("nan")


@torch.no_grad()
def evaluate(model: CroftModel, text_features: torch.Tensor, feats: BenchmarkFeatures, *,
             tpr: float = 0.95, knn_k: int = 1, correct_only: bool = False,
             mcm_temperature: float = 1.0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate a model on cached benchmark features.

    Args:
        model: any trained or zero-shot :class:`CroftModel`.
        text_features: ``[K, d]`` text features of the benchmark classes.
        feats: from :func:`prepare_features`.
        tpr: ID true-positive rate of FPR@TPR and of the deployment threshold.
        knn_k: neighbour rank of the KNN score (bank = adapted training features, all views).
        correct_only: official variant — only correctly classified ID test images form the ID side.
        mcm_temperature: MCM's temperature.

    Returns:
        ``(results, energies)``: the results dict (DESIGN.md keys, without run metadata) and the
        energy scores of every split by display name, for plots.
    """
    device = next(iter(model.parameters()), text_features).device
    text_features = text_features.to(device)
    bank = None
    if len(feats.train):
        bank = model.embed_image(feats.train.features.to(device).flatten(0, 1))  # [V*N, d]

    def run(fs: FeatureSet):
        return compute_scores(model, fs.first_view().to(device), text_features, bank=bank,
                              knn_k=knn_k, mcm_temperature=mcm_temperature)

    id_logits, id_scores = run(feats.id_test)
    id_hits = _hits(id_logits, feats.id_test.labels)
    id_ref = {k: v[id_hits] for k, v in id_scores.items()} if correct_only else id_scores
    results: dict[str, Any] = {
        "id": {"name": feats.id_test.name, "accuracy": _accuracy(id_hits), "n": len(feats.id_test)},
        "covariate": [], "semantic": []}
    energies = {f"ID: {feats.id_test.name}": id_scores["energy"]}

    cov_scores, all_hits = [], [id_hits]
    for fs in feats.covariate:
        logits, sc = run(fs)
        hits = _hits(logits, fs.labels)
        results["covariate"].append({"name": fs.name, "accuracy": _accuracy(hits), "n": len(fs)})
        cov_scores.append(sc)
        all_hits.append(hits)
        energies[f"covariate: {fs.name}"] = sc["energy"]

    sem_scores = []
    for fs in feats.semantic:
        _, sc = run(fs)
        sem_scores.append(sc)
        results["semantic"].append({"name": fs.name, "n": len(fs), "scores": {
            name: metrics.ood_metrics(id_ref[name], sc[name], tpr=tpr) for name in sc}})
        energies[f"semantic: {fs.name}"] = sc["energy"]

    if sem_scores:
        all_sem = {k: np.concatenate([s[k] for s in sem_scores]) for k in sem_scores[0]}
        results["semantic_all"] = {name: metrics.ood_metrics(id_ref[name], all_sem[name], tpr=tpr)
                                   for name in all_sem}
        results["full_spectrum"] = {
            name: metrics.full_spectrum_metrics(id_scores[name], [c[name] for c in cov_scores],
                                                all_sem[name], tpr=tpr) for name in all_sem}
        results["full_spectrum"]["accuracy"] = _accuracy(np.concatenate(all_hits))

    # deployment threshold: fitted on validation energies, reported on the test splits
    _, val_scores = run(feats.val)
    detector = ThresholdDetector(tpr=tpr).fit(val_scores["energy"])
    results["threshold"] = {
        "score": "energy", "tpr": tpr, "value": float(detector.threshold_), "fitted_on": "val",
        "id_accept_rate": float(detector.accept(id_scores["energy"]).mean()),
        "covariate_accept_rate": [float(detector.accept(c["energy"]).mean()) for c in cov_scores],
        "semantic_accept_rate": [float(detector.accept(s["energy"]).mean()) for s in sem_scores]}

    if model.config.head == "croft":  # the paper's figure: energies of generated covariate features
        gen = model.head.generate(feats.id_test.first_view().to(device))
        energies["generated covariate"] = scoring.energy(
            model.config.logit_scale * gen @ model.head.adapt_text(text_features).T).cpu().numpy()
    return results, energies


def calibrate(model: CroftModel, text_features: torch.Tensor, val: FeatureSet, *, tpr: float = 0.95,
              max_reference: int = 2000) -> CroftModel:
    """Store the energy threshold at ``tpr`` on ``val`` and an ID score sample in the config."""
    device = next(iter(model.parameters()), text_features).device
    _, scores = compute_scores(model, val.first_view().to(device), text_features.to(device))
    energy = scores["energy"]
    detector = ThresholdDetector(tpr=tpr).fit(energy)
    sample = energy if len(energy) <= max_reference else np.random.default_rng(0).choice(
        energy, max_reference, replace=False)
    return model.update_config(threshold=float(detector.threshold_), threshold_tpr=tpr,
                               id_scores=tuple(round(float(s), 4) for s in sample))


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Flat metrics for the model card: ID / covariate accuracy and energy detection."""
    out = {"id_accuracy": results["id"]["accuracy"]}
    for c in results["covariate"]:
        out[f"accuracy/{c['name']}"] = c["accuracy"]
    if "semantic_all" in results:
        out["energy_auroc"] = results["semantic_all"]["energy"]["auroc"]
        out["energy_fpr95"] = results["semantic_all"]["energy"]["fpr95"]
    return out


def zeroshot_model(backbone: Backbone, benchmark=None, classnames: Sequence[str] = ()) -> CroftModel:
    """A zero-shot :class:`CroftModel` for ``backbone`` (no trainable weights)."""
    names = tuple(classnames or (benchmark.classnames if benchmark is not None else ()))
    templates = get_templates(benchmark.templates) if benchmark is not None else ()
    config = HeadConfig(head="zeroshot", method="zeroshot", embed_dim=backbone.embed_dim,
                        num_classes=len(names), logit_scale=backbone.logit_scale,
                        backbone=backbone.spec, classnames=names, templates=templates,
                        text_mode=benchmark.text_mode if benchmark is not None else "normalized")
    return CroftModel(config).to(backbone.device)


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, allow_nan=True))
    return path
