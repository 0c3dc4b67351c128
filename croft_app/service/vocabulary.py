"""Vocabularies a visitor types: presets or free text, cleaned and validated, and the words the
embedded shapes-world model knows.

A vocabulary is the list of class names an image is classified against. :func:`resolve_vocabulary`
turns what a user typed (a preset name such as ``shapes`` or ``cifar10``, or class names separated
by commas or new lines) into a validated list; :func:`unknown_words` finds words the embedded model
never saw in its pretraining captions (it knows coloured shapes, not dogs).
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

from croft_core.clip.prompts import SINGLE_TEMPLATE, dedupe_classes, get_vocabulary, list_vocabularies, split_vocabulary
from croft_core.data.synth import world

__all__ = ["DEFAULT_MAX_CLASSES", "MAX_CLASS_NAME_CHARS", "MAX_VOCABULARY_CHARS", "check_vocabulary",
           "embedded_words", "normalise_name", "resolve_vocabulary", "unknown_words"]

DEFAULT_MAX_CLASSES = 1000  # ImageNet-1k fits; more makes every request slow
MAX_CLASS_NAME_CHARS = 200  # CLIP's text context is 77 tokens; longer names are certainly truncated
MAX_VOCABULARY_CHARS = 200_000  # 1000 names of 200 characters; longer text is refused before parsing


def normalise_name(name: str) -> str:
    """A class name with runs of whitespace collapsed to one space."""
    return " ".join(str(name).split())


def check_vocabulary(classnames: Sequence[str], max_classes: int = DEFAULT_MAX_CLASSES
                     ) -> tuple[list[str], list[str]]:
    """Clean and validate a list of class names.

    Whitespace is normalised, blank entries and case-insensitive duplicates are removed (and
    reported); non-ASCII names are kept as they are.

    Args:
        classnames: the class names.
        max_classes: the largest vocabulary accepted.

    Returns:
        ``(classes, notes)``: the cleaned names in first-seen order and what was removed.

    Raises:
        ValueError: fewer than two classes, more than ``max_classes``, or a name longer than
            :data:`MAX_CLASS_NAME_CHARS` characters.
    """
    classes, notes = dedupe_classes(classnames)
    if len(classes) < 2:
        raise ValueError(f"Enter at least two class names (one per line or comma-separated), or "
                         f"choose a preset such as 'shapes' or 'cifar10'; got {len(classes)}.")
    if len(classes) > max_classes:
        raise ValueError(f"The vocabulary has {len(classes)} classes, more than the maximum of "
                         f"{max_classes} (CROFT_MAX_CLASSES); remove some classes.")
    for name in classes:
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise ValueError(f"The class name '{name[:40]}...' is {len(name)} characters long; class "
                             f"names must be at most {MAX_CLASS_NAME_CHARS} characters.")
    return classes, notes


def resolve_vocabulary(text: str, max_classes: int = DEFAULT_MAX_CLASSES) -> tuple[list[str], list[str]]:
    """A preset name (``shapes``, ``cifar10``, ``cifar100``, ``imagenet1k``, ``pacs``, ``vlcs``) or free
    text (one class per line, or comma-separated) -> validated class names.

    Args:
        text: what the user typed.
        max_classes: the largest vocabulary accepted.

    Returns:
        ``(classes, notes)``; the notes say which preset was used and what was removed.

    Raises:
        ValueError: not text, longer than :data:`MAX_VOCABULARY_CHARS`, or see
            :func:`check_vocabulary`.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"the vocabulary must be text (a preset name or class names), got a "
                         f"{type(text).__name__}")
    if len(text) > MAX_VOCABULARY_CHARS:
        raise ValueError(f"the vocabulary is {len(text):,} characters long, more than "
                         f"{MAX_VOCABULARY_CHARS:,}; enter fewer or shorter class names")
    key = text.strip().lower()
    if key in list_vocabularies():
        classes, notes = check_vocabulary(get_vocabulary(key), max_classes)
        return classes, [f"preset '{key}' ({len(classes)} classes)", *notes]
    return check_vocabulary(split_vocabulary(text), max_classes)


_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=1)
def embedded_words() -> frozenset[str]:
    """Every word of the embedded model's pretraining captions.

    Derived from the caption generator of :mod:`croft_core.data.synth.world` (the names in
    :func:`~croft_core.data.synth.world.lexicon`, colours, caption templates), plus the prompt template
    ``"a photo of a {}."``.
    """
    texts: list[str] = [*world.lexicon(), *world.COLOURS, *SINGLE_TEMPLATE, "a", "an"]
    texts += [t.replace("{a}", " ").replace("{n}", " ") for ts in world.TEMPLATES.values() for t in ts]
    return frozenset(w for t in texts for w in _words(t))


def unknown_words(classnames: Sequence[str]) -> list[str]:
    """Words of ``classnames`` that never occur in the embedded model's captions (first-seen order)."""
    known = embedded_words()
    out: list[str] = []
    for name in classnames:
        out += [w for w in _words(name) if w not in known and w not in out]
    return out
