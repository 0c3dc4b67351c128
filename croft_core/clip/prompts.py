"""Prompt templates and class-vocabulary presets.

Template sets (chosen by name, never by dataset name):

- ``single``: ``"a photo of a {}."`` — CRoFT's PACS/VLCS template (``CUSTOM_TEMPLATES``) and the
  zero-shot baseline's.
- ``croft7``: the 7 ImageNet templates of CRoFT's Setup-I (``IMAGENET_TEMPLATES_SELECT``,
  CROFT_SPEC.md §1.1).
- ``openai80``: OpenAI's 80 ImageNet templates, taken from open_clip.

Vocabulary presets are class-name lists shipped as text files in ``croft_core/data/vocab/`` (one class per
line), plus ``imagenet1k`` (open_clip's CLIP class names, the two names it repeats made unique) and
``shapes`` from the embedded synthetic world.
"""

from __future__ import annotations

from typing import Sequence

from croft_core.data import VOCAB_DIR

SINGLE_TEMPLATE = ("a photo of a {}.",)

CROFT_IMAGENET_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)



def _openai80() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


def get_templates(name_or_templates: str | Sequence[str]) -> tuple[str, ...]:
    """Resolve a template-set name (``single``, ``croft7``, ``openai80``) or pass templates through.

    Raises:
        ValueError: unknown set name, or a template without ``{}``.
    """
    if isinstance(name_or_templates, str):
        sets = {"single": lambda: SINGLE_TEMPLATE, "croft7": lambda: CROFT_IMAGENET_TEMPLATES,
                "openai80": _openai80}
        if name_or_templates in sets:
            return sets[name_or_templates]()
        if "{}" not in name_or_templates:
            raise ValueError(f"unknown template set {name_or_templates!r}; use one of {sorted(sets)} "
                             f"or a template containing '{{}}'")
        return (name_or_templates,)
    templates = tuple(name_or_templates)
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template must contain '{}' where the class name goes")
    return templates


def list_vocabularies() -> list[str]:
    """Names of the vocabulary presets."""
    return sorted({p.stem for p in VOCAB_DIR.glob("*.txt")} | {"imagenet1k", "shapes"})


def get_vocabulary(name: str) -> list[str]:
    """Class names of a vocabulary preset.

    Raises:
        ValueError: unknown preset (the message lists the known ones).
    """
    if name == "imagenet1k":  # open_clip's CLIP names with its two repeated names made unique
        name = "benchmarks/imagenet_classnames"
    if name == "shapes":
        from croft_core.data.synth.world import ID_CLASSES

        return list(ID_CLASSES)
    path = VOCAB_DIR / f"{name}.txt"
    if not path.is_file():
        raise ValueError(f"unknown vocabulary preset {name!r}; known presets: {list_vocabularies()}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dedupe_classes(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Normalise whitespace and drop blank entries and case-insensitive duplicates.

    Returns:
        ``(classes, notes)``: the class names in first-seen order, and human-readable notes about
        what was removed.
    """
    classes: list[str] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    blanks = 0
    for raw in names:
        name = " ".join(str(raw).split())
        if not name:
            blanks += 1
            continue
        if name.lower() in seen:
            duplicates.append(name)
            continue
        seen.add(name.lower())
        classes.append(name)
    notes = []
    if duplicates:
        notes.append(f"removed {len(duplicates)} duplicate(s): {', '.join(duplicates)}")
    if blanks and classes:
        notes.append(f"ignored {blanks} blank entr{'y' if blanks == 1 else 'ies'}")
    return classes, notes


def split_vocabulary(text: str) -> list[str]:
    """Free text (one class per line, or comma-separated) -> raw entries, blanks included."""
    return [part for line in text.splitlines() for part in line.split(",")]


def parse_vocabulary(text: str) -> tuple[list[str], list[str]]:
    """Parse free text (one class per line, or comma-separated) into unique class names.

    Returns:
        ``(classes, notes)``: see :func:`dedupe_classes`.
    """
    return dedupe_classes(split_vocabulary(text))
