"""Timing shared by the bench scripts: ratios come from one run, with the timed paths taking turns.

Imported as ``from timing import interleaved`` by scripts run as ``python bench/<name>.py`` (their
folder is first on ``sys.path``).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def interleaved(paths: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 0) -> dict[str, float]:
    """Median seconds per call of each path. Every path is called ``warmup`` times first, then the
    paths take turns ``repeats`` times, so background load on a shared machine hits all alike."""
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
