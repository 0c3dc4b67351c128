"""The app's first screen: what the model can know (thumbnails of the ID classes) and what to try.

The clickable examples are **test-split images** of the shapes world (the seeded ``shapes`` dataset's
test images, rendered exactly as ``croft render-shapes`` renders them), chosen by a rule written here,
not by hand, and captioned with each model's real ``/classify`` answer (computed at start-up):

1. the first photo test image of an ID class (a known shape, as it was taught);
2. the first test image in the held-out style (:data:`HELDOUT_STYLE`) on which the models **disagree**
   and one of them names the true class (else the first disagreement), and 3. the first on which they
   **agree** (scanning ID classes in order, test index by test index);
4. the first photo test image of a shape it was never taught (an unseen class);
5. the first non-shape test image (noise: the far-OOD set), which should come back "unknown".

:data:`WHAT_IT_KNOWS` is the one line that tells a visitor what the embedded model can know;
:func:`heldout_numbers` and :func:`context_line` give the line of context under the examples (the
checkpoint's and zero-shot's accuracy on the held-out style), read from the checkpoint folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["HELDOUT_STYLE", "SHOWCASE", "WHAT_IT_KNOWS", "ZERO_SHOT_RESULTS", "Example", "HeldoutNumbers",
           "answered_examples", "context_line", "example_caption", "example_image", "heldout_numbers",
           "render_classes", "render_showcase", "shown_image"]

SHOWCASE_SEED = 7  # rendering seed of the class thumbnails (fixed)
DATASET_SEED = 0  # the examples are this render seed's test images (the benchmark's default dataset)
THUMB_SIZE = 96  # class thumbnails
EXAMPLE_SIZE = 224  # shown size (the 64 px test image, upscaled)
HELDOUT_STYLE = "painting"  # the style the shipped checkpoint never trained on
SCAN = 30  # test indices scanned per class for a (dis)agreement
FINE_TUNED = "fine-tuned"  # how a caption names the second model unless told (the shown checkpoint)
ZERO_SHOT_RESULTS = "zeroshot.json"  # in a checkpoint folder: zero-shot's `croft eval` metrics, same benchmark

WHAT_IT_KNOWS = ("It knows only **drawn shapes in four styles** (photo, sketch, cartoon, painting) and "
                 "was taught the **ten shapes** below by name; anything else — a real photo, noise, a "
                 "texture — should come back *unknown*.")
"""The one line on the first screen that says what the embedded model can know."""

Answer = Callable[[str, Sequence[Any], str], list[Mapping[str, Any]]]
"""``(model name, images, vocabulary) -> /classify results``: how the app answers (one per image)."""


@dataclass(frozen=True)
class Example:
    """One clickable example: a test image of the world, the vocabulary to use, and what it shows."""

    shape: str  # a class of the world, or a non-shape kind
    style: str  # a style of the world, or "none" for a non-shape
    vocabulary: str  # a preset name or class names
    title: str
    index: int = 0  # the test split's image number of (shape, style)

    @property
    def filename(self) -> str:
        return f"{self.shape}-{self.style}-{self.index}-seed{DATASET_SEED}.png".replace(" ", "_")


SHOWCASE = (
    Example("circle", "photo", "shapes", "known shape"),
    Example("pentagon", "photo", "shapes", "shape it never learned"),
    Example("noise", "none", "shapes", "not a shape at all"),
)
"""The fixed examples (1, 4 and 5 of the rule); the held-out-style pair is chosen at start-up."""


def example_image(example: Example, size: int = 64):
    """The test-split image of ``example`` (seed :data:`DATASET_SEED`), exactly as the dataset renders it."""
    from croft_core.data.synth.dataset import example_rng, nonshape_rng
    from croft_core.data.synth.world import CLASSES, DOMAINS, NONSHAPE_KINDS, random_colour, render, render_nonshape

    if example.shape in NONSHAPE_KINDS:
        rng = nonshape_rng(DATASET_SEED, "test", NONSHAPE_KINDS.index(example.shape), example.index)
        return render_nonshape(example.shape, rng, size=size)
    rng = example_rng(DATASET_SEED, "test", CLASSES.index(example.shape), DOMAINS.index(example.style),
                      example.index)
    return render(example.shape, example.style, rng, size=size, colour=random_colour(rng))


def shown_image(example: Example):
    """The image a visitor gets by clicking ``example``: its test image upscaled to :data:`EXAMPLE_SIZE`."""
    from PIL import Image

    return example_image(example).resize((EXAMPLE_SIZE, EXAMPLE_SIZE), Image.Resampling.BICUBIC)


def _save(path: Path, example: Example) -> Path:
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
        shown_image(example).save(tmp)  # PNG: lossless, so the file holds the answered pixels
        os.replace(tmp, path)  # atomic: another process may render the same file
    return path


def render_showcase(folder: str | Path, examples: Sequence[Example] = SHOWCASE) -> list[Path]:
    """Render the ``examples`` images into ``folder`` (once; reused) and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [_save(folder / e.filename, e) for e in examples]


def render_classes(folder: str | Path) -> list[tuple[Path, str]]:
    """Photo-style thumbnails of the ID classes the embedded model was taught: ``[(path, name)]``."""
    from croft_core.data.synth.world import ID_CLASSES, render

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(ID_CLASSES):
        path = folder / f"class-{name}.png"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
            render(name, "photo", np.random.default_rng([SHOWCASE_SEED, 100 + i]), size=THUMB_SIZE).save(tmp)
            os.replace(tmp, path)
        out.append((path, name))
    return out


def _label(result: Mapping[str, Any]) -> str:
    """The answer a visitor reads first: the class, or "unknown" (whatever word explains it)."""
    return str(result["label"]) if result.get("accepted") else "unknown"


def _said(result: Mapping[str, Any]) -> str:
    if not result.get("accepted"):
        word = result.get("nearest_negative")
        return f"unknown ('{word}'?)" if word else "unknown"
    return str(result["label"])


def example_caption(example: Example, results: Mapping[str, Mapping[str, Any]]) -> str:
    """The caption from each model's real ``/classify`` result: ``"star, painting → circle"`` for one
    model; for several, the title then one line per model (``"star, painting\nzero-shot: circle\nCRoFT:
    star"``; the app shows the line breaks)."""
    if len(results) == 1:
        return f"{example.title} → {_said(next(iter(results.values())))}"
    return "\n".join([example.title, *(f"{name}: {_said(r)}" for name, r in results.items())])


def _pair(answer: Answer, models: Sequence[str]) -> tuple[dict, dict]:
    """The first held-out-style test images on which the models disagree and agree, with their answers."""
    from croft_core.data.synth.world import ID_CLASSES

    found: dict[Any, tuple[Example, dict]] = {}
    for index in range(SCAN):
        batch = [Example(c, HELDOUT_STYLE, "shapes", f"{c}, {HELDOUT_STYLE} (held-out style)", index)
                 for c in ID_CLASSES]
        images = [shown_image(e) for e in batch]
        by_model = {m: answer(m, images, "shapes") for m in models}
        for k, example in enumerate(batch):
            results = {m: by_model[m][k] for m in models}
            labels = {_label(r) for r in results.values()}
            kind = True if len(labels) == 1 else ("right" if example.shape in labels else False)
            found.setdefault(kind, (example, results))
        if {True, "right"} <= set(found) or len(models) < 2 and found:
            break
    return found.get("right", found.get(False)), found.get(True)


def answered_examples(answer: Answer, models: Sequence[str], folder: str | Path, *, pair: bool = True,
                      short: Mapping[str, str] | None = None) -> list[tuple[Example, Path, str]]:
    """The examples of the rule, rendered into ``folder``, each captioned with every model's answer.

    Args:
        answer: how the app answers (``classify_open`` of a model by name).
        models: display names of the models to show (zero-shot first; the default checkpoint second).
        folder: where the images are written (once).
        pair: scan the held-out style for the disagree / agree pair (a backbone that knows the shapes
            world); without it, the fixed examples alone.
        short: how a caption names each model (default: the first by its name, the second
            :data:`FINE_TUNED`).

    Returns:
        ``[(example, image path, caption)]``: the known photo, the held-out-style pair (disagree, agree;
        a pair is left out when the scan finds none), the unseen shape and the non-shape.
    """
    short = {m: (FINE_TUNED if i else m) for i, m in enumerate(models)} | dict(short or {})
    disagree, agree = _pair(answer, models) if pair else (None, None)
    chosen = [(SHOWCASE[0], None), *(p for p in (disagree, agree) if p), *((e, None) for e in SHOWCASE[1:])]
    out = []
    for example, results in chosen:
        if results is None:
            results = {m: answer(m, [shown_image(example)], example.vocabulary)[0] for m in models}
        caption = example_caption(example, {short[m]: r for m, r in results.items()})
        out.append((example, render_showcase(folder, [example])[0], caption))
    return out


@dataclass(frozen=True)
class HeldoutNumbers:
    """A checkpoint's and zero-shot's accuracy on its held-out style's test split (fractions)."""

    style: str
    model: float
    zero_shot: float


def _accuracies(metrics: Any) -> dict[str, float]:
    """``{style: accuracy}`` of the ``accuracy/<style>`` entries (the covariate-shifted test splits)."""
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for key, value in metrics.items():
        if isinstance(key, str) and key.startswith("accuracy/") and isinstance(value, (int, float)):
            if not 0 <= value <= 1 or not math.isfinite(value):
                raise ValueError(f"{key} = {value!r} is not an accuracy between 0 and 1")
            out[key.split("/", 1)[1]] = float(value)
    return out


def heldout_numbers(folder: str | Path) -> HeldoutNumbers | None:
    """The held-out style's accuracies of a checkpoint folder, or ``None`` when it does not hold them.

    The checkpoint's is its card's (``config.json`` ``metrics``, what ``croft eval --checkpoint``
    reproduces); zero-shot's is :data:`ZERO_SHOT_RESULTS` (``metrics`` of ``croft eval --method
    zeroshot`` on the same benchmark). Both must name one and the same style (a leave-one-style-out
    benchmark has one covariate test split).

    Raises:
        ValueError: a file that is not JSON, or an accuracy outside [0, 1].
    """
    folder = Path(folder)
    try:
        model = _accuracies(json.loads((folder / "config.json").read_text()).get("metrics"))
        zero_shot = _accuracies(json.loads((folder / ZERO_SHOT_RESULTS).read_text()).get("metrics"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{folder.name}: unreadable results ({err})") from None
    if len(model) != 1 or set(model) != set(zero_shot):
        return None
    (style, accuracy), = model.items()
    return HeldoutNumbers(style, accuracy, zero_shot[style])


def _plural(style: str) -> str:
    return style + ("es" if style.endswith(("sh", "ch", "s", "x")) else "s")


def context_line(numbers: HeldoutNumbers, model: str = "CRoFT") -> str:
    """``"On paintings (never seen in fine-tuning) CRoFT is right 48.7% of the time, zero-shot 41.3%."``"""
    return (f"On {_plural(numbers.style)} (never seen in fine-tuning) {model} is right "
            f"{numbers.model:.1%} of the time, zero-shot {numbers.zero_shot:.1%}.")
