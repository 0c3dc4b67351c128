"""``croft check-sources``: compare each Hub source of the benchmarks with the Hub's metadata.

Only metadata is read (the repository's commit and gate through the Hub API, then splits, row counts
and features through ``datasets.load_dataset_builder`` and, where the card has none, the dataset
viewer's ``/info``); no image is downloaded. The comparison itself, :func:`compare_source`, is a pure
function of a :class:`~croft_core.data.benchmarks.hub_sources.HubSource` and a metadata record, so it is
tested offline against metadata recorded from the dataset cards (``tests/benchmarks/fixtures/``).

A metadata record is a dict::

    {"repo_id": ..., "revision": <asked>, "sha": <resolved commit or None>,
     "access": "ok" | "gated" | "missing", "gated": False | "auto" | "manual", "license": ...,
     "configs": {<config>: {"splits": {<split>: <rows> or None} or None,
                            "features": <datasets.Features.to_dict()> or None, "partial": bool}}}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from croft_core.data.benchmarks.classnames import class_key
from croft_core.data.benchmarks.hub_sources import HUB_SOURCES, HubSource
from croft_core.data.benchmarks.spec import DATA_DIR

logger = logging.getLogger(__name__)

STATUSES = ("ok", "unverified", "mismatch", "gated", "missing")
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_STRING_DTYPES = ("string", "large_string")


@dataclass
class SourceCheck:
    """The outcome for one source: a status and one line per compared item."""

    name: str  # the HUB_SOURCES key
    repo_id: str
    revision: str
    status: str = "ok"  # one of STATUSES
    resolved_sha: str | None = None  # the commit the revision resolved to (pin this one)
    items: list[tuple[str, bool | None, str]] = field(default_factory=list)  # (what, ok or unknown, detail)
    message: str = ""  # what to do (gated / missing)

    @property
    def problems(self) -> list[str]:
        """The details of the items that do not match."""
        return [f"{what}: {detail}" for what, ok, detail in self.items if ok is False]


# --------------------------------------------------------------------------------------------------
# Comparison (pure)
# --------------------------------------------------------------------------------------------------


def compare_source(name: str, source: HubSource, metadata: Mapping[str, Any]) -> SourceCheck:
    """Compare one catalogue entry with a metadata record (see the module docstring).

    Args:
        name: the entry's key in ``HUB_SOURCES`` (shown in the table).
        source: what the benchmark definitions read.
        metadata: what the Hub says (recorded or fetched).

    Returns:
        A :class:`SourceCheck`; its status is ``"mismatch"`` when any item differs, ``"unverified"``
        when some item could not be compared (no metadata for it), else ``"ok"``.
    """
    check = SourceCheck(name, source.repo_id, source.revision, resolved_sha=metadata.get("sha"))
    access = metadata.get("access", "ok")
    if access in ("gated", "missing"):
        check.status = access
        check.message = _access_message(source, access, metadata.get("error"))
        return check
    _compare_revision(check, source)
    config = _config_record(check, source, metadata)
    if config is not None:
        _compare_splits(check, source, config)
        _compare_features(check, source, config.get("features"))
    flags = [ok for _, ok, _ in check.items]
    check.status = "mismatch" if False in flags else "unverified" if None in flags else "ok"
    return check


def _access_message(source: HubSource, access: str, error: str | None) -> str:
    if access == "gated":
        return (
            f"gated: accept the terms at {source.card} while logged in, then set HF_TOKEN to a read "
            "token of that account (or run `hf auth login`) and run check-sources again."
        )
    return f"not found at revision {source.revision!r}{f' ({error})' if error else ''}: fix the definition."


def _compare_revision(check: SourceCheck, source: HubSource) -> None:
    sha = check.resolved_sha
    if sha is None:
        check.items.append(("revision", None, f"{source.revision!r} (resolved commit unknown)"))
    elif _is_sha(source.revision):
        same = sha == source.revision
        check.items.append(("revision", same, f"pinned {source.revision[:7]}, Hub {sha[:7]}"))
    else:
        check.items.append(("revision", True, f"{source.revision!r} is commit {sha} (pin it)"))


def _is_sha(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower())


def _config_record(check: SourceCheck, source: HubSource, metadata: Mapping[str, Any]) -> Mapping | None:
    configs = metadata.get("configs") or {}
    wanted = source.config_name or "default"
    if wanted in configs:
        return configs[wanted]
    if source.config_name is None and len(configs) == 1:  # the only configuration is the default
        return next(iter(configs.values()))
    if not configs:
        check.items.append(("metadata", None, "no configuration described (splits, columns unknown)"))
    else:
        check.items.append(("config", False, f"{wanted!r} not among {sorted(configs)}"))
    return None


def _compare_splits(check: SourceCheck, source: HubSource, config: Mapping[str, Any]) -> None:
    splits = config.get("splits")
    for split, rows in source.splits:
        if splits is None:
            check.items.append((f"split {split}", None, "splits unknown"))
        elif split not in splits:
            check.items.append((f"split {split}", False, f"missing; the Hub has {sorted(splits)}"))
        elif rows is None or splits[split] is None or config.get("partial"):
            detail = f"present ({splits[split]} rows; count not compared)"
            check.items.append((f"split {split}", True, detail))
        else:
            found = int(splits[split])
            check.items.append((f"split {split}", found == rows, f"{found} rows, the card says {rows}"))


def _compare_features(check: SourceCheck, source: HubSource, features: Mapping[str, Any] | None) -> None:
    if not features:
        check.items.append(("columns", None, "features unknown (no card metadata)"))
        return
    columns = sorted(features)
    image = features.get(source.image_column)
    ok = image is not None and image.get("_type") == "Image"
    check.items.append((f"image column {source.image_column!r}", ok, _feature_text(image, columns)))
    if source.domain_column is not None:
        ok = source.domain_column in features
        check.items.append((f"domain column {source.domain_column!r}", ok,
                            _feature_text(features.get(source.domain_column), columns)))
    _compare_label(check, source, features.get(source.label_column), columns)


def _feature_text(feature: Mapping[str, Any] | None, columns: list[str]) -> str:
    if feature is None:
        return f"missing; the columns are {columns}"
    if feature.get("_type") == "ClassLabel":
        return f"ClassLabel of {len(feature.get('names') or [])} names"
    return str(feature.get("dtype", feature.get("_type")))


def _compare_label(
    check: SourceCheck, source: HubSource, feature: Mapping[str, Any] | None, columns: list[str]
) -> None:
    what = f"label column {source.label_column!r}"
    if feature is None:
        check.items.append((what, False, _feature_text(None, columns)))
        return
    kind = feature.get("_type")
    dtype = feature.get("dtype")
    if source.label_kind == "class_label":
        ok = kind == "ClassLabel"
    elif source.label_kind == "int":
        ok = kind == "Value" and dtype in _INT_DTYPES
    else:
        ok = kind == "Value" and dtype in _STRING_DTYPES
    check.items.append((what, ok, f"{_feature_text(feature, columns)}, expected {source.label_kind}"))
    if ok and kind == "ClassLabel":
        _compare_class_names(check, source, list(feature.get("names") or []))


def _compare_class_names(check: SourceCheck, source: HubSource, names: list[str]) -> None:
    if source.n_classes is not None:
        check.items.append(("classes", len(names) == source.n_classes,
                            f"{len(names)} classes, the card says {source.n_classes}"))
    if source.class_names is not None:
        found = {class_key(n) for n in names}
        missing = [n for n in source.class_names if class_key(n) not in found]
        detail = f"{len(source.class_names) - len(missing)} of {len(source.class_names)} names match"
        detail += f"; missing {missing[:5]}" if missing else ""
        check.items.append(("class names", not missing, detail))
    if source.names_within == "imagenet_wnids":
        wnids = set((DATA_DIR / "imagenet_wnids.txt").read_text().split())
        outside = [n for n in names if n not in wnids]
        detail = f"{len(names) - len(outside)} of {len(names)} names are ImageNet-1k wnids"
        check.items.append(("wnids", not outside, detail + (f"; e.g. {outside[:3]}" if outside else "")))


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------


def format_source_table(rows: list[SourceCheck]) -> str:
    """A plain-text table of :func:`check_hub_sources` results, then what to fix, source by source."""
    header = ("source", "repository @ revision", "status", "resolved commit")
    lines = [header] + [
        (r.name, f"{r.repo_id} @ {_short(r.revision)}", r.status, r.resolved_sha or "-") for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        notes = ([r.message] if r.message else []) + r.problems
        notes += [f"{what}: {detail} (not verified)" for what, ok, detail in r.items if ok is None]
        if notes:
            text.append(f"\n{r.name} ({r.repo_id}):")
            text.extend(f"  - {note}" for note in notes)
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    text.append("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n) if rows else "no Hub sources")
    return "\n".join(text)


def _short(revision: str) -> str:
    return revision[:7] if _is_sha(revision) else revision


# --------------------------------------------------------------------------------------------------
# Which sources, and where their metadata comes from
# --------------------------------------------------------------------------------------------------


MetadataSource = Mapping[str, Mapping[str, Any]] | Callable[[HubSource], Mapping[str, Any]]


def check_hub_sources(
    benchmark: str | None = None, *, builder_info: MetadataSource | None = None
) -> list[SourceCheck]:
    """Check the Hub sources of one registered benchmark (or of all) against the Hub's metadata.

    Args:
        benchmark: a registered benchmark name (``setup1``, ``setup2``, ...); None checks every
            source of :data:`~croft_core.data.benchmarks.hub_sources.HUB_SOURCES`.
        builder_info: where metadata comes from: None reads the Hub (metadata only); a mapping
            ``repo_id -> record`` or a callable ``HubSource -> record`` supplies recorded metadata.

    Returns:
        One :class:`SourceCheck` per source, in catalogue order (format with
        :func:`format_source_table`).

    Raises:
        ValueError: unknown benchmark name.
        DatasetUnavailableError: ``builder_info`` is None and the Hub cannot be reached (offline
            mode, or no network): raised at once, before any source is read.
    """
    sources = sources_of(benchmark)
    if builder_info is None:
        from croft_core.data.benchmarks.hub_fetch import fetch_hub_metadata, require_hub

        require_hub()
        builder_info = fetch_hub_metadata
    return [compare_source(name, src, _metadata_of(builder_info, src)) for name, src in sources.items()]


def sources_of(benchmark: str | None) -> dict[str, HubSource]:
    """The catalogue entries one registered benchmark reads (all of them for None)."""
    if benchmark is None:
        return dict(HUB_SOURCES)
    from croft_core.data.benchmarks.registry import BENCHMARKS

    if benchmark not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {benchmark!r}; registered: {sorted(BENCHMARKS)}.")
    return {name: src for name, src in HUB_SOURCES.items() if benchmark in src.used_by}


def _metadata_of(builder_info: MetadataSource, source: HubSource) -> Mapping[str, Any]:
    if callable(builder_info):
        return builder_info(source)
    if source.repo_id not in builder_info:
        return {"repo_id": source.repo_id, "configs": {}}  # nothing recorded: every item unverified
    return builder_info[source.repo_id]
