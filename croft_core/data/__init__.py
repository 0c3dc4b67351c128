"""Data: dataset sources, the official code's folder layouts, safe image loading, class-name
vocabularies (``vocab/``), the registered benchmarks (``benchmarks/``) and the embedded shapes world
(``synth/``)."""

import os
from pathlib import Path

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"  # class-name presets, one name per line
# text / feature caches and rendered data (CROFT_CACHE overrides it)
DEFAULT_CACHE_DIR = Path(os.environ.get("CROFT_CACHE", Path.home() / ".cache" / "croft"))
