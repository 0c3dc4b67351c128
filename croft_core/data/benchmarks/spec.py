"""Benchmark definitions as data: :class:`SplitSpec` (one set of rows) and :class:`Benchmark` (a protocol).

A :class:`Benchmark` is a frozen dataclass of :class:`SplitSpec` s (a source string plus column names
and row filters). Every protocol of the paper is one *definition*, not a code path (STYLE.md Part 3
item 3); users can write their own as JSON (:meth:`Benchmark.to_json` shows the format).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from croft_core.data.layouts import LAYOUTS
from croft_core.data import VOCAB_DIR

DATA_DIR = VOCAB_DIR / "benchmarks"  # data of the definitions (wnids, filters): not vocabulary presets

ROLES = ("train", "val", "id_test", "covariate", "semantic")
MULTI_ROLES = ("covariate", "semantic")  # roles that hold several sets
EVAL_ROLES = ("id_test", "covariate", "semantic")
# How train shots are drawn: K per class; K // n_domains per (class, domain) (the §5 item 12 fix);
# K per (class, domain); or the official PACS draw, bug included (parity).
SHOTS_PER = ("class", "class_domain", "class_each_domain", "official_balance")
_DOMAIN_SHOTS = ("class_domain", "class_each_domain", "official_balance")
# The in-distribution side of open-set detection (AUROC / FPR95 against the semantic sets):
DETECTION_IDS = {
    "id_test": "every image of the ID test split",
    "id_test_correct": "the correctly classified images of the ID test split",
    "covariate_correct": "the correctly classified images of the covariate (held-out domain) sets "
                         "(CRoFT Setup-II, CROFT_SPEC §3.2)",
}


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
    ``exclude_classes`` and ``domains`` keep rows, then the caps draw a seeded subset. Class names
    are compared ignoring case and ``_`` vs space (``Faces_easy`` is ``faces easy``). ``n_classes``
    marks an official count: then every name in ``classes`` must exist in the data, and the number
    of classes left after filtering must equal it (else
    :class:`~croft_core.data.benchmarks.classnames.ClassMatchError`).
    """

    name: str  # shown in results ("sketch", "dtd", ...)
    source: str  # see croft_core.data.sources.load_split: save_to_disk folder, imagefolder:PATH, Hub id
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
    layout: str | None = None  # a local layout of croft_core.data.layouts.LAYOUTS; None reads via `datasets`
    max_per_class: int | None = None  # seeded cap per class (official Setup-II: 100 / 500)
    max_total: int | None = None  # seeded cap on the whole set (Setup-I semantic: 1000)
    revision: str | None = None  # Hub revision (commit sha or named ref) the source is read at
    n_classes: int | None = None  # classes the set must hold after filtering (an official count)

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
        for cap in ("max_per_class", "max_total", "n_classes"):
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
    def key(self) -> tuple[str, str | None, str, str | None]:
        """``(source, config_name, split, revision)``: specs with the same key read the same rows."""
        return (self.source, self.config_name, self.split, self.revision)

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
    far_ood: tuple[str, ...] = ()  # names of semantic sets that are far-OOD (pooled apart from the near ones)
    templates: str = "single"  # template-set name, resolved by croft_core.clip.prompts
    text_mode: str = "normalized"  # "normalized" (Setup-I ensemble) or "raw" (Setup-II); CROFT_SPEC §1.1
    shots_per: str = "class"  # "class" or "class_domain" (K // n_domains per (class, domain))
    val_shots: int | None = None  # val images per class; None = every remaining row
    allow_val_test_overlap: bool = False  # True reproduces the official Setup-I val ⊂ test (§5 item 14)
    train_augment: bool = True  # official random-resized-crop views; False: one plain view per image
    detection_id: str = "id_test"  # the ID side of detection, a key of DETECTION_IDS
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classnames", _as_names(self.classnames, "Benchmark.classnames"))
        object.__setattr__(self, "far_ood", _as_names(self.far_ood, "Benchmark.far_ood") or ())
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
        if self.detection_id not in DETECTION_IDS:
            raise ValueError(f"detection_id must be one of {sorted(DETECTION_IDS)}; got {self.detection_id!r}.")
        if self.detection_id.startswith("covariate") and not self.covariate:
            raise ValueError(f"Benchmark {self.name!r}: detection_id={self.detection_id!r} needs a covariate set.")
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
        missing = [n for n in self.far_ood if n not in {s.name for s in self.semantic}]
        if missing:
            raise ValueError(f"Benchmark {self.name!r}: far_ood names {missing}, which are not semantic sets; "
                             f"use names of {[s.name for s in self.semantic]}.")
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
