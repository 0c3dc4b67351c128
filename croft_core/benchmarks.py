"""Evaluation protocols as data: ID classes, few-shot train, val, ID test, covariate and semantic sets.

A :class:`Benchmark` is a frozen dataclass of :class:`SplitSpec` s (a source string plus column names
and row filters). Every protocol of the paper is one *definition*, not a code path (STYLE.md Part 3
item 3): the CRoFT Setup-I ImageNet 40/60 class split with ImageNet-V2/-Sketch/-A/-R
(CROFT_SPEC §3.1), Setup-II PACS/VLCS leave-one-domain-out with DTD/Food101/Caltech101 (and Oxford
Flowers) as the open set (§3.2), the standard ImageNet four-OOD benchmark (MCM) and its full-spectrum
variant (OpenOOD v1.5). Each reads its data from the Hugging Face Hub or, with ``root=``, from local
folders in the layouts of the official code (CoOp's ImageNet and ``split_zhou_*.json`` files, CRoFT's
``test_on_<domain>.json``, MCM's OOD folders; see ``docs/REPRODUCE.md``). Users can write their own
as JSON (:meth:`Benchmark.to_json` shows the format).

:func:`materialize` turns a definition into rows (:class:`LoadedSplit`). It applies the spec's fixes
of the official code (CROFT_SPEC §5):

- few-shot train is drawn per class, or per (class, domain) (item 12);
- no row is used twice: when two roles read the same ``(source, config_name, split)``, the later
  role never sees the rows of the earlier ones, in the order train → val → evaluation sets. So val is
  drawn from the images the few-shot train set did not use (item 14: in the official Setup-I, val
  was a subset of the ID test set), and evaluation sets exclude train and val rows. Set
  ``Benchmark.allow_val_test_overlap=True`` to let evaluation sets reuse val rows, as the official
  code did (parity only);
- labels are mapped by class *name* to the benchmark's class index; semantic-shift sets get label -1
  and must not contain an ID class;
- semantic sets are capped with a seeded draw (item 13: the official count depended on a stale cache)
  and every materialized split can be written to a manifest of row ids (items 13 and 16).

Rows are compared by position within a split, so two specs overlap-check only when their
``split`` strings are identical (``"train"`` and ``"train+test"`` are not compared).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image

from croft_core.data import (
    LAYOUTS,
    _fail_fast_if_hub_unresolvable,
    _looks_like_path,
    column_array,
    few_shot_indices,
    load_split,
    official_balanced_indices,
    require_columns,
    resolve_split_folder,
)

logger = logging.getLogger(__name__)

ROLES = ("train", "val", "id_test", "covariate", "semantic")
MULTI_ROLES = ("covariate", "semantic")  # roles that hold several sets
EVAL_ROLES = ("id_test", "covariate", "semantic")
# Rows of the same (source, config, split) are claimed in this order; a role never sees rows that an
# earlier role took.
_EARLIER_ROLES = {
    "train": (),
    "val": ("train",),
    "id_test": ("train", "val"),
    "covariate": ("train", "val"),
    "semantic": ("train", "val"),
}
# How train shots are drawn: K per class; K // n_domains per (class, domain) (the §5 item 12 fix);
# K per (class, domain); or the official PACS draw, bug included (parity).
SHOTS_PER = ("class", "class_domain", "class_each_domain", "official_balance")
_DOMAIN_SHOTS = ("class_domain", "class_each_domain", "official_balance")
ID_COLUMN = "id"  # a dataset column with this name gives the row ids
MANIFEST_FORMAT = "croft-manifest/1"


# --------------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------------


def _as_names(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"{what} must be a list of names, not the string {value!r}; write [{value!r}].")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class SplitSpec:
    """One set of rows: where to read it and which rows to keep.

    Filters apply in this order: ``class_map`` renames dataset classes, then ``classes`` /
    ``exclude_classes`` and ``domains`` keep rows, then the caps draw a seeded subset.
    """

    name: str  # shown in results ("sketch", "dtd", ...)
    source: str  # see croft_core.data.load_split: save_to_disk folder, imagefolder:PATH, Hub id
    split: str = "test"  # "a+b" concatenates splits
    image_column: str = "image"
    label_column: str | None = "label"  # None: unlabelled set (semantic sets only)
    domain_column: str | None = None  # column naming each row's domain (PACS: "domain")
    domains: tuple[str, ...] | None = None  # keep rows whose domain is listed
    classes: tuple[str, ...] | None = None  # keep rows whose (mapped) class is listed
    exclude_classes: tuple[str, ...] | None = None  # drop rows whose (mapped) class is listed
    class_map: tuple[tuple[str, str], ...] | None = None  # dataset name -> benchmark name (a dict is fine)
    label_names: tuple[str, ...] | None = None  # names of integer labels, in label order
    config_name: str | None = None  # Hub dataset configuration
    layout: str | None = None  # a local layout of croft_core.data.LAYOUTS; None reads via `datasets`
    max_per_class: int | None = None  # seeded cap per class (official Setup-II: 100 / 500)
    max_total: int | None = None  # seeded cap on the whole set (Setup-I semantic: 1000)

    def __post_init__(self) -> None:
        for name in ("domains", "classes", "exclude_classes", "label_names"):
            object.__setattr__(self, name, _as_names(getattr(self, name), f"SplitSpec.{name}"))
        if self.class_map is not None:
            pairs = self.class_map.items() if isinstance(self.class_map, Mapping) else self.class_map
            object.__setattr__(self, "class_map", tuple(sorted((str(k), str(v)) for k, v in pairs)))
        if not self.name or not self.source:
            raise ValueError(
                f"SplitSpec needs a name and a source; got name={self.name!r}, source={self.source!r}."
            )
        for cap in ("max_per_class", "max_total"):
            value = getattr(self, cap)
            if value is not None and value < 1:
                raise ValueError(f"SplitSpec {self.name!r}: {cap} must be >= 1 or None; got {value}.")
        by_class = self.classes or self.exclude_classes or self.class_map or self.max_per_class
        if self.label_column is None and by_class:
            raise ValueError(
                f"SplitSpec {self.name!r} filters or caps by class but has label_column=None; "
                "name the label column or drop the class filters."
            )
        if self.domains is not None and self.domain_column is None:
            raise ValueError(
                f"SplitSpec {self.name!r} lists domains but no domain_column; set domain_column."
            )
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(
                f"SplitSpec {self.name!r}: layout must be one of {LAYOUTS} or None; got {self.layout!r}."
            )

    @property
    def key(self) -> tuple[str, str | None, str]:
        """``(source, config_name, split)``: specs with the same key read the same rows."""
        return (self.source, self.config_name, self.split)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``class_map`` as an object)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "class_map" and value is not None:
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        _check_keys(cls, data, "SplitSpec")
        return cls(**data)


@dataclass(frozen=True)
class Benchmark:
    """A protocol: ID classes plus the sets that train, select and evaluate a model."""

    name: str
    classnames: tuple[str, ...]  # ID classes, in label order
    train: SplitSpec
    val: SplitSpec
    id_test: SplitSpec
    covariate: tuple[SplitSpec, ...] = ()  # same classes, new styles/domains
    semantic: tuple[SplitSpec, ...] = ()  # other classes (label -1)
    templates: str = "single"  # template-set name, resolved by croft_core.prompts
    text_mode: str = "normalized"  # "normalized" (Setup-I ensemble) or "raw" (Setup-II); CROFT_SPEC §1.1
    shots_per: str = "class"  # "class" or "class_domain" (K // n_domains per (class, domain))
    val_shots: int | None = None  # val images per class; None = every remaining row
    allow_val_test_overlap: bool = False  # True reproduces the official Setup-I val ⊂ test (§5 item 14)
    train_augment: bool = True  # official random-resized-crop views; False: one plain view per image
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classnames", _as_names(self.classnames, "Benchmark.classnames"))
        for role in ("train", "val", "id_test"):
            object.__setattr__(self, role, _as_spec(getattr(self, role)))
        for role in MULTI_ROLES:
            object.__setattr__(self, role, tuple(_as_spec(s) for s in getattr(self, role)))
        self._validate()

    def _validate(self) -> None:
        if not self.classnames:
            raise ValueError(f"Benchmark {self.name!r} needs at least one ID class.")
        duplicates = sorted({c for c in self.classnames if self.classnames.count(c) > 1})
        if duplicates:
            raise ValueError(f"Benchmark {self.name!r} lists classes twice: {duplicates}.")
        if self.shots_per not in SHOTS_PER:
            raise ValueError(f"shots_per must be one of {SHOTS_PER}; got {self.shots_per!r}.")
        if self.shots_per in _DOMAIN_SHOTS and self.train.domain_column is None:
            raise ValueError(
                f"shots_per={self.shots_per!r} needs train.domain_column; set it or use shots_per='class'."
            )
        if self.val_shots is not None and self.val_shots < 1:
            raise ValueError(f"val_shots must be >= 1 or None; got {self.val_shots}.")
        for role in ("train", "val", "id_test", "covariate"):
            for spec in self.specs(role):
                if spec.label_column is None:
                    raise ValueError(
                        f"Benchmark {self.name!r}: {role} set {spec.name!r} needs a label_column."
                    )
        for role in MULTI_ROLES:
            names = [s.name for s in getattr(self, role)]
            if len(set(names)) != len(names):
                raise ValueError(f"Benchmark {self.name!r}: {role} set names must be unique; got {names}.")
        id_classes = set(self.classnames)
        for spec in self.semantic:
            overlap = sorted(id_classes & set(spec.classes or ()))
            if overlap:
                raise ValueError(
                    f"Semantic set {spec.name!r} keeps ID classes {overlap[:10]}; a semantic-shift set "
                    "must hold other classes only. Remove them from `classes`."
                )

    def specs(self, which: str) -> tuple[SplitSpec, ...]:
        """The specs of one role, always as a tuple."""
        _check_role(which)
        value = getattr(self, which)
        return value if which in MULTI_ROLES else (value,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, SplitSpec):
                value = value.to_dict()
            elif f.name in MULTI_ROLES:
                value = [s.to_dict() for s in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Benchmark:
        """Build from :meth:`to_dict` output; unknown keys raise ValueError."""
        _check_keys(cls, data, "Benchmark")
        return cls(**data)

    def to_json(self, path: str | Path) -> Path:
        """Write the definition as JSON (a template for user-defined benchmarks)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Benchmark:
        """Read a definition written by :meth:`to_json` (or by hand)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Benchmark file {str(path)!r} does not exist.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"Benchmark file {str(path)!r} is not valid JSON: {e}") from e
        return cls.from_dict(data)


def _as_spec(value: SplitSpec | Mapping[str, Any]) -> SplitSpec:
    if isinstance(value, SplitSpec):
        return value
    if isinstance(value, Mapping):
        return SplitSpec.from_dict(value)
    raise TypeError(f"Expected a SplitSpec or a dict, got {type(value).__name__}.")


def _check_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {what} key(s) {unknown}; valid keys are {sorted(known)}.")


def _check_role(which: str) -> None:
    if which not in ROLES:
        raise ValueError(f"Unknown split role {which!r}; use one of {ROLES}.")


# --------------------------------------------------------------------------------------------------
# Materialized rows
# --------------------------------------------------------------------------------------------------


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

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> PIL.Image.Image:
        """Row ``i``'s image, converted to RGB."""
        return self.dataset[int(i)][self.image_column].convert("RGB")

    def class_names_of_rows(self) -> list[str]:
        """Per-row class name (benchmark name for ID sets, dataset name for semantic sets)."""
        if self.row_classes is not None:
            return list(self.row_classes)
        return ["unknown"] * len(self)

    def fingerprint(self) -> str:
        """sha1 of the source, split and row ids: a cache key for features of these rows."""
        payload = json.dumps([self.source, self.split, self.ids])
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
        )
    return memo[key]


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
    return _Annotated(spec, ds, keep, row_label, row_class, row_domain)


def _label_annotations(
    benchmark: Benchmark, role: str, spec: SplitSpec, ds: datasets.Dataset, names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row benchmark label, class name and class-filter mask, via per-class lookup tables."""
    rename = dict(spec.class_map or ())
    class_of_code = np.array([rename.get(c, c) for c in names] + [None], dtype=object)  # [C + 1]
    if role != "semantic":
        _check_some_id_classes(benchmark, spec, class_of_code[:-1])
    index = {c: i for i, c in enumerate(benchmark.classnames)}
    label_of_code = np.array([index.get(c, -1) for c in class_of_code], dtype=np.int64)
    allowed = class_of_code != None  # noqa: E711 - elementwise; the None slot is "no label"
    if spec.classes is not None:
        allowed &= _isin(class_of_code, spec.classes)
    if spec.exclude_classes is not None:
        allowed &= ~_isin(class_of_code, spec.exclude_classes)
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


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------


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
        ann = _annotate(benchmark, which, specs[record["name"]], memo)
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


# --------------------------------------------------------------------------------------------------
# Definitions of the paper's protocols (data only)
# --------------------------------------------------------------------------------------------------
# Each dataset is read from the Hugging Face Hub (the default ids below; columns and split names as
# the dataset cards read when this was written; not checked from the offline machine this was written
# on, see `tests/test_benchmarks.py::test_hub_defaults_declare_the_columns_and_splits_we_read`), or,
# with `root=`, from local folders in the layouts the official code and its users already have
# (CoOp's DATASETS.md for ImageNet and the open sets, CRoFT's README for PACS/VLCS, MCM's for the
# four OOD sets). Every default can be overridden by keyword, or the whole definition edited as JSON.

VOCAB_DIR = Path(__file__).parent / "vocab"  # class lists users may also pick as presets
DATA_DIR = VOCAB_DIR / "benchmarks"  # machine data (wnids, filters): not vocabulary presets

IMAGENET_HUB = {
    # set -> SplitSpec fields. "labels" says how dataset labels map to class names: "index" sets
    # (integer labels in ImageNet order) get `label_names`, "wnid" sets a wnid -> name class_map.
    "imagenet": {"source": "ILSVRC/imagenet-1k", "labels": "index"},  # gated; image/label, train/validation
    "imagenet_v2": {
        "source": "clip-benchmark/wds_imagenetv2", "image_column": "webp", "label_column": "cls",
        "labels": "index",
    },
    "imagenet_sketch": {
        "source": "clip-benchmark/wds_imagenet_sketch", "image_column": "webp", "label_column": "cls",
        "labels": "index",
    },
    # image / wnid / class_name columns, one "test" split (the imagenet-r card; -a assumed alike)
    "imagenet_a": {"source": "axiong/imagenet-a", "label_column": "wnid", "labels": "wnid"},
    "imagenet_r": {"source": "axiong/imagenet-r", "label_column": "wnid", "labels": "wnid"},
}
IMAGENET_SPLITS = {"train": "train", "val": "train", "test": "validation", "shifted": "test"}
# Local layout under `root`, CoOp's DATASETS.md first (what the official CRoFT code reads:
# imagenet/images/{train,val}/<wnid>/, imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/,
# imagenet-sketch/images/<wnid>/, imagenet-adversarial/imagenet-a/<wnid>/,
# imagenet-rendition/imagenet-r/<wnid>/); the flat names after it are accepted too. The first folder
# that exists is used; when none does, errors name the CoOp one.
IMAGENET_LOCAL = {
    "imagenet": {"dirs": ("imagenet",), "labels": "wnid"},
    "imagenet_v2": {
        "dirs": ("imagenetv2/imagenetv2-matched-frequency-format-val", "imagenetv2"),
        "labels": "folder_index",
    },
    "imagenet_sketch": {"dirs": ("imagenet-sketch",), "labels": "wnid"},
    "imagenet_a": {"dirs": ("imagenet-adversarial/imagenet-a", "imagenet-a"), "labels": "wnid"},
    "imagenet_r": {"dirs": ("imagenet-rendition/imagenet-r", "imagenet-r"), "labels": "wnid"},
}
# split sub-folders (also looked up under images/); "." reads the set's folder as a whole
IMAGENET_LOCAL_SPLITS = {"train": "train", "val": "train", "test": "val", "shifted": "."}
CLASSNAMES_FILES = ("imagenet/classnames.txt", "classnames.txt")  # CoOp's place, then root/
IMAGENET_TEMPLATES = "croft7"  # croft_core.prompts: the 7-template ensemble of CROFT_SPEC §1.1
COVARIATE_SETS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
COVARIATE_NAMES = {s: s.replace("_", "-") for s in COVARIATE_SETS}


def read_classnames(path: str | Path) -> tuple[list[str], list[str] | None]:
    """Read a class-name file: one name per line, or CoOp's ``"<wnid> <name>"`` lines.

    Args:
        path: the text file.

    Returns:
        ``(names, wnids)``; wnids is None for a plain list.
    """
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    first = [line.split(maxsplit=1) for line in lines]
    if all(len(p) == 2 and p[0][:1] == "n" and p[0][1:].isdigit() for p in first):
        return [p[1] for p in first], [p[0] for p in first]
    return lines, None


def imagenet_classes() -> tuple[list[str], list[str]]:
    """The default ImageNet-1k class names and WordNet ids, in label order.

    ``croft_core/vocab/benchmarks/imagenet_classnames.txt``: open_clip's ``IMAGENET_CLASSNAMES``
    (OpenAI's cleaned CLIP names) except two repeated names made unique with their WordNet lemma
    (index 744 ``projectile``, 836 ``sunglass``). ``imagenet_wnids.txt``: the sorted ILSVRC-2012
    synsets (the ImageNet label order), as shipped in ``timm/data/_info/imagenet_synsets.txt``.
    """
    names = (DATA_DIR / "imagenet_classnames.txt").read_text().splitlines()
    wnids = (DATA_DIR / "imagenet_wnids.txt").read_text().split()
    assert len(names) == len(wnids) == 1000
    return names, wnids


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    renamed = [n for n in out if n not in names]
    if renamed:
        logger.warning("Class names repeated in the class list were made unique: %s", renamed[:10])
    return out


def _imagenet_classes(
    root: str | None, classnames: Sequence[str] | None, wnids: Sequence[str] | None
) -> tuple[list[str], list[str] | None]:
    default_names, default_wnids = imagenet_classes()
    if classnames is not None:
        names = list(classnames)
        if wnids is None and len(names) == len(default_wnids):
            wnids = default_wnids
        return _unique_names(names), None if wnids is None else list(wnids)
    if root is not None:
        for relative in CLASSNAMES_FILES:
            path = Path(root) / relative
            if path.is_file():
                names, file_wnids = read_classnames(path)
                if file_wnids is None and wnids is None and len(names) == len(default_wnids):
                    file_wnids = default_wnids
                return _unique_names(names), list(wnids) if wnids is not None else file_wnids
        if not Path(root).is_dir():
            raise ValueError(
                f"ImageNet data folder {str(root)!r} does not exist. Expected, under it, "
                f"{' or '.join(CLASSNAMES_FILES)} (CoOp's '<wnid> <name>' lines, optional) and the "
                "image folders imagenet/images/{train,val}/<wnid>/ (see docs/REPRODUCE.md); or pass "
                "classnames=[...]."
            )
        logger.info("No classnames.txt under %s; using the shipped ImageNet class names", root)
    return list(default_names), list(wnids) if wnids is not None else list(default_wnids)


def _local_dir(root: str | Path, which: str) -> Path:
    candidates = [Path(root) / d for d in IMAGENET_LOCAL[which]["dirs"]]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _imagenet_spec(
    which: str,
    name: str,
    split_role: str,
    root: str | None,
    names: list[str],
    wnids: list[str] | None,
    sources: Mapping[str, str] | None = None,
    **extra: Any,
) -> SplitSpec:
    """A SplitSpec for one ImageNet-family set, Hub or local layout."""
    if root is None:
        entry = dict(IMAGENET_HUB[which])
        split = IMAGENET_SPLITS[split_role]
    else:
        local = IMAGENET_LOCAL[which]
        entry = {"source": str(_local_dir(root, which)), "labels": local["labels"], "layout": "folders"}
        split = IMAGENET_LOCAL_SPLITS[split_role]
    if sources and which in sources:
        entry["source"] = sources[which]
    labels = entry.pop("labels")
    if labels == "index":
        entry["label_names"] = tuple(names)
    elif labels == "folder_index":
        entry["class_map"] = {str(i): n for i, n in enumerate(names)}
    elif wnids is not None:
        entry["class_map"] = dict(zip(wnids, names))
    else:  # no wnids known: the dataset's own class names must equal `names`
        logger.warning(
            "Set %r is labelled by wnid but no wnids were given; pass wnids= (or a CoOp classnames.txt "
            "with '<wnid> <name>' lines), or its rows will not match the class names",
            name,
        )
    return SplitSpec(name=name, split=split, **entry, **extra)


def setup1_class_split(
    seed: int, n_classes: int = 1000, id_fraction: float = 0.4
) -> tuple[list[int], list[int]]:
    """Setup-I's ID / held-out class indices for ``seed`` (each list in ImageNet label order).

    ``np.random.default_rng(seed).permutation(n_classes)``: the first ``round(id_fraction * n)`` are
    ID. The official code drew ``np.random.choice(classnames, 400)`` after Dassl's seeding, so its lists
    differ; ours are published for seeds 1-3 in ``croft_core/vocab/setup1_seed{S}_id.txt``
    (:func:`setup1_published_classes`) and frozen in every run's manifest.
    """
    if not 0 < id_fraction < 1:
        raise ValueError(f"id_fraction must be in (0, 1); got {id_fraction}.")
    order = np.random.default_rng(seed).permutation(n_classes)
    n_id = int(round(id_fraction * n_classes))
    return np.sort(order[:n_id]).tolist(), np.sort(order[n_id:]).tolist()


def setup1_published_classes(seed: int) -> list[str]:
    """The published Setup-I ID class names of ``seed`` (1, 2 or 3), in label order.

    ``croft_core/vocab/setup1_seed{S}_id.txt``, one name per line (also a vocabulary preset); the
    names are those of :func:`imagenet_classes`, so the wnid of each is found there.

    Raises:
        ValueError: no list is published for ``seed``.
    """
    path = VOCAB_DIR / f"setup1_seed{seed}_id.txt"
    if not path.is_file():
        raise ValueError(f"No published Setup-I class list for seed {seed}; seeds 1, 2 and 3 are published.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_setup1_class_lists(folder: str | Path, seeds: Sequence[int] = (1, 2, 3)) -> list[Path]:
    """Write ``setup1_seed{S}_id.txt`` (one ID class name per line) for ``seeds`` with the library's draw.

    This is how ``croft_core/vocab/setup1_seed{1,2,3}_id.txt`` were made; a test checks that the draw
    still reproduces them.
    """
    names, _ = imagenet_classes()
    written = []
    for seed in seeds:
        id_idx, _ = setup1_class_split(seed, len(names))
        path = Path(folder) / f"setup1_seed{seed}_id.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{names[i]}\n" for i in id_idx))
        written.append(path)
    return written


def setup1(
    seed: int = 1,
    *,
    root: str | None = None,
    classnames: Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
    id_fraction: float = 0.4,
    n_semantic: int = 1000,
    val_shots: int = 4,
    official_val: bool = False,
    covariate: Sequence[str] = COVARIATE_SETS,
    sources: Mapping[str, str] | None = None,
) -> Benchmark:
    """CRoFT Setup-I (CROFT_SPEC §3.1): ImageNet 40% ID classes, covariate ImageNet-V2/-Sketch/-A/-R.

    The ID classes are drawn per seed by :func:`setup1_class_split` (published for seeds 1-3 in
    ``croft_core/vocab/``; label order = ImageNet order). Train is K shots per ID class from ImageNet
    train. Val is ``val_shots`` per class from ImageNet *train* images outside the few-shot set
    (§5 item 14: the official val was a subset of the ID test set; ``official_val=True`` restores
    that). ID test is ImageNet val of the ID classes. The covariate sets are ImageNet-V2 /-Sketch /-A
    /-R restricted to ID classes (-A/-R cover 200 classes, so about 80 ID classes; classification
    stays 400-way). The semantic set is ``n_semantic`` seeded ImageNet-val images of the held-out
    classes (§5 item 13).

    Args:
        seed: chooses the ID classes (use the run seed, as the official code did).
        root: folder with local copies in CoOp's layout (``imagenet/images/{train,val}/<wnid>/``,
            ``imagenet/classnames.txt``, ``imagenetv2/imagenetv2-matched-frequency-format-val/``,
            ``imagenet-sketch/images/``, ``imagenet-adversarial/imagenet-a/``,
            ``imagenet-rendition/imagenet-r/``; flat ``imagenet/{train,val}``, ``imagenetv2/``,
            ``imagenet-a/``, ``imagenet-r/`` and ``root/classnames.txt`` also work); None reads the
            Hub ids in ``IMAGENET_HUB``.
        classnames: the 1000 ImageNet class names in label order (default: ``classnames.txt`` under
            ``root``, else :func:`imagenet_classes`).
        wnids: the matching WordNet ids (default: the file's, else the shipped ones).
        id_fraction: share of classes that are ID.
        n_semantic: size of the semantic-shift sample.
        val_shots: val images per ID class.
        official_val: parity: val drawn from the ID test split and allowed to overlap it.
        covariate: which of ``COVARIATE_SETS`` to evaluate.
        sources: override sources by set name (``imagenet``, ``imagenet_v2``, ...): a Hub id, or a
            local folder in the layout of that set.
    """
    unknown = sorted(set(covariate) - set(COVARIATE_SETS))
    if unknown:
        raise ValueError(f"Unknown covariate set(s) {unknown}; use some of {list(COVARIATE_SETS)}.")
    names, wnids = _imagenet_classes(root, classnames, wnids)
    id_idx, ood_idx = setup1_class_split(seed, len(names), id_fraction)
    id_names = tuple(names[i] for i in id_idx)
    ood_names = tuple(names[i] for i in ood_idx)
    spec = functools.partial(_imagenet_spec, root=root, names=names, wnids=wnids, sources=sources)
    val = spec("imagenet", "imagenet-val", "test" if official_val else "val")
    return Benchmark(
        name=f"setup1_seed{seed}",
        classnames=id_names,
        train=spec("imagenet", "imagenet", "train"),
        val=val,
        id_test=spec("imagenet", "imagenet", "test"),
        covariate=tuple(spec(w, COVARIATE_NAMES[w], "shifted") for w in covariate),
        semantic=(spec("imagenet", "imagenet-ood", "test", classes=ood_names, max_total=n_semantic),),
        templates=IMAGENET_TEMPLATES,
        text_mode="normalized",
        shots_per="class",
        val_shots=val_shots,
        allow_val_test_overlap=official_val,
        description=f"CRoFT Setup-I: {len(id_names)} random ImageNet classes (seed {seed}) as ID; "
        f"covariate {', '.join(COVARIATE_NAMES[w] for w in covariate)}; semantic = ImageNet val of "
        f"the other classes{'; official val (subset of ID test)' if official_val else ''}.",
    )


# Setup-II (CROFT_SPEC §3.2). Hub sources hold every domain in one split with a domain column; the
# local layout is CRoFT's README: <root>/PACS/images/<domain>/<class>/<image> with
# <root>/PACS/test_on_<domain>.json (train/val = source domains, test = the held-out one), same for VLCS.
SETUP2_DATASETS = {
    "pacs": {
        "source": "flwrlabs/pacs",  # image, domain (string), label (ClassLabel); one "train" split
        "split": "train",
        "local_dir": "PACS",
        "classnames": ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
        "domains": ("art_painting", "cartoon", "photo", "sketch"),
        "official_sampler": "official_balance",  # generate_fewshot_dataset_balance (buggy)
        "caltech_keep": "caltech101_keep_pacs.txt",
        "open_set_exclude": {"caltech101": ("elephant", "electric_guitar", "dalmatian", "snoopy")},
    },
    "vlcs": {
        "source": "flwrlabs/vlcs",  # assumed same layout as flwrlabs/pacs (unverified)
        "split": "train",
        "local_dir": "VLCS",
        "classnames": ("bird", "car", "chair", "dog", "person"),
        "domains": ("CALTECH", "LABELME", "PASCAL", "SUN"),
        "official_sampler": "class",  # VLCS used the plain per-class sampler
        "caltech_keep": "caltech101_keep_vlcs.txt",
        "open_set_exclude": {
            "caltech101": (
                "car_side", "chair", "windsor_chair", "wheelchair", "flamingo", "flamingo_head", "emu",
                "ibis", "pigeon", "wild_cat", "dalmatian", "snoopy",
            )
        },
    },
}
SETUP2_SAMPLERS = {"balanced": "class_domain", "per_domain": "class_each_domain", "per_class": "class"}
# Open sets: Hub default, and the local CoOp layout <root>/<dir>/<split file> (images next to it).
OPEN_SET_SOURCES = {
    "dtd": {"source": "tanganke/dtd", "split": "train+test",
            "local": ("dtd", "split_zhou_DescribableTextures.json")},
    "food101": {"source": "ethz/food101", "split": "train+validation",
                "local": ("food-101", "split_zhou_Food101.json")},
    "caltech101": {"source": "flwrlabs/caltech101", "split": "train",
                   "local": ("caltech-101", "split_zhou_Caltech101.json")},
    # image + ClassLabel named "1".."102" (the card); the open set needs no class names
    "flowers": {"source": "nelorth/oxford-flowers", "split": "train+test",
                "local": ("oxford_flowers", "split_zhou_OxfordFlowers.json")},
}
OPEN_SET_LOCAL_SPLIT = "train+val+test"  # the official open set pools the three CoOp splits


def caltech101_official_classes(dataset: str) -> tuple[str, ...]:
    """The Caltech101 classes the official open-set reader keeps for ``"pacs"`` or ``"vlcs"``.

    Transcribed from the ``new_class`` lists of the official ``PACS_Caltech101`` /
    ``VLCS_Caltech101`` readers (``croft_core/vocab/benchmarks/caltech101_keep_*.txt``). They spell
    ``airplanes``, ``Faces_easy``, ``Leopards`` and ``Motorbikes`` as the raw Caltech folders do, so
    with CoOp's split file (``airplane``, ``face``, ...) those classes are dropped too: 92 classes
    remain for PACS and 84 for VLCS (CROFT_SPEC §3.2).
    """
    if dataset not in SETUP2_DATASETS:
        raise ValueError(f"Unknown Setup-II dataset {dataset!r}; use one of {sorted(SETUP2_DATASETS)}.")
    path = DATA_DIR / SETUP2_DATASETS[dataset]["caltech_keep"]
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def setup2(
    dataset: str = "pacs",
    test_domain: str | None = None,
    *,
    open_set: Sequence[str] = ("dtd", "food101", "caltech101"),
    root: str | None = None,
    source: str | None = None,
    domains: Sequence[str] | None = None,
    open_set_sources: Mapping[str, str] | None = None,
    val_shots: int = 16,
    open_set_max_per_class: int = 100,
    eval_max_per_class: int | None = None,
    sampler: str = "balanced",
    caltech_filter: str = "official",
) -> Benchmark:
    """CRoFT Setup-II (CROFT_SPEC §3.2): PACS/VLCS leave-one-domain-out with an open set.

    Train is K shots over the three source domains: ``sampler="balanced"`` draws ``K // 3`` per
    (class, domain) (the fix of the official sampler, §5 item 12), ``"per_domain"`` K per
    (class, domain), ``"per_class"`` K per class ignoring domains, ``"official"`` the official draw
    (PACS: the buggy ``generate_fewshot_dataset_balance``; VLCS: per class). Val is ``val_shots``
    per class from the source domains (the ``val`` list of the local split file). The ID test set is
    every other source-domain training image; the held-out domain is the covariate set (its accuracy
    is the paper's OOD-generalisation number; full-spectrum detection counts it as ID); DTD, Food101,
    Caltech101 (and optionally Oxford Flowers, ``"flowers"``) capped at 100 images per class are the
    semantic sets.

    Args:
        dataset: ``"pacs"`` or ``"vlcs"`` (a key of ``SETUP2_DATASETS``).
        test_domain: the held-out domain; default the last of the dataset's domains.
        open_set: semantic sets (keys of ``OPEN_SET_SOURCES``).
        root: folder with local copies: ``root/PACS/images/`` + ``root/PACS/test_on_<domain>.json``
            (``VLCS`` alike, the files named by the lower-case domain), and for the open sets
            CoOp's ``root/dtd/``, ``root/food-101/``, ``root/caltech-101/``, ``root/oxford_flowers/``
            with their ``split_zhou_*.json``; None reads the Hub.
        source: override the ID dataset's source (a Hub id, or a split file when ``root`` is set).
        domains: override the domain names (as spelled in the source's domain column).
        open_set_sources: override open-set sources by name (Hub ids, or split files with ``root``).
        val_shots: val images per class.
        open_set_max_per_class: cap per open-set class (official: 100).
        eval_max_per_class: cap per class of the ID test and covariate sets (official open-set
            evaluation: 500); None keeps every image.
        sampler: ``"balanced"``, ``"per_domain"``, ``"per_class"`` or ``"official"`` (above).
        caltech_filter: ``"official"`` keeps the official reader's class list
            (:func:`caltech101_official_classes`); ``"exclude"`` keeps every class except the ones
            the official lists drop and the ID classes.
    """
    if dataset not in SETUP2_DATASETS:
        raise ValueError(f"Unknown Setup-II dataset {dataset!r}; use one of {sorted(SETUP2_DATASETS)}.")
    if sampler not in (*SETUP2_SAMPLERS, "official"):
        raise ValueError(f"sampler must be one of {[*SETUP2_SAMPLERS, 'official']}; got {sampler!r}.")
    if caltech_filter not in ("official", "exclude"):
        raise ValueError(f"caltech_filter must be 'official' or 'exclude'; got {caltech_filter!r}.")
    table = SETUP2_DATASETS[dataset]
    domains = tuple(domains or table["domains"])
    test_domain = test_domain or domains[-1]
    if test_domain not in domains:
        raise ValueError(
            f"test_domain {test_domain!r} is not a {dataset} domain; use one of {list(domains)}."
        )
    sources = tuple(d for d in domains if d != test_domain)
    cap = {"max_per_class": eval_max_per_class}
    if root is None:
        id_source = source or table["source"]

        def id_spec(name: str, doms: tuple[str, ...], role: str, **extra) -> SplitSpec:
            return SplitSpec(name=name, source=id_source, split=table["split"], domain_column="domain",
                             domains=doms, **extra)
    else:
        id_source = source or str(Path(root) / table["local_dir"] / f"test_on_{test_domain.lower()}.json")
        splits = {"train": "train", "val": "val", "id_test": "train", "covariate": "test"}

        def id_spec(name: str, doms: tuple[str, ...], role: str, **extra) -> SplitSpec:
            return SplitSpec(name=name, source=id_source, split=splits[role], layout="domain_split_json",
                             domain_column="domain", domains=doms, **extra)

    shots_per = table["official_sampler"] if sampler == "official" else SETUP2_SAMPLERS[sampler]
    return Benchmark(
        name=f"setup2_{dataset}_{test_domain}",
        classnames=table["classnames"],
        train=id_spec("source-domains", sources, "train"),
        val=id_spec("source-domains-val", sources, "val"),
        id_test=id_spec("source-domains-test", sources, "id_test", **cap),
        covariate=(id_spec(test_domain, (test_domain,), "covariate", **cap),),
        semantic=tuple(
            _open_set_spec(name, dataset, root, open_set_sources, open_set_max_per_class, caltech_filter)
            for name in open_set
        ),
        templates="single",
        text_mode="raw",
        shots_per=shots_per,
        val_shots=val_shots,
        description=f"CRoFT Setup-II: {dataset} trained on {', '.join(sources)}, {test_domain} held out; "
        f"open set {', '.join(open_set)}; sampler {sampler}.",
    )


def _open_set_spec(
    name: str,
    dataset: str,
    root: str | None,
    overrides: Mapping[str, str] | None,
    max_per_class: int,
    caltech_filter: str,
) -> SplitSpec:
    if name not in OPEN_SET_SOURCES:
        raise ValueError(f"Unknown open set {name!r}; use one of {sorted(OPEN_SET_SOURCES)}.")
    table = SETUP2_DATASETS[dataset]
    entry = {k: v for k, v in OPEN_SET_SOURCES[name].items() if k != "local"}
    if root is not None:
        folder, split_file = OPEN_SET_SOURCES[name]["local"]
        entry = {"source": str(Path(root) / folder / split_file), "split": OPEN_SET_LOCAL_SPLIT,
                 "layout": "split_json"}
    if overrides and name in overrides:
        entry["source"] = overrides[name]
    exclude = tuple(table["open_set_exclude"].get(name, ())) + tuple(table["classnames"])
    keep = None
    if name == "caltech101" and caltech_filter == "official":
        keep = tuple(c for c in caltech101_official_classes(dataset) if c not in table["classnames"])
    return SplitSpec(name=name, classes=keep, exclude_classes=exclude, max_per_class=max_per_class, **entry)


# ImageNet four-OOD (MCM, Ming et al. 2022; the MOS subsets of Huang & Li 2021): local folders as MCM
# and MOS distribute them (iNaturalist/images/*.jpg, ...; Textures = the whole DTD, dtd/images/).
FOUR_OOD_DIRS = {"inaturalist": "iNaturalist", "sun": "SUN", "places": "Places", "textures": "dtd"}
# Hub defaults: only Textures has a public copy we know of (the whole DTD, read unlabelled). No public
# Hub copy of the 10,000-image MOS subsets of iNaturalist / SUN / Places could be confirmed; they come
# from http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/{iNaturalist,SUN,Places}.tar.gz.
FOUR_OOD_HUB = {"textures": {"source": "tanganke/dtd", "split": "train+test"}}
FOUR_OOD_DOWNLOAD = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/"


def _four_ood_specs(
    root: str | None, ood_sources: Mapping[str, str], names: Sequence[str]
) -> tuple[SplitSpec, ...]:
    missing = [] if root is not None else sorted(
        n for n in names if n not in ood_sources and n not in FOUR_OOD_HUB
    )
    if missing:
        raise ValueError(
            f"The ImageNet OOD sets {missing} have no Hub default: this benchmark needs root= (a folder "
            f"holding {', '.join(FOUR_OOD_DIRS[n] + '/' for n in missing)} as unpacked from "
            f"{FOUR_OOD_DOWNLOAD}) or ood_sources={{name: source}}."
        )
    specs = []
    for name in names:
        if name not in FOUR_OOD_DIRS:
            raise ValueError(f"Unknown OOD set {name!r}; use some of {list(FOUR_OOD_DIRS)}.")
        if name in ood_sources:
            source = ood_sources[name]
            entry = {"source": source, "split": "train"}
            if Path(source).expanduser().is_dir():
                entry = {"source": source, "split": ".", "layout": "folders"}
        elif root is not None:
            entry = {"source": str(Path(root) / FOUR_OOD_DIRS[name]), "split": ".", "layout": "folders"}
        else:
            entry = dict(FOUR_OOD_HUB[name])
        specs.append(SplitSpec(name=name, label_column=None, **entry))
    return tuple(specs)


def _imagenet_root(root: str | None) -> str | None:
    """``root`` when it holds ImageNet in a known layout (else ImageNet is read from the Hub)."""
    if root is None:
        return None
    return root if (Path(root) / "imagenet").is_dir() else None


def imagenet_four_ood(
    *,
    root: str | None = None,
    classnames: Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
    ood_sources: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    ood_sets: Sequence[str] = tuple(FOUR_OOD_DIRS),
    val_shots: int = 4,
) -> Benchmark:
    """The standard ImageNet-1k four-OOD benchmark (MCM subsets of iNaturalist, SUN, Places, Textures).

    ID is all 1000 ImageNet classes (ImageNet val as the ID test set), so CRoFT can be compared with
    MCM (zero-shot CLIP ViT-B/16: 42.7 FPR95 / 90.8 AUROC averaged over the four sets), LoCoOp and
    NegLabel. The OOD sets were curated to hold no ImageNet class and are read unlabelled.

    Args:
        root: folder with the OOD subsets (``root/iNaturalist``, ``root/SUN``, ``root/Places``,
            ``root/dtd``) and optionally ImageNet in :func:`setup1`'s layout (``root/imagenet``);
            without ``root/imagenet``, ImageNet is read from the Hub.
        classnames: the 1000 ImageNet class names (default as in :func:`setup1`).
        wnids: matching WordNet ids.
        ood_sources: override the OOD sources by name (a Hub id, or a local folder of images).
        sources: override the ImageNet sources (``{"imagenet": ...}``).
        ood_sets: which of the four sets to evaluate.
        val_shots: val images per class (from ImageNet train, outside the few-shot set).
    """
    imagenet_root = _imagenet_root(root)
    names, wnids = _imagenet_classes(imagenet_root if imagenet_root else None, classnames, wnids)
    semantic = _four_ood_specs(root, dict(ood_sources or {}), ood_sets)
    spec = functools.partial(_imagenet_spec, "imagenet", root=imagenet_root, names=names, wnids=wnids,
                             sources=sources)
    return Benchmark(
        name="imagenet_four_ood",
        classnames=tuple(names),
        train=spec("imagenet", "train"),
        val=spec("imagenet-val", "val"),
        id_test=spec("imagenet", "test"),
        semantic=semantic,
        templates="single",
        text_mode="normalized",
        val_shots=val_shots,
        description="ImageNet-1k vs " + " / ".join(s.name for s in semantic) + " (MCM subsets).",
    )


def imagenet_full_spectrum(
    *,
    root: str | None = None,
    classnames: Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
    covariate: Sequence[str] = COVARIATE_SETS,
    ood_sets: Sequence[str] = tuple(FOUR_OOD_DIRS),
    ood_sources: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    val_shots: int = 4,
) -> Benchmark:
    """Full-spectrum OOD detection on ImageNet-1k (OpenOOD v1.5 style).

    ID is ImageNet-1k; the covariate-shifted sets (ImageNet-V2 / -Sketch / -A / -R, all their classes)
    are *also ID* for detection and enter the accuracy over ID + covariate; the semantic sets are the
    four MCM OOD sets. :func:`croft_core.evaluate.evaluate` reports this as ``full_spectrum``
    (covariate counted as ID) next to the standard per-set metrics. OpenOOD's own v1.5 lists
    (ImageNet-C, SSB-hard, NINCO, OpenImage-O) can be added as more sets by editing the JSON
    definition.

    Args:
        root: as :func:`imagenet_four_ood` (``root/imagenet`` and the CoOp ImageNet-variant folders
            read locally when present, else the Hub).
        classnames, wnids: as :func:`setup1`.
        covariate: which of ``COVARIATE_SETS`` count as covariate-shifted ID.
        ood_sets, ood_sources: as :func:`imagenet_four_ood`.
        sources: override ImageNet-family sources by set name.
        val_shots: val images per class.
    """
    base = imagenet_four_ood(root=root, classnames=classnames, wnids=wnids, ood_sources=ood_sources,
                             sources=sources, ood_sets=ood_sets, val_shots=val_shots)
    imagenet_root = _imagenet_root(root)
    names, wnids = _imagenet_classes(imagenet_root, classnames, wnids)
    spec = functools.partial(_imagenet_spec, root=imagenet_root, names=names, wnids=wnids, sources=sources)
    return dataclasses.replace(
        base,
        name="imagenet_full_spectrum",
        covariate=tuple(spec(w, COVARIATE_NAMES[w], "shifted") for w in covariate),
        description="Full-spectrum ImageNet-1k: covariate-shifted "
        + ", ".join(COVARIATE_NAMES[w] for w in covariate) + " count as ID; OOD "
        + " / ".join(s.name for s in base.semantic) + ".",
    )


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

def shapes(root: str | None = None, semantic_per_class: bool = True) -> Benchmark:
    """The embedded synthetic benchmark (rendered on first use; see :mod:`croft_core.synth`)."""
    from croft_core.synth.benchmark import shapes_benchmark

    return shapes_benchmark(root=root, semantic_per_class=semantic_per_class)


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "shapes": shapes,
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


def replace_spec(benchmark: Benchmark, role: str, **changes: Any) -> Benchmark:
    """A copy of ``benchmark`` with fields of one role's spec (all specs of a multi role) changed.

    Args:
        benchmark: the definition.
        role: which role's spec(s) to change.
        **changes: SplitSpec fields to replace.
    """
    _check_role(role)
    if role in MULTI_ROLES:
        new = tuple(dataclasses.replace(s, **changes) for s in getattr(benchmark, role))
    else:
        new = dataclasses.replace(getattr(benchmark, role), **changes)
    return dataclasses.replace(benchmark, **{role: new})
