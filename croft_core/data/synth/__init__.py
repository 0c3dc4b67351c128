"""Embedded miniature of CRoFT's setting: a procedural shapes world and a tiny CLIP.

Real CLIP weights and benchmark datasets cannot be downloaded everywhere, so the
project ships an honest miniature that runs offline on a CPU in seconds:

* :mod:`croft_core.data.synth.world` -- a deterministic, seeded renderer of two dozen
  shape classes in four styles (``photo``, ``sketch``, ``cartoon``, ``painting``)
  that act as domains, plus web-like captions that name the exact class.
* :mod:`croft_core.data.synth.dataset` -- exports the world as a Hugging Face
  ``datasets`` dataset (``croft render-shapes --out DIR``).
* :mod:`croft_core.runs.pretrain` -- contrastive pretraining of a tiny open_clip
  CLIP from scratch on a rendered stream, mostly photos (``croft pretrain-embedded``).
* :mod:`croft_core.runs.embedded_check` -- measures zero-shot / linear-probe / OOD numbers
  of a model on the ``shapes`` benchmark (``croft check-embedded``).

The benchmarks built on the world (``shapes``, ``shapes_dg``) live in
:mod:`croft_core.data.benchmarks.shapes`.

The shipped weights live in ``croft_core/data/synth/embedded/`` as an open_clip
``local-dir:`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``), and a CRoFT
checkpoint trained on the ``shapes`` benchmark with them in ``croft_core/data/synth/croft-shapes/``
(``croft bench ... --grid`` run, seed 1; the app lists it next to zero-shot).
"""

from pathlib import Path

EMBEDDED_DIR: Path = Path(__file__).resolve().parent / "embedded"
"""Folder of the shipped tiny CLIP, loadable as ``local-dir:<EMBEDDED_DIR>``."""

EMBEDDED_CHECKPOINT: Path = Path(__file__).resolve().parent / "croft-shapes"
"""A CRoFT checkpoint for the embedded backbone (official objective, lr/λ selected on validation)."""

__all__ = ["EMBEDDED_CHECKPOINT", "EMBEDDED_DIR"]
