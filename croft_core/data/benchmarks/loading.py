"""Materialisation: a benchmark definition's role -> the rows it selects (:class:`LoadedSplit`).

:func:`materialize` applies the spec's fixes of the official code (CROFT_SPEC §5):

- few-shot train is drawn per class, or per (class, domain) (item 12);
- no row is used twice: when two roles read the same ``(source, config_name, split)``, the later
  role never sees the rows of the earlier ones, in the order train → val → evaluation sets. So val is
  drawn from the images the few-shot train set did not use (item 14: in the official Setup-I, val
  was a subset of the ID test set), and evaluation sets exclude train and val rows. Set
  ``Benchmark.allow_val_test_overlap=True`` to let evaluation sets reuse val rows, as the official
  code did (parity only);
- labels are mapped by class *name* to the benchmark's class index; semantic-shift sets get label -1
  and must not contain an ID class;
- semantic sets are capped with a seeded draw (item 13: the official count depended on a stale cache).

Rows are compared by position within a split, so two specs overlap-check only when their
``split`` strings are identical (``"train"`` and ``"train+test"`` are not compared).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np
import PIL.Image

from croft_core.data.benchmarks.spec import (_DOMAIN_SHOTS, EVAL_ROLES, MULTI_ROLES, Benchmark, SplitSpec,
                                        _check_role)
from croft_core.data.benchmarks.classnames import (canonical_names, check_class_count, names_mask,
                                              require_all_present)
from croft_core.data.benchmarks.sampling import few_shot_indices, official_balanced_indices
from croft_core.data.sources import column_array, load_split, require_columns

logger = logging.getLogger(__name__)

ID_COLUMN = "id"  # a dataset column with this name gives the row ids
# Rows of the same (source, config, split) are claimed in this order; a role never sees rows that an
# earlier role took.
_EARLIER_ROLES = {
    "train": (),
    "val": ("train",),
    "id_test": ("train", "val"),
    "covariate": ("train", "val"),
    "semantic": ("train", "val"),
}


@dataclass
class LoadedSplit:
    """The rows of one set after filtering and sampling."""

    name: str
    dataset: datasets.Dataset  # the selected rows, in ``rows`` order
    labels: np.ndarray  # int64 [N]: benchmark class index; -1 for semantic sets
    ids: list[str]  # stable row ids (the dataset's "id" column, else "source:split:row")
    image_column: str
    classnames: tuple[str, ...]  # the benchmark's ID classes
    domains: list[str] | None = None  # per-row domain when the spec has a domain_column
    row_classes: list[str] | None = None  # per-row dataset class name (after class_map)
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # positions in the split
    source: str = ""
    split: str = ""
    revision: str | None = None  # the Hub revision the rows were read at

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> PIL.Image.Image:
        """Row ``i``'s image, converted to RGB."""
        return self.dataset[int(i)][self.image_column].convert("RGB")

    def fingerprint(self) -> str:
        """sha1 of the source, split, row ids and Hub revision: a cache key for features of these rows."""
        payload = json.dumps([self.source, self.split, self.ids] + ([self.revision] if self.revision else []))
        return hashlib.sha1(payload.encode()).hexdigest()


@dataclass
class _Annotated:
    """A loaded spec with per-row annotations over the whole split (before sampling)."""

    spec: SplitSpec
    dataset: datasets.Dataset
    keep: np.ndarray  # bool [N]: rows the spec's filters allow
    row_label: np.ndarray  # int64 [N]: benchmark class index or -1
    row_class: np.ndarray | None  # object [N]: mapped class name (None for missing labels)
    row_domain: np.ndarray | None  # object [N]


def materialize(
    benchmark: Benchmark, which: str, *, shots: int | None = None, seed: int = 1
) -> LoadedSplit | list[LoadedSplit]:
    """Load the rows of one role of a benchmark.

    Pass the same ``shots`` and ``seed`` for every role of one run: when roles share a source split,
    val and the evaluation sets exclude the rows train took, so they depend on the train draw.

    Args:
        benchmark: the definition.
        which: one of ``"train"``, ``"val"``, ``"id_test"``, ``"covariate"``, ``"semantic"``.
        shots: train images per class (or per class across domains when
            ``benchmark.shots_per == "class_domain"``); None or -1 keeps all.
        seed: sampling seed (val and the caps use seeds derived from it).

    Returns:
        A :class:`LoadedSplit`, or a list of them for ``"covariate"`` / ``"semantic"``.
    """
    _check_role(which)
    memo: dict = {}
    loaded = [
        _to_loaded(benchmark, which, *_select(benchmark, which, spec, shots, seed, memo))
        for spec in benchmark.specs(which)
    ]
    return loaded if which in MULTI_ROLES else loaded[0]


def _select(
    benchmark: Benchmark, role: str, spec: SplitSpec, shots: int | None, seed: int, memo: dict
) -> tuple[_Annotated, np.ndarray]:
    key = ("select", role, spec.name)
    if key in memo:
        return memo[key]
    ann = _annotate(benchmark, role, spec, memo)
    candidates = np.flatnonzero(ann.keep)
    claimed = _claimed_rows(benchmark, role, spec, shots, seed, memo)
    candidates = np.setdiff1d(candidates, claimed)
    if role == "train" and benchmark.shots_per == "official_balance" and shots not in (None, -1):
        rows = official_balanced_indices(ann.row_label, ann.row_domain, shots, seed, pool=candidates)
    elif role == "train":
        by_domain = benchmark.shots_per in _DOMAIN_SHOTS
        rows = few_shot_indices(
            ann.row_label, shots, seed, domains=ann.row_domain if by_domain else None, pool=candidates,
            per_domain="each" if benchmark.shots_per == "class_each_domain" else "split",
        )
    elif role == "val":
        rows = few_shot_indices(ann.row_label, benchmark.val_shots, derive_seed(seed, "val"), pool=candidates)
    else:
        rows = candidates
    rows = _apply_caps(ann, np.asarray(rows, dtype=np.int64), seed)
    if rows.size == 0:
        raise ValueError(
            f"The {role} set {spec.name!r} of benchmark {benchmark.name!r} is empty after filtering"
            f"{' and removing rows used by ' + '/'.join(_EARLIER_ROLES[role]) if claimed.size else ''}. "
            "Check its classes/domains, or read it from another split."
        )
    memo[key] = (ann, rows)
    return ann, rows


def _claimed_rows(
    benchmark: Benchmark, role: str, spec: SplitSpec, shots: int | None, seed: int, memo: dict
) -> np.ndarray:
    earlier = _EARLIER_ROLES[role]
    if benchmark.allow_val_test_overlap and role in EVAL_ROLES:
        earlier = ("train",)
    claimed = [
        _select(benchmark, r, getattr(benchmark, r), shots, seed, memo)[1]
        for r in earlier
        if getattr(benchmark, r).key == spec.key
    ]
    return np.unique(np.concatenate(claimed)) if claimed else np.empty(0, np.int64)


def _apply_caps(ann: _Annotated, rows: np.ndarray, seed: int) -> np.ndarray:
    spec = ann.spec
    if spec.max_per_class is not None:
        cap_seed = derive_seed(seed, "cap", spec.name)
        rows = np.asarray(
            few_shot_indices(ann.row_class, spec.max_per_class, cap_seed, pool=rows, warn=False), np.int64
        )
    if spec.max_total is not None and rows.size > spec.max_total:
        rng = np.random.default_rng(derive_seed(seed, "total", spec.name))
        rows = np.sort(rng.choice(rows, size=spec.max_total, replace=False))
    return rows


def derive_seed(seed: int, *parts: str) -> int:
    """A stable non-negative seed for a sub-draw (val, caps), derived from the run seed.

    Args:
        seed: the run seed.
        *parts: names that make the sub-draw distinct (e.g. ``"val"``, ``"cap", "dtd"``).

    Returns:
        ``crc32("seed:part:...")``, an int in ``[0, 2**32)``.
    """
    return zlib.crc32(":".join([str(seed), *parts]).encode())


def _load(spec: SplitSpec, memo: dict) -> tuple[datasets.Dataset, list[str]]:
    key = ("load", spec.key, spec.image_column, spec.label_column, spec.label_names, spec.layout)
    if key not in memo:
        memo[key] = load_split(
            spec.source,
            spec.split,
            image_column=spec.image_column,
            label_column=spec.label_column,
            config_name=spec.config_name,
            label_names=spec.label_names,
            layout=spec.layout,
            revision=spec.revision,
        )
    return memo[key]


def _annotate(benchmark: Benchmark, role: str, spec: SplitSpec, memo: dict) -> _Annotated:
    ds, names = _load(spec, memo)
    keep = np.ones(len(ds), dtype=bool)
    row_label = np.full(len(ds), -1, dtype=np.int64)
    row_class = None
    if spec.label_column is not None:
        row_label, row_class, allowed = _label_annotations(benchmark, role, spec, ds, names)
        keep &= allowed
    row_domain = None
    if spec.domain_column is not None:
        require_columns(ds, [spec.domain_column], f"{spec.source!r} (split {spec.split!r})")
        row_domain = _domain_values(ds, spec.domain_column)
        if spec.domains is not None:
            _check_domains_exist(spec, row_domain)
            keep &= _isin(row_domain, spec.domains)
    if role == "semantic":
        _check_no_id_rows(benchmark, spec, keep, row_label, row_class)
    else:
        dropped = keep & (row_label < 0)
        if dropped.any():
            logger.info(
                "%s set %r: dropped %d rows of non-benchmark classes", role, spec.name, int(dropped.sum())
            )
        keep &= row_label >= 0
    if spec.n_classes is not None and row_class is not None:
        check_class_count(row_class[keep], spec.n_classes, f"Set {spec.name!r} ({spec.source!r})")
    return _Annotated(spec, ds, keep, row_label, row_class, row_domain)


def _label_annotations(
    benchmark: Benchmark, role: str, spec: SplitSpec, ds: datasets.Dataset, names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row benchmark label, class name and class-filter mask, via per-class lookup tables.

    Names are matched by :func:`~croft_core.data.benchmarks.classnames.class_key` (case and ``_``
    insensitive); ID classes take the benchmark's spelling.
    """
    what = f"Set {spec.name!r} ({spec.source!r})"
    mapped = canonical_names(names, spec.class_map or (), benchmark.classnames, what)
    class_of_code = np.array(mapped + [None], dtype=object)  # [C + 1]
    if role != "semantic":
        _check_some_id_classes(benchmark, spec, class_of_code[:-1])
    index = {c: i for i, c in enumerate(benchmark.classnames)}
    label_of_code = np.array([index.get(c, -1) for c in class_of_code], dtype=np.int64)
    allowed = class_of_code != None  # noqa: E711 - elementwise; the None slot is "no label"
    if spec.classes is not None:
        if spec.n_classes is not None:  # an official list: every name must be found
            require_all_present(mapped, spec.classes, what)
        allowed &= names_mask(class_of_code, spec.classes)
    if spec.exclude_classes is not None:
        allowed &= ~names_mask(class_of_code, spec.exclude_classes)
    codes = column_array(ds, spec.label_column)
    codes = np.where(codes >= 0, codes, len(names))  # missing labels (-1) point at the None slot
    return label_of_code[codes], class_of_code[codes], allowed[codes]


def _isin(values: np.ndarray, allowed: Sequence[str]) -> np.ndarray:
    # Set lookup instead of np.isin: object arrays may hold None, which numpy cannot sort.
    allowed_set = set(allowed)
    return np.fromiter((v in allowed_set for v in values), dtype=bool, count=len(values))


def _check_some_id_classes(benchmark: Benchmark, spec: SplitSpec, dataset_classes: np.ndarray) -> None:
    present = set(dataset_classes.tolist()) & set(benchmark.classnames)
    if not present:
        raise ValueError(
            f"None of benchmark {benchmark.name!r}'s classes appear in set {spec.name!r} ({spec.source!r}): "
            f"its classes look like {list(dataset_classes[:5])}, the benchmark's like "
            f"{list(benchmark.classnames[:5])}. Map them with SplitSpec.class_map (dataset name -> benchmark "
            "name) or label_names."
        )
    missing = len(benchmark.classnames) - len(present)
    if missing:
        logger.info(
            "Set %r holds %d of the %d benchmark classes", spec.name, len(present), len(benchmark.classnames)
        )


def _domain_values(ds: datasets.Dataset, column: str) -> np.ndarray:
    values = column_array(ds, column)
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        names = np.array(feature.names + [None], dtype=object)
        return names[np.where(values >= 0, values, len(feature.names))]
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def _check_domains_exist(spec: SplitSpec, row_domain: np.ndarray) -> None:
    available = sorted({d for d in row_domain.tolist() if d is not None})
    unknown = sorted(set(spec.domains) - set(available))
    if unknown:
        raise ValueError(
            f"Set {spec.name!r}: domain(s) {unknown} not found in column {spec.domain_column!r} of "
            f"{spec.source!r}; available domains: {available}."
        )


def _check_no_id_rows(
    benchmark: Benchmark,
    spec: SplitSpec,
    keep: np.ndarray,
    row_label: np.ndarray,
    row_class: np.ndarray | None,
) -> None:
    leaked = keep & (row_label >= 0)
    if leaked.any():
        classes = sorted(set(row_class[leaked].tolist()))
        raise ValueError(
            f"Semantic set {spec.name!r} contains {int(leaked.sum())} rows of ID classes {classes[:10]}; a "
            "semantic-shift set must hold other classes only. Add them to the spec's exclude_classes "
            "(or restrict `classes`)."
        )


def _to_loaded(benchmark: Benchmark, role: str, ann: _Annotated, rows: np.ndarray) -> LoadedSplit:
    spec = ann.spec
    labels = np.full(len(rows), -1, dtype=np.int64) if role == "semantic" else ann.row_label[rows]
    return LoadedSplit(
        name=spec.name,
        dataset=ann.dataset.select(rows),
        labels=labels,
        ids=_row_ids(ann.dataset, spec, rows),
        image_column=spec.image_column,
        classnames=benchmark.classnames,
        domains=None if ann.row_domain is None else ann.row_domain[rows].tolist(),
        row_classes=None if ann.row_class is None else ann.row_class[rows].tolist(),
        rows=rows,
        source=_source_label(spec),
        split=spec.split,
        revision=spec.revision,
    )


def _source_label(spec: SplitSpec) -> str:
    return spec.source if spec.config_name is None else f"{spec.source}#{spec.config_name}"


def _id_column_values(ds: datasets.Dataset) -> np.ndarray | None:
    """The dataset's "id" column as strings, when it exists and is unique."""
    if ID_COLUMN not in ds.column_names:
        return None
    values = np.array([str(v) for v in column_array(ds, ID_COLUMN)], dtype=object)
    if len(set(values.tolist())) != len(values):
        logger.warning("Column %r is not unique; using row positions as ids", ID_COLUMN)
        return None
    return values


def _row_ids(ds: datasets.Dataset, spec: SplitSpec, rows: np.ndarray) -> list[str]:
    values = _id_column_values(ds)
    if values is not None:
        return values[rows].tolist()
    prefix = f"{_source_label(spec)}:{spec.split}"
    return [f"{prefix}:{int(r)}" for r in rows]
