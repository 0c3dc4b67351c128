"""Training data of a fine-tuning run from a browser or a client: a benchmark, an upload, a Hub id.

Each source becomes a :class:`TrainingData`: class names, a few-shot training split and a
validation split, both objects :func:`croft_core.clip.features.extract_features` encodes (and caches):

- a registered **benchmark** (``shapes``, ``shapes_dg`` ...): its own train and val roles
  (:func:`croft_core.data.benchmarks.materialize`), val capped at ``val_per_class`` images per class;
- an **upload** (:mod:`croft_app.service.uploads`): a zip's own ``val/`` folder when it has one, else a
  seeded, stratified held-out part (:func:`holdout_rows`);
- a **Hub dataset** id with an image and a label column, through ``datasets``
  (:func:`croft_core.data.sources.load_split`), split the same way. It is read as the visitor's,
  never with the operator's token and only from the Hub (:mod:`croft_app.service.credentials`).

Features of uploaded files are cached by content (sha1), so the same zip trains again without
encoding; a Hub dataset's by repository, split and rows. Bad data raises :class:`DataError` (or
the :class:`~croft_core.errors.HubError` of an unreachable Hub) before anything is encoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from croft_core.data.benchmarks.loading import derive_seed
from croft_core.data.benchmarks.sampling import few_shot_indices
from croft_core.errors import CroftError, HubError
from croft_core.data.images import ImageLimits, load_image
from croft_core.clip.prompts import SINGLE_TEMPLATE, get_templates
from croft_app.service.credentials import VISITOR, HubAccess, hub_access, hub_dataset_path
from croft_app.service.security import is_hub_id, scrub_paths
from croft_app.service.uploads import UploadedImages, UploadLimits

__all__ = ["DataError", "DataRecipe", "FileSplit", "HubSplit", "TrainingData", "benchmark_data", "holdout_rows",
           "hub_data", "upload_data"]

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2  # held-out share of each class when the data has no validation split
MAX_HUB_BYTES = 2 * 2**30  # a Hub dataset is downloaded whole by ``datasets``: refuse larger ones


def _nothing() -> None:
    """The cleanup of data that left nothing on disk (a module function: picklable)."""


class DataError(CroftError, ValueError):
    """Training data that cannot be used (too few classes, a missing column ...); says what to do."""


@dataclass
class FileSplit:
    """Image files with labels, in the split interface of ``extract_features`` (picklable)."""

    name: str
    paths: list[str]
    labels: np.ndarray  # int64 [N]
    ids: list[str]  # content hashes: the same files give the same cache key

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int):
        return load_image(self.paths[int(i)], limits=ImageLimits.from_env())

    def fingerprint(self) -> str:
        payload = json.dumps(["files", self.ids, [int(x) for x in self.labels]])
        return hashlib.sha1(payload.encode()).hexdigest()


@dataclass
class HubSplit:
    """Selected rows of a ``datasets.Dataset`` (a Hub dataset), in the split interface."""

    name: str
    dataset: Any
    rows: list[int]
    labels: np.ndarray
    image_column: str
    source: str

    @property
    def ids(self) -> list[str]:
        return [f"{self.source}:{r}" for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int):
        return load_image(self.dataset[self.rows[int(i)]][self.image_column], limits=ImageLimits.from_env())

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(["hub", self.source, self.rows]).encode()).hexdigest()


@dataclass
class TrainingData:
    """What a fine-tuning run trains and validates on."""

    name: str  # short, for the display name ("shapes", "my-data", "org/dataset")
    kind: str  # "benchmark" | "upload" | "hub"
    classnames: tuple[str, ...]
    train: Any  # split interface: __len__, image(i), labels, ids, name, fingerprint()
    val: Any
    templates: tuple[str, ...] = SINGLE_TEMPLATE
    text_mode: str = "normalized"
    augment: bool = True  # several augmented views of each training image
    shots: int | None = None  # training images per class drawn (None: all)
    val_source: str = "held out"  # "held out" (seeded split) | "given" (the data's own)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cleanup: Callable[[], None] = _nothing

    def describe(self) -> dict[str, Any]:
        """The data as the model card and the results list it."""
        return {"source": self.kind, "name": self.name, "classes": len(self.classnames),
                "train_images": len(self.train), "val_images": len(self.val),
                "validation": self.val_source, "skipped_files": len(self.skipped)}


def _nothing_to_check() -> None:
    return None


@dataclass(frozen=True)
class DataRecipe:
    """How to build a run's data, to be built where the run trains (picklable): in the training
    process (:mod:`croft_app.service.trainproc`), decoding and checking each uploaded image and
    reading a benchmark's rows happen outside the server, which stays free for the other visitors.
    The caller has already checked what is cheap to check (the source, file counts, paths).

    Attributes:
        source: ``"benchmark"`` (``value``: its registered name), ``"zip"`` (``value``: the zip's
            path, extracted into ``work``) or ``"labelled"`` (``value``: ``(path, class name)`` pairs).
        name: the data's display name (uploads).
        check: called before each image is checked (it raises to stop the run).
    """

    source: str
    value: Any
    shots: int | None
    seed: int
    max_images: int
    max_classes: int
    name: str = ""
    work: str = ""
    limits: UploadLimits | None = None
    check: Callable[[], None] = _nothing_to_check

    def __call__(self) -> TrainingData:
        from croft_app.service.uploads import extract_zip, labelled_images
        from croft_core.data.benchmarks import get_benchmark

        common = dict(shots=self.shots, seed=self.seed, max_images=self.max_images, max_classes=self.max_classes)
        if self.source == "benchmark":
            return benchmark_data(get_benchmark(self.value, seed=self.seed), **common)
        limits = self.limits or UploadLimits()
        if self.source == "labelled":
            return upload_data(labelled_images(list(self.value), limits, check=self.check), self.name, **common)
        if self.source == "zip":
            return upload_data(extract_zip(self.value, self.work, limits, check=self.check), self.name, **common)
        raise ValueError(f"unknown data source {self.source!r}")


def holdout_rows(labels: np.ndarray, seed: int, fraction: float = VAL_FRACTION) -> tuple[list[int], list[int]]:
    """Seeded, stratified train / validation rows: ``round(fraction * n)`` (at least 1) of each class
    with at least two images goes to validation; single images stay in training.

    Returns:
        ``(train_rows, val_rows)``, each sorted.
    """
    train, val = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng = np.random.default_rng(derive_seed(seed, "finetune-val", str(int(c))))
        rows = rng.permutation(rows)
        k = max(1, round(fraction * len(rows))) if len(rows) >= 2 else 0
        val += rows[:k].tolist()
        train += rows[k:].tolist()
    return sorted(train), sorted(val)


def _check_counts(classnames: Sequence[str], labels: np.ndarray, max_classes: int, what: str) -> None:
    if len(classnames) > max_classes:
        raise DataError(f"{what} has {len(classnames)} classes; at most {max_classes} per run")
    present = set(np.unique(labels).tolist())
    empty = [c for i, c in enumerate(classnames) if i not in present]
    if len(classnames) - len(empty) < 2:
        raise DataError(f"{what} has fewer than two classes with images; give at least two classes")
    if empty:
        raise DataError(f"class(es) {list(empty)[:10]} of {what} have no image; add images or remove them")


def _sample(labels: np.ndarray, pool: list[int], shots: int | None, seed: int) -> list[int]:
    return sorted(few_shot_indices(labels, shots, seed, pool=np.asarray(pool, dtype=np.int64), warn=False))


def upload_data(images: UploadedImages, name: str, *, shots: int | None, seed: int, max_images: int,
                max_classes: int) -> TrainingData:
    """Training data from checked uploads (a zip or labelled images); a held-out part when the zip
    brings no ``val/`` folder."""
    items = [it for it in images.items if it.split in ("train", "val")]
    labels = np.array([it.label for it in items], dtype=np.int64)
    given_val = [i for i, it in enumerate(items) if it.split == "val"]
    train_pool = [i for i, it in enumerate(items) if it.split == "train"]
    _check_counts(images.classnames, labels[train_pool], max_classes, "the upload")
    if given_val:
        val_rows, source = given_val, "given"
    else:
        train_pool, val_rows = holdout_rows(labels, seed)
        train_pool = train_pool if val_rows else list(range(len(items)))
        source = "held out"
    train_rows = _sample(labels, train_pool, shots, seed)
    if len(train_rows) + len(val_rows) > max_images:
        raise DataError(f"{len(train_rows) + len(val_rows)} images would be used; at most {max_images} "
                        f"per run: choose fewer shots or upload fewer images")
    if not val_rows:
        val_rows, source = train_rows, "training images (too few images to hold any out)"

    def split(rows: list[int], role: str) -> FileSplit:
        return FileSplit(f"{name} {role}", [items[r].path for r in rows], labels[rows],
                         [items[r].sha1 for r in rows])

    return TrainingData(name, "upload", images.classnames, split(train_rows, "train"), split(val_rows, "val"),
                        val_source=source, shots=shots, skipped=list(images.skipped), cleanup=images.cleanup)


def benchmark_data(benchmark, *, shots: int | None, seed: int, max_images: int, max_classes: int,
                   val_per_class: int = 16) -> TrainingData:
    """Training data of a registered benchmark: its train role (``shots`` per class) and val role."""
    from croft_core.data.benchmarks import materialize

    if len(benchmark.classnames) > max_classes:
        raise DataError(f"benchmark {benchmark.name!r} has {len(benchmark.classnames)} classes; at most "
                        f"{max_classes} per run")
    if benchmark.val_shots is None:
        benchmark = replace(benchmark, val_shots=val_per_class)
    train = materialize(benchmark, "train", shots=shots, seed=seed)
    val = materialize(benchmark, "val", shots=shots, seed=seed)
    if len(train) + len(val) > max_images:
        raise DataError(f"{len(train) + len(val)} images would be used; at most {max_images} per run: "
                        f"choose fewer shots")
    _check_counts(benchmark.classnames, np.asarray(train.labels), max_classes, f"benchmark {benchmark.name!r}")
    return TrainingData(benchmark.name, "benchmark", tuple(benchmark.classnames), train, val,
                        templates=get_templates(benchmark.templates), text_mode=benchmark.text_mode,
                        augment=benchmark.train_augment, val_source="given", shots=shots)


def _check_hub_access(dataset_id: str, max_bytes: int, access: HubAccess) -> None:
    """Ask the Hub, with the caller's credentials, whether ``dataset_id`` may be read, and refuse a
    dataset larger than ``max_bytes`` before ``datasets`` downloads all of it.

    This is also the access check: when the Hub refuses a file, ``datasets`` and ``huggingface_hub``
    fall back to the server's cache, which holds what the operator downloaded with their token. So
    a visitor's dataset is loaded only after the Hub itself said yes, to its info and to one of its
    files (a gated dataset's info is public), and never while the Hub cannot answer
    (:meth:`~croft_app.service.credentials.HubAccess.require_hub`).
    """
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HFValidationError, HTTPError

    from croft_core.offline import hub_unreachable_reason

    reason = hub_unreachable_reason()
    access.require_hub(f"Hub dataset {dataset_id!r}", reason,
                       hint="; upload a zip of class folders instead")
    if reason is not None:
        return  # the operator's own call: load_split fails at once, with the reason, or reads the cache
    try:
        info = HfApi().dataset_info(dataset_id, files_metadata=True, token=access.token)
        files = [f.rfilename for f in (info.siblings or []) if isinstance(getattr(f, "rfilename", None), str)]
        if files:  # a gated dataset shows its info to anyone, its files only to those it admitted
            get_hf_file_metadata(hf_hub_url(dataset_id, files[0], repo_type="dataset"), token=access.token)
    except (HTTPError, HFValidationError, OSError) as err:
        raise HubError(f"Hub dataset {dataset_id!r} cannot be read ({type(err).__name__}); check the id "
                       f"(public datasets only)") from None
    size = sum(getattr(f, "size", None) or 0 for f in (info.siblings or []))
    if size > max_bytes:
        raise DataError(f"Hub dataset {dataset_id!r} is {size / 2**30:.1f} GB; this server trains on "
                        f"datasets of at most {max_bytes / 2**30:.1f} GB: upload a zip of class folders")


def hub_data(dataset_id: str, *, shots: int | None, seed: int, max_images: int, max_classes: int,
             split: str = "train", image_column: str = "image", label_column: str = "label",
             max_bytes: int = MAX_HUB_BYTES, token: str | None = None) -> TrainingData:
    """Training data from a Hub dataset with an image and a label column (``datasets``), read as
    a visitor's: without the operator's token (``token``: the visitor's own, if they gave one), from
    the Hub only (:mod:`croft_app.service.credentials`).

    Raises:
        DataError: not a Hub id ``ORG/NAME``, a missing column, too few classes.
        HubError: offline or unreachable (at once, see :mod:`croft_core.offline`), or no such dataset.
    """
    from croft_core.data.sources import column_array, load_split

    dataset_id = (dataset_id or "").strip()
    if not is_hub_id(dataset_id):
        raise DataError(f"{dataset_id[:100]!r} is not a Hub dataset id; give one as ORG/NAME")
    access = hub_access(VISITOR, token)
    _check_hub_access(dataset_id, max_bytes, access)
    try:  # hf://datasets/ORG/NAME: never a local folder of that name
        ds, classnames = load_split(hub_dataset_path(dataset_id), split, image_column=image_column,
                                    label_column=label_column, token=access.token)
    except HubError as err:  # the library's message speaks to a terminal user; this one to a visitor
        reason = scrub_paths(str(err).split(". ")[0])[:300]
        raise HubError(f"{reason}. Upload a zip of class folders instead, or try again later.") from None
    except (FileNotFoundError, ConnectionError) as err:
        raise HubError(f"Hub dataset {dataset_id!r} cannot be loaded: {type(err).__name__}; check the id, "
                       f"or use a zip upload when this server is offline") from None
    except ValueError as err:  # a missing column, an unknown split, labels without names
        raise DataError(f"Hub dataset {dataset_id!r}: {str(err)[:300]}") from None
    labels = column_array(ds, label_column)
    _check_counts(classnames, labels[labels >= 0], max_classes, f"Hub dataset {dataset_id!r}")
    labelled = np.flatnonzero(labels >= 0)
    # sample before splitting, so a large dataset never costs more than the images a run uses
    pool = _sample(labels, labelled.tolist(), (shots or 0) * 2 + 2 if shots else None, seed)
    train_pool, val_rows = holdout_rows(labels[pool], seed)
    train_rows = _sample(labels[pool], train_pool, shots, seed)
    rows_t, rows_v = [pool[i] for i in train_rows], [pool[i] for i in val_rows]
    if len(rows_t) + len(rows_v) > max_images:
        raise DataError(f"{len(rows_t) + len(rows_v)} images would be used; at most {max_images} per run: "
                        f"choose fewer shots")

    def make(rows: list[int], role: str) -> HubSplit:
        return HubSplit(f"{dataset_id} {role}", ds, rows, labels[rows], image_column, f"{dataset_id}:{split}")

    return TrainingData(dataset_id, "hub", tuple(classnames), make(rows_t, "train"), make(rows_v, "val"),
                        shots=shots)
