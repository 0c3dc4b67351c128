"""CRoFT's objective: its loss terms as pure functions (``terms``) and the training steps that own
optimizer stepping (``steps``: the official step, the clean min-max step and the supervised step)."""

from croft_core.objectives.steps import clean_step, official_step, supervised_step
from croft_core.objectives.terms import EDR_REDUCTIONS, energy_gradient_penalty, same_class_similarity

__all__ = ["EDR_REDUCTIONS", "clean_step", "energy_gradient_penalty", "official_step",
           "same_class_similarity", "supervised_step"]
