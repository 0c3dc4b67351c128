"""The CRoFT objective: its pure terms and the training steps that apply them.

The two live apart: :mod:`croft_core.loss_terms` holds the objective terms as pure functions of
tensors (``same_class_similarity``, ``energy_gradient_penalty``), :mod:`croft_core.steps` the
official, clean and supervised steps, which own optimizer stepping. This module is their public
import point (``from croft_core.losses import official_step, energy_gradient_penalty``); it defines
nothing itself, so the dependency runs one way: ``losses -> steps -> loss_terms``.
"""

from __future__ import annotations

from .loss_terms import EDR_REDUCTIONS, energy_gradient_penalty, same_class_similarity
from .steps import clean_step, official_step, supervised_step

__all__ = ["EDR_REDUCTIONS", "clean_step", "energy_gradient_penalty", "official_step",
           "same_class_similarity", "supervised_step"]
