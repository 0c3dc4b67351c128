"""Run a benchmark protocol: features -> (train) -> accuracy under covariate shift and open-set
detection, written as the results JSON of DESIGN.md.

Protocol (CROFT_SPEC.md §3, with the spec's §5 fixes as defaults):

- accuracy on the ID test split and on every covariate-shifted split (same classes);
- detection of every semantic-shift split against an ID side chosen by ``detection_id`` (the
  benchmark's definition: the ID test split for Setup-I and ``shapes``; the correctly classified
  held-out-domain images for Setup-II and ``shapes_dg``, as the official code, CROFT_SPEC §3.2) with
  every score of :data:`croft_core.ood.scores.SCORES` (energy, MCM, MSP, MaxLogit, KNN, NegLabel):
  AUROC, AUPR-In, AUPR-Out, FPR95 (:data:`croft_core.ood.metrics.METRIC_KEYS`); the side used is
  written in ``results["detection"]``;
- full-spectrum detection (covariate splits counted as ID, OpenOOD v1.5) and accuracy over ID +
  covariate;
- the deployment threshold: the energy at ``tpr`` (default 95%) TPR on the *validation* split (never
  the test split), with the acceptance rates it gives on the test splits.

Cosine-based scores (MCM, NegLabel) use the cosines of the head's embedded image to the head's
(adapted) class texts, :func:`class_cosines`; NegLabel's negatives go through the same text map
(:func:`negative_label_scores`, also the app's path).
Features come from :func:`croft_core.runs.torchrun.prepare_features` (re-exported here).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from croft_core.ood import metrics

from croft_core.ood import scores as scoring
from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone, build_text_classifier
from croft_core.ood.detector import ThresholdDetector
from croft_core.runs.torchrun import BenchmarkFeatures, prepare_features
from croft_core.clip.features import FeatureSet
from croft_core.clip.features import l2n
from croft_core.heads.checkpoint import CroftModel, HeadConfig
from croft_core.ood.negatives import OFFICIAL, NegativeLabels, lexicon_label
from croft_core.clip.prompts import get_templates
from croft_core.data.benchmarks.spec import DETECTION_IDS

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkFeatures", "benchmark_text_features", "calibrate", "class_cosines", "compute_scores",
           "evaluate", "global_local_cosines", "headline_metrics", "negative_label_scores", "prepare_features",
           "text_map", "write_results", "zeroshot_model"]


def benchmark_text_features(backbone: Backbone, benchmark, classnames: Sequence[str] | None = None,
                            cache_dir: str | Path | None = DEFAULT_CACHE_DIR) -> torch.Tensor:
    """Text classifier of the benchmark's classes with its template set and text mode."""
    return build_text_classifier(backbone, classnames or benchmark.classnames,
                                 get_templates(benchmark.templates), text_mode=benchmark.text_mode,
                                 cache_dir=cache_dir)


def text_map(model: CroftModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The head's map from CLIP text features ``[K, d]`` to the unit text embeddings it compares with.

    CRoFT adapts the text side (``adapt_text``); every other head compares with the normalised CLIP
    text features. Class-agnostic maps apply to any text, negative labels included.
    """
    return getattr(model.head, "adapt_text", l2n)


def class_cosines(model: CroftModel, features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` cosines of the embedded images ``[N, d]`` to the head's class text embeddings ``[K, d]``.

    These are what MCM and NegLabel are defined on, for every head (Tip-Adapter's and a linear
    probe's logits are not scaled cosines).
    """
    return global_local_cosines(model, features, text_features)[0]


def global_local_cosines(model: CroftModel, features: torch.Tensor, text_features: torch.Tensor,
                         local: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`class_cosines` and, with local features ``[N, P, d]``, their cosines ``[N, P, K]`` to
    the same class texts (GL-MCM). Prompt-learning heads compare with their learned prompts
    (``head.cosines``); every other head embeds the local features with its image map."""
    own = getattr(model.head, "cosines", None)
    if own is not None:
        return own(features, local)
    texts = text_map(model)(text_features)  # [K, d]
    return (model.embed_image(features) @ texts.T,
            None if local is None else model.embed_image(local) @ texts.T)


@torch.no_grad()
def negative_label_scores(model: CroftModel, features: torch.Tensor, text_features: torch.Tensor,
                          negatives: NegativeLabels, *,
                          cosines: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """NegLabel scores and nearest negative words of raw image features: the one scoring path of
    :func:`evaluate` and of the app (``croft_app.service.decision``).

    The image side is the head's embedding, the ID side the head's own class cosines
    (:func:`class_cosines`: its text map over ``text_features``, or its learned prompts), the
    negatives go through the head's text map (:meth:`NegativeLabels.with_text_map`, from their raw
    CLIP text, so negatives fitted with or without the map give the same score).

    Args:
        model: any :class:`CroftModel`.
        features: ``[N, d]`` raw image features.
        text_features: ``[K, d]`` the class text features the model classifies with.
        negatives: NegLabel's negatives for these classes.
        cosines: ``[N, K]`` :func:`class_cosines` when the caller has them already.

    Returns:
        ``(scores [N] in (0, 1), nearest [N] long indices into negatives.words)``.
    """
    if cosines is None:
        cosines = class_cosines(model, features, text_features)
    adapted = negatives.with_text_map(text_map(model))
    return adapted.score(model.embed_image(features), cosines=cosines)


@torch.no_grad()
def compute_scores(model: CroftModel, features: torch.Tensor, text_features: torch.Tensor, *,
                   bank: torch.Tensor | None = None, knn_k: int = 1, mcm_temperature: float = 1.0,
                   negatives: NegativeLabels | None = None,
                   local: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Logits and every OOD score of :data:`croft_core.ood.scores.SCORES` for raw image features.

    Args:
        model: any :class:`CroftModel`.
        features: ``[N, d]`` raw image features.
        text_features: ``[K, d]`` class text features.
        bank: ``[B, d]`` embedded ID reference features for KNN (None: no ``knn`` score).
        knn_k: KNN's neighbour rank.
        mcm_temperature: MCM's temperature on the cosines.
        negatives: NegLabel's negatives for these classes, raw (the head's text map is applied
            here); None: no ``neglabel`` score.
        local: ``[N, P, d]`` local image features (None: no ``glmcm`` score).

    Returns:
        ``(logits [N, K], {score name: float64 [N]})``, higher = more in-distribution.
    """
    embedded = model.embed_image(features)  # [N, d] unit rows
    cosines, local_cosines = global_local_cosines(model, features, text_features, local)
    inputs = scoring.ScoreInputs(
        logits=model(features, text_features), cosines=cosines, local_cosines=local_cosines,
        embedded=embedded, bank=bank, knn_k=knn_k, mcm_temperature=mcm_temperature)
    scores = scoring.score_all(inputs)
    if negatives is not None:  # the app's path too (negative_label_scores)
        scores["neglabel"] = negative_label_scores(model, features, text_features, negatives, cosines=cosines)[0]
    scores = {k: scores[k] for k in scoring.SCORES if k in scores}
    return inputs.logits, {k: v.detach().cpu().numpy().astype(np.float64) for k, v in scores.items()}


class _SplitScorer:
    """Scores splits of cached features with one model; keeps predictions for the accuracies."""

    def __init__(self, model: CroftModel, text_features: torch.Tensor, feats: BenchmarkFeatures, **kw):
        self.model, self.kw = model, kw
        self.device = next(iter(model.parameters()), text_features).device
        self.text = text_features.to(self.device)
        self.kw["bank"] = (model.embed_image(feats.train.features.to(self.device).flatten(0, 1))  # [V*N, d]
                           if len(feats.train) else None)
        self.kw["negatives"] = feats.negatives

    def __call__(self, fs: FeatureSet) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        local = fs.first_view_local()
        logits, scores = compute_scores(self.model, fs.first_view().to(self.device), self.text, **self.kw,
                                        local=None if local is None else local.to(self.device))
        return logits.argmax(-1).cpu().numpy(), scores


def _detection_reference(reference: str, id_scores: dict, id_preds: np.ndarray, id_labels: np.ndarray,
                         cov_parts: list[tuple[dict, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The ID side of detection, per score: a key of :data:`DETECTION_IDS` applied to the scored
    ID test split and the ``(scores, predictions, labels)`` of every covariate set."""
    if reference not in DETECTION_IDS:
        raise ValueError(f"detection_id must be one of {sorted(DETECTION_IDS)}; got {reference!r}")
    if reference == "id_test":
        return id_scores
    if reference == "id_test_correct":
        parts = [(id_scores, id_preds, id_labels)]
    elif not cov_parts:
        raise ValueError("detection_id='covariate_correct' needs a covariate set; this benchmark has none "
                         "(use detection_id='id_test')")
    else:
        parts = cov_parts
    correct = np.concatenate([p == y for _, p, y in parts])
    if not correct.any():
        logger.warning("detection_id=%r: no image is classified correctly, so detection has no ID side "
                       "(its metrics are NaN)", reference)
    return {k: np.concatenate([sc[k] for sc, _, _ in parts])[correct] for k in id_scores}


def _detection(results: dict[str, Any], id_scores: dict, id_ref: dict, cov_scores: list,
               sem_scores: list, far_ood: Sequence[str] = ()) -> None:
    """Semantic, pooled-semantic and full-spectrum detection metrics for every score.

    With ``far_ood`` set names, the semantic sets are also pooled apart: ``semantic_near`` (the
    others) and ``semantic_far`` (those), and each semantic entry names its ``group``.
    """
    def ood(name: str, sem: np.ndarray) -> dict[str, float]:
        if not len(id_ref[name]):  # no ID side (nothing classified correctly): no detection numbers
            return {k: float("nan") for k in metrics.METRIC_KEYS}
        return metrics.ood_metrics(id_ref[name], sem)

    def pooled(parts: list) -> dict[str, Any]:
        return {name: ood(name, np.concatenate([s[name] for s in parts])) for name in parts[0]}

    for entry, sc in zip(results["semantic"], sem_scores):
        entry["scores"] = {name: ood(name, sc[name]) for name in sc}
    if not sem_scores:
        return
    all_sem = {k: np.concatenate([s[k] for s in sem_scores]) for k in sem_scores[0]}
    results["semantic_all"] = {name: ood(name, all_sem[name]) for name in all_sem}
    if far_ood:
        for entry in results["semantic"]:
            entry["group"] = "far" if entry["name"] in far_ood else "near"
        for group in ("near", "far"):
            chosen = [sc for e, sc in zip(results["semantic"], sem_scores) if e["group"] == group]
            if chosen:
                results[f"semantic_{group}"] = pooled(chosen)
    results["full_spectrum"] = {
        name: metrics.full_spectrum_metrics(id_scores[name], [c[name] for c in cov_scores], all_sem[name])
        for name in all_sem}


THRESHOLD_ROLE = "val"  # the split the deployment threshold is fitted on (never a test split)


def _deployment_threshold(run: "_SplitScorer", feats: BenchmarkFeatures, tpr: float, id_energy: np.ndarray,
                          cov_scores: list, sem_scores: list) -> dict[str, Any]:
    """The energy threshold at ``tpr`` on :data:`THRESHOLD_ROLE`, with the acceptance rates it gives
    on test; ``fitted_on`` / ``fitted_on_split`` name the split actually used."""
    split = getattr(feats, THRESHOLD_ROLE)
    detector = ThresholdDetector(tpr=tpr).fit(run(split)[1]["energy"])
    return {"score": "energy", "tpr": tpr, "value": float(detector.threshold_), "fitted_on": THRESHOLD_ROLE,
            "fitted_on_split": split.name, "n": len(split),
            "id_accept_rate": float(detector.accept(id_energy).mean()),
            "covariate_accept_rate": [float(detector.accept(c["energy"]).mean()) for c in cov_scores],
            "semantic_accept_rate": [float(detector.accept(s["energy"]).mean()) for s in sem_scores]}


def _neglabel_rule(negs: NegativeLabels, id_scores: dict, cov_scores: list, sem_scores: list) -> dict[str, Any]:
    """The negatives used and the acceptance rates of NegLabel's fixed threshold (no calibration)."""
    def rate(sc: dict) -> float:
        return float(negs.accept(sc["neglabel"]).mean())

    return {"lexicon": lexicon_label(negs.lexicon), "num_negatives": len(negs.words), "removed": list(negs.removed),
            "threshold": negs.threshold, "settings": negs.settings(), "official": dict(OFFICIAL),
            "id_accept_rate": rate(id_scores),
            "covariate_accept_rate": [rate(c) for c in cov_scores],
            "semantic_accept_rate": [rate(s) for s in sem_scores]}


@torch.no_grad()
def evaluate(model: CroftModel, text_features: torch.Tensor, feats: BenchmarkFeatures, *,
             tpr: float = 0.95, knn_k: int = 1, detection_id: str = "id_test", correct_only: bool = False,
             mcm_temperature: float = 1.0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate a model on cached benchmark features.

    Args:
        model: any trained or zero-shot :class:`CroftModel`.
        text_features: ``[K, d]`` text features of the benchmark classes.
        feats: from :func:`prepare_features` (``feats.negatives`` adds the ``neglabel`` score).
        tpr: ID true-positive rate of the deployment threshold (``fpr95`` is always at 95%).
        knn_k: neighbour rank of the KNN score (bank = adapted training features, all views).
        detection_id: the ID side of semantic detection, a key of :data:`DETECTION_IDS` (the
            benchmark's ``detection_id`` in the pipeline): ``"id_test"``, ``"id_test_correct"`` or
            ``"covariate_correct"`` (CRoFT Setup-II: held-out-domain images classified correctly).
            Recorded in ``results["detection"]``. Full-spectrum detection always uses ID + covariate.
        correct_only: turns ``"id_test"`` into ``"id_test_correct"`` (the older flag).
        mcm_temperature: MCM's temperature.

    Returns:
        ``(results, energies)``: the results dict (DESIGN.md keys, without run metadata; with
        negatives also ``neglabel``: the lexicon, M, the removed class names and the acceptance rates
        at the fixed NegLabel threshold) and the energy scores of every split by display name.
    """
    reference = "id_test_correct" if correct_only and detection_id == "id_test" else detection_id
    if reference not in DETECTION_IDS:
        raise ValueError(f"detection_id must be one of {sorted(DETECTION_IDS)}; got {detection_id!r}")
    run = _SplitScorer(model, text_features, feats, knn_k=knn_k, mcm_temperature=mcm_temperature)
    id_labels = feats.id_test.labels.numpy()
    id_preds, id_scores = run(feats.id_test)
    results: dict[str, Any] = {
        "id": {"name": feats.id_test.name, "accuracy": metrics.accuracy(id_preds, id_labels),
               "n": len(feats.id_test)}, "covariate": [], "semantic": []}
    energies = {f"ID: {feats.id_test.name}": id_scores["energy"]}
    cov_scores, preds, labels = [], [id_preds], [id_labels]
    for fs in feats.covariate:
        p, sc = run(fs)
        results["covariate"].append({"name": fs.name, "accuracy": metrics.accuracy(p, fs.labels), "n": len(fs)})
        cov_scores.append(sc)
        preds.append(p)
        labels.append(fs.labels.numpy())
        energies[f"covariate: {fs.name}"] = sc["energy"]
    cov_parts = list(zip(cov_scores, preds[1:], labels[1:]))
    id_ref = _detection_reference(reference, id_scores, id_preds, id_labels, cov_parts)
    results["detection"] = {
        "id_side": reference, "description": DETECTION_IDS[reference], "n": int(len(id_ref["energy"])),
        "sets": [feats.id_test.name] if reference.startswith("id_test") else [fs.name for fs in feats.covariate]}
    if reference != "id_test":  # the report's ROC curves use the side the AUROC was computed on
        energies[f"ID side: correctly classified {', '.join(results['detection']['sets'])}"] = id_ref["energy"]
    sem_scores = [run(fs)[1] for fs in feats.semantic]
    for fs, sc in zip(feats.semantic, sem_scores):
        results["semantic"].append({"name": fs.name, "n": len(fs)})
        energies[f"semantic: {fs.name}"] = sc["energy"]
    _detection(results, id_scores, id_ref, cov_scores, sem_scores, getattr(feats, "far_ood", ()))
    if sem_scores:
        results["full_spectrum"]["accuracy"] = metrics.accuracy(np.concatenate(preds), np.concatenate(labels))
    results["threshold"] = _deployment_threshold(run, feats, tpr, id_scores["energy"], cov_scores, sem_scores)
    if feats.negatives is not None:
        results["neglabel"] = _neglabel_rule(feats.negatives, id_scores, cov_scores, sem_scores)
    if feats.id_test.local is not None:  # GL-MCM's input: what it costs to cache
        splits = [feats.train, feats.val, feats.id_test, *feats.covariate, *feats.semantic]
        results["local_features"] = {"dtype": "float16", "positions": feats.id_test.local.shape[2],
                                     "bytes": sum(fs.local_bytes for fs in splits)}
    if model.config.head == "croft":  # the paper's figure: energies of generated covariate features
        gen = model.head.generate(feats.id_test.first_view().to(run.device))
        energies["generated covariate"] = scoring.energy(
            model.config.logit_scale * gen @ model.head.adapt_text(run.text).T).cpu().numpy()
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
    for group in ("near", "far"):  # a benchmark with a far-OOD set pools them apart too
        if f"semantic_{group}" in results:
            out[f"energy_auroc/{group}"] = results[f"semantic_{group}"]["energy"]["auroc"]
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
