"""Fail-fast checks that a benchmark's data can be found, before any image is encoded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from croft_core.data.benchmarks.spec import ROLES, Benchmark, SplitSpec
from croft_core.data.sources import _fail_fast_if_hub_unresolvable, _looks_like_path
from croft_core.data.layouts import resolve_split_folder


def check_sources(benchmark: Benchmark, roles: Sequence[str] = ROLES) -> None:
    """Fail at once, before any image is encoded, when a set's data cannot be found.

    Local sources must exist (for layouts: the split folder or JSON file); Hub ids must be
    resolvable (skipped in offline mode, where ``datasets`` fails at once or uses its cache). Every
    problem is reported in one message.

    Args:
        benchmark: the definition.
        roles: the roles to check (e.g. without ``"train"`` for a zero-shot evaluation).

    Raises:
        FileNotFoundError: local data is missing (each missing place is named).
        DatasetUnavailableError: a Hub id cannot be reached.
    """
    problems: list[str] = []
    hub_ids: set[str] = set()
    for role in roles:
        for spec in benchmark.specs(role):
            try:
                _check_source(spec, hub_ids)
            except (FileNotFoundError, ValueError) as e:
                problems.append(f"{role} set {spec.name!r}: {e}")
    if problems:
        raise FileNotFoundError(
            f"Benchmark {benchmark.name!r} cannot find its data:\n  " + "\n  ".join(problems)
        )
    for repo_id in sorted(hub_ids):
        _fail_fast_if_hub_unresolvable(repo_id)


def _check_source(spec: SplitSpec, hub_ids: set[str]) -> None:
    if spec.layout == "folders":
        for part in spec.split.split("+"):
            resolve_split_folder(spec.source, part.strip())
    elif spec.layout is not None:
        if not Path(spec.source).expanduser().is_file():
            raise FileNotFoundError(f"split file {spec.source!r} does not exist")
    elif spec.source.startswith("imagefolder:"):
        if not Path(spec.source.removeprefix("imagefolder:")).expanduser().is_dir():
            raise FileNotFoundError(f"image folder {spec.source!r} does not exist")
    elif Path(spec.source).expanduser().exists() or _looks_like_path(spec.source):
        if not Path(spec.source).expanduser().is_dir():
            raise FileNotFoundError(f"dataset folder {spec.source!r} does not exist")
    else:
        hub_ids.add(spec.source.removeprefix("hf://datasets/"))
