"""CRoFT Lab: robust fine-tuning of frozen CLIP with open-set rejection.

Implements CRoFT (Zhu et al., "CRoFT: Robust Fine-Tuning with Concurrent Optimization for OOD
Generalization and Open-Set OOD Detection", ICML 2024, arXiv 2405.16417) on open_clip backbones,
with baselines, OOD scores, metrics, benchmarks and Hub checkpoints. The public API is re-exported
here; submodules never need to be imported directly.
"""

from croft_core.clip.backbones import (Backbone, BackboneUnavailableError, build_text_classifier,
                        encode_text_truncated, load_backbone, parse_spec)
from croft_core.data.benchmarks import Benchmark, SplitSpec, check_sources, get_benchmark, materialize
from croft_core.ood.detector import NotFittedError, ThresholdDetector
from croft_core.errors import CroftError, HubError
from croft_core.runs.evaluate import (BenchmarkFeatures, calibrate, compute_scores, evaluate, prepare_features,
                       zeroshot_model)
from croft_core.clip.features import FeatureSet, extract_features
from croft_core.heads.hub import CheckpointNotFoundError, load_model, push_checkpoint
from croft_core.objectives.terms import energy_gradient_penalty, same_class_similarity
from croft_core.heads.baselines import ClipAdapterHead, LinearProbeHead, TipAdapterHead, ZeroShotHead
from croft_core.ood.metrics import accuracy, aupr, auroc, fpr_at_tpr, full_spectrum_metrics, ood_metrics
from croft_core.heads.checkpoint import CroftHead, CroftModel, HeadConfig, render_model_card
from croft_core.ood.negatives import DEFAULT_NEG_THRESHOLD, LexiconError, NegativeLabels
from croft_core.clip.prompts import get_templates, get_vocabulary, list_vocabularies, parse_vocabulary
from croft_core.ood.scores import energy, knn_score, max_logit, mcm, msp, neglabel
from croft_core.objectives.steps import clean_step, official_step, supervised_step
from croft_core.runs.train import METHODS, TrainConfig, TrainResult, init_model, method_config, train

__version__ = "0.1.0"

__all__ = [
    "Benchmark", "SplitSpec", "check_sources", "get_benchmark", "materialize",
    "Backbone", "BackboneUnavailableError", "build_text_classifier", "encode_text_truncated",
    "load_backbone", "parse_spec", "CroftError", "HubError", "NotFittedError", "ThresholdDetector",
    "BenchmarkFeatures", "calibrate", "compute_scores", "evaluate", "prepare_features",
    "zeroshot_model", "FeatureSet", "extract_features", "CheckpointNotFoundError", "load_model",
    "push_checkpoint", "energy_gradient_penalty", "same_class_similarity", "clean_step",
    "official_step", "supervised_step", "ClipAdapterHead", "LinearProbeHead", "TipAdapterHead",
    "ZeroShotHead", "accuracy", "aupr", "auroc", "fpr_at_tpr", "full_spectrum_metrics",
    "ood_metrics", "CroftHead", "CroftModel", "HeadConfig", "render_model_card", "get_templates",
    "get_vocabulary", "list_vocabularies", "parse_vocabulary", "energy", "knn_score", "max_logit",
    "mcm", "msp", "neglabel", "DEFAULT_NEG_THRESHOLD", "LexiconError", "NegativeLabels", "METHODS", "TrainConfig", "TrainResult", "init_model", "method_config", "train",
]
