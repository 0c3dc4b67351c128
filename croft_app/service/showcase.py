"""The app's first screen: what the model knows (thumbnails of the ID classes) and what to try.

:data:`SHOWCASE` lists the examples a visitor can click, one per kind of case: an ID photo, an ID
class in another style, a shape the model was never taught, and an image against a vocabulary
it does not fit. Their images are rendered once from the shapes world (seeded) into a cache
folder; the model's real answers are computed by the app at start-up (:func:`example_caption`
turns a ``/classify`` result into the thumbnail's caption), never written by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["SHOWCASE", "Example", "example_caption", "render_classes", "render_showcase"]

SHOWCASE_SEED = 7  # rendering seed of the example images (fixed: the examples never change)
THUMB_SIZE = 96  # class thumbnails
EXAMPLE_SIZE = 224


@dataclass(frozen=True)
class Example:
    """One clickable example: a rendered image, the vocabulary to use, and what it shows."""

    shape: str
    style: str
    vocabulary: str  # a preset name or class names
    title: str


SHOWCASE = (
    Example("circle", "photo", "shapes", "known shape"),
    Example("star", "painting", "shapes", "known shape, painted"),
    Example("pentagon", "photo", "shapes", "shape it never learned"),
    Example("heart", "photo", "cat, dog, horse, car", "heart vs cat, dog, horse, car"),
)


def _render(path: Path, shape: str, style: str, rng: np.random.Generator, size: int) -> Path:
    from croft_core.data.synth.world import render

    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
        render(shape, style, rng, size=size).save(tmp)
        os.replace(tmp, path)  # atomic: another process may render the same file
    return path


def render_showcase(folder: str | Path) -> list[Path]:
    """Render the :data:`SHOWCASE` images into ``folder`` (once; reused) and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [_render(folder / f"{e.shape}-{e.style}-{SHOWCASE_SEED}.png", e.shape, e.style,
                    np.random.default_rng([SHOWCASE_SEED, i]), EXAMPLE_SIZE) for i, e in enumerate(SHOWCASE)]


def render_classes(folder: str | Path) -> list[tuple[Path, str]]:
    """Photo-style thumbnails of the ID classes the embedded model was taught: ``[(path, name)]``."""
    from croft_core.data.synth.world import ID_CLASSES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [(_render(folder / f"class-{name}.png", name, "photo", np.random.default_rng([SHOWCASE_SEED, 100 + i]),
                     THUMB_SIZE), name) for i, name in enumerate(ID_CLASSES)]


def example_caption(example: Example, result: Mapping[str, Any]) -> str:
    """``"known shape, painted → star"`` from the model's real ``/classify`` result."""
    said = result["label"]
    if not result.get("accepted") and result.get("nearest_negative"):
        said = f"unknown ('{result['nearest_negative']}'?)"
    return f"{example.title} → {said}"
