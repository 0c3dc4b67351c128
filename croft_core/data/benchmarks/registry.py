"""The benchmark registry: names users pass to ``--benchmark``, and user definitions from JSON."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from croft_core.data.benchmarks.imagenet import imagenet_four_ood, imagenet_full_spectrum, setup1
from croft_core.data.benchmarks.pacs_vlcs import setup2
from croft_core.data.benchmarks.shapes import shapes_benchmark, shapes_dg
from croft_core.data.benchmarks.spec import Benchmark

BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "shapes": shapes_benchmark,
    "shapes_dg": shapes_dg,
    "setup1": setup1,
    "setup2": setup2,
    "imagenet_four_ood": imagenet_four_ood,
    "imagenet_full_spectrum": imagenet_full_spectrum,
}


def register_benchmark(name: str, factory: Callable[..., Benchmark], *, overwrite: bool = False) -> None:
    """Add a benchmark factory to :data:`BENCHMARKS`.

    Args:
        name: the name users pass to :func:`get_benchmark` / ``--benchmark``.
        factory: returns a :class:`Benchmark`; its keyword arguments are the benchmark's options.
        overwrite: replace an existing entry instead of raising.
    """
    if name in BENCHMARKS and not overwrite and BENCHMARKS[name] is not factory:
        raise ValueError(f"Benchmark {name!r} is already registered; pass overwrite=True to replace it.")
    BENCHMARKS[name] = factory


def get_benchmark(name_or_path: str | Path, **kwargs: Any) -> Benchmark:
    """A registered benchmark by name, or a user definition from a JSON file.

    ``seed`` is passed only to definitions that depend on it (a factory with a ``seed`` parameter,
    like :func:`setup1`, whose ID classes are drawn per seed); for the others, and for JSON files,
    it is ignored, so a caller can always pass the run seed.

    Args:
        name_or_path: a key of :data:`BENCHMARKS`, or the path of a benchmark JSON file.
        **kwargs: options of the registered factory (e.g. ``setup2(dataset="vlcs")``).

    Returns:
        The :class:`Benchmark`.
    """
    key = str(name_or_path)
    if key in BENCHMARKS:
        factory = BENCHMARKS[key]
        signature = inspect.signature(factory)
        if "seed" not in signature.parameters and not _has_var_keyword(signature):
            kwargs.pop("seed", None)
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            raise ValueError(f"Benchmark {key!r} options: {e}; its signature is {signature}.") from e
        return factory(**kwargs)
    if key.endswith(".json") or Path(key).is_file():
        kwargs.pop("seed", None)
        if kwargs:
            raise ValueError(f"Options {sorted(kwargs)} only apply to registered benchmarks, not to {key!r}.")
        return Benchmark.from_json(key)
    raise ValueError(
        f"Unknown benchmark {key!r}; registered: {sorted(BENCHMARKS)}, or pass a benchmark JSON file."
    )


def _has_var_keyword(signature: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
