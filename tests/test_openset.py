"""The app's open-set decision (croft_core.openset) and the embedded model's word list."""

from __future__ import annotations

import pytest

from croft_core import vocabulary
from croft_core.synth import world


def test_embedded_words_read_the_world_lexicon(monkeypatch):
    """Words the caption generator uses to name things come from world.lexicon() (MISNAMES is gone)."""
    monkeypatch.setattr(world, "lexicon", lambda: ("circle", "zorbling thing"))
    vocabulary.embedded_words.cache_clear()
    try:
        words = vocabulary.embedded_words()
        assert {"zorbling", "thing", "circle", "photo"} <= words
    finally:
        vocabulary.embedded_words.cache_clear()
