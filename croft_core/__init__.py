"""CRoFT Lab: robust fine-tuning of frozen CLIP with open-set rejection.

Implements CRoFT (Zhu et al., "CRoFT: Robust Fine-Tuning with Concurrent Optimization for OOD
Generalization and Open-Set OOD Detection", ICML 2024, arXiv 2405.16417) on open_clip backbones,
with baselines, OOD scores, metrics, benchmarks and Hub checkpoints. The public API is re-exported
here; submodules never need to be imported directly.
"""

from .backbones import (Backbone, BackboneUnavailableError, build_text_classifier,
                        encode_text_truncated, load_backbone, parse_spec)
from .benchmarks import Benchmark, SplitSpec, check_sources, get_benchmark, materialize
from .detector import NotFittedError, ThresholdDetector
from .errors import CroftError, HubError
from .evaluate import (BenchmarkFeatures, calibrate, compute_scores, evaluate, prepare_features,
                       zeroshot_model)
from .features import FeatureSet, extract_features
from .hub import CheckpointNotFoundError, load_model, push_checkpoint
from .loss_terms import energy_gradient_penalty, same_class_similarity
from .methods import ClipAdapterHead, LinearProbeHead, TipAdapterHead, ZeroShotHead
from .metrics import accuracy, aupr, auroc, fpr_at_tpr, full_spectrum_metrics, ood_metrics
from .model import CroftHead, CroftModel, HeadConfig, render_model_card
from .negatives import DEFAULT_NEG_THRESHOLD, LexiconError, NegativeLabels
from .prompts import get_templates, get_vocabulary, list_vocabularies, parse_vocabulary
from .scoring import energy, knn_score, max_logit, mcm, msp, neglabel
from .steps import clean_step, official_step, supervised_step
from .train import METHODS, TrainConfig, TrainResult, init_model, method_config, train

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
