"""Manifests: the exact rows of a run, written as JSON and read back (CROFT_SPEC §5 items 13 and 16)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from croft_core.data.benchmarks.loading import (LoadedSplit, _annotate, _id_column_values, _source_label,
                                               _to_loaded)
from croft_core.data.benchmarks.spec import MULTI_ROLES, Benchmark, SplitSpec, _check_role

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "croft-manifest/1"


def write_manifest(
    path: str | Path,
    benchmark: Benchmark,
    splits: Mapping[str, LoadedSplit | Sequence[LoadedSplit]],
    seed: int,
    shots: int | None,
) -> Path:
    """Write the sampled row ids of a run, so that it can be rebuilt exactly.

    Args:
        path: JSON file to write.
        benchmark: the definition the splits came from (stored in full).
        splits: role -> LoadedSplit (or list of them for covariate/semantic).
        seed: the run seed.
        shots: the train shots.

    Returns:
        The path written.
    """
    record: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "benchmark": benchmark.to_dict(),
        "seed": seed,
        "shots": shots,
        "splits": {},
    }
    for role, value in splits.items():
        _check_role(role)
        many = isinstance(value, (list, tuple))
        record["splits"][role] = [_split_record(s) for s in value] if many else _split_record(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _split_record(split: LoadedSplit) -> dict[str, Any]:
    return {
        "name": split.name,
        "source": split.source,
        "split": split.split,
        "revision": split.revision,
        "n": len(split),
        "fingerprint": split.fingerprint(),
        "classes": sorted(set(split.row_classes or [])),
        "ids": list(split.ids),
        "labels": split.labels.tolist(),
    }


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest written by :func:`write_manifest`.

    Returns:
        The manifest dict (keys ``format``, ``benchmark``, ``seed``, ``shots``, ``splits``).
    """
    data = json.loads(Path(path).read_text())
    missing = {"format", "benchmark", "splits"} - set(data) if isinstance(data, dict) else {"format"}
    if missing or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a CRoFT manifest ({MANIFEST_FORMAT}); write one with write_manifest()."
        )
    return data


def materialize_from_manifest(
    benchmark: Benchmark | None, manifest: Mapping[str, Any] | str | Path, which: str
) -> LoadedSplit | list[LoadedSplit]:
    """Rebuild exactly the rows a manifest recorded (no sampling).

    Args:
        benchmark: the definition; None uses the one stored in the manifest.
        manifest: a manifest dict or its path.
        which: the role to rebuild.

    Returns:
        Like :func:`materialize`.

    Raises:
        ValueError: the role is not in the manifest, or the data no longer matches the recorded
            ids/labels.
    """
    _check_role(which)
    if not isinstance(manifest, Mapping):
        manifest = read_manifest(manifest)
    stored = Benchmark.from_dict(manifest["benchmark"])
    if benchmark is None:
        benchmark = stored
    elif benchmark != stored:
        logger.warning(
            "Benchmark %r differs from the one stored in the manifest; using its specs", benchmark.name
        )
    if which not in manifest["splits"]:
        raise ValueError(f"Manifest has no {which!r} split; it holds {sorted(manifest['splits'])}.")
    records = manifest["splits"][which]
    records = records if isinstance(records, list) else [records]
    specs = {s.name: s for s in benchmark.specs(which)}
    memo: dict = {}
    loaded = []
    for record in records:
        if record["name"] not in specs:
            raise ValueError(
                f"Manifest set {record['name']!r} is not a {which} set of {benchmark.name!r}; "
                f"its {which} sets are {sorted(specs)}."
            )
        spec = specs[record["name"]]
        if "revision" in record and record["revision"] != spec.revision:
            raise ValueError(
                f"Set {record['name']!r}: the manifest's rows were read at revision {record['revision']!r}, "
                f"the definition reads {spec.revision!r}; pass the benchmark stored in the manifest."
            )
        ann = _annotate(benchmark, which, spec, memo)
        rows = _rows_from_ids(ann.dataset, ann.spec, record["ids"])
        if not ann.keep[rows].all():
            raise ValueError(
                f"Set {record['name']!r}: manifest rows fall outside the benchmark's filters; "
                "the definition changed."
            )
        split = _to_loaded(benchmark, which, ann, rows)
        if "labels" in record and split.labels.tolist() != list(record["labels"]):
            raise ValueError(
                f"Set {record['name']!r}: labels differ from the manifest; the data or class mapping changed."
            )
        loaded.append(split)
    return loaded if which in MULTI_ROLES else loaded[0]


def _rows_from_ids(ds: datasets.Dataset, spec: SplitSpec, ids: Sequence[str]) -> np.ndarray:
    values = _id_column_values(ds)
    if values is not None:
        lookup = {v: i for i, v in enumerate(values.tolist())}
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise ValueError(f"Set {spec.name!r}: {len(missing)} manifest ids not found, e.g. {missing[:3]}.")
        return np.array([lookup[i] for i in ids], dtype=np.int64)
    prefix = f"{_source_label(spec)}:{spec.split}"
    rows = []
    for row_id in ids:
        head, _, tail = row_id.rpartition(":")
        if not tail.isdigit():
            raise ValueError(f"Set {spec.name!r}: id {row_id!r} does not end with a row number.")
        if head != prefix:  # the data moved (e.g. another root folder): rows are positions, keep going
            logger.warning(
                "Set %r: ids were written for %r, reading rows by position from %r", spec.name, head, prefix
            )
            prefix = head
        rows.append(int(tail))
    rows_array = np.array(rows, dtype=np.int64)
    if rows_array.size and rows_array.max() >= len(ds):
        raise ValueError(
            f"Set {spec.name!r}: manifest row {rows_array.max()} is past the end ({len(ds)} rows)."
        )
    return rows_array
