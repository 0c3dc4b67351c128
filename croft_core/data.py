"""Datasets through `datasets`, and seeded few-shot sampling.

Every split CRoFT Lab reads is described by a *source* string and column names, never by a Python
class per dataset (STYLE.md convention 11, Part 3 item 3). A source is one of:

- a local folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- ``imagefolder:PATH``, or a local folder of data files (``PATH/<class>/<image>``, optionally under
  split folders ``PATH/train|validation|test/``, or with a ``metadata.csv`` carrying extra columns
  such as ``domain``), loaded with the generic ``datasets`` builders;
- a Hugging Face Hub dataset id (``org/name``, or ``hf://datasets/org/name``);
- with ``layout=``, a local folder in the layout the official code and its users already have
  (:data:`LAYOUTS`): ``"folders"`` (torchvision ``ImageFolder`` trees: ImageNet, ImageNet-V2/-Sketch/
  -A/-R, the MCM OOD subsets), ``"split_json"`` (CoOp's ``split_zhou_*.json``) and
  ``"domain_split_json"`` (the ``test_on_<domain>.json`` files of CRoFT's PACS/VLCS, same format plus
  a domain read from each path). These are read by a plain directory scan (no ``datasets`` cache is
  written next to the user's data) and get an ``id`` column with each image's relative path, so
  manifests survive moving the data.

Class names come from the label column's ``ClassLabel`` (a string label column, as an image folder
with a ``metadata.csv`` produces, is encoded to a ``ClassLabel`` with sorted names).

:func:`few_shot_indices` is the seeded K-shot sampler. With domains it draws ``K // n_domains`` images
per (class, domain): CROFT_SPEC §5 item 12, the fix of the official
``generate_fewshot_dataset_balance``, which drew 105 PACS images ignoring class;
:func:`official_balanced_indices` reproduces that draw for parity runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.exceptions import DatasetNotFoundError

from .offline import hub_offline, hub_unreachable_reason

try:  # httpx is how huggingface_hub talks to the Hub; its transport errors mean "unreachable"
    import httpx

    _NETWORK_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, httpx.TransportError)
except ImportError:  # pragma: no cover - huggingface_hub always brings httpx
    _NETWORK_ERRORS = (ConnectionError,)

logger = logging.getLogger(__name__)

IMAGEFOLDER_PREFIX = "imagefolder:"
HUB_PREFIX = "hf://datasets/"

LOCAL_LAYOUTS = (
    "a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (it holds "
    "dataset_dict.json, or state.json and dataset_info.json), or an image folder with one sub-folder "
    "per class (PATH/<class>/<image>, optionally under split folders PATH/train|validation|test/, "
    "with an optional metadata.csv of file_name,label[,domain] columns)"
)


LAYOUTS = ("folders", "split_json", "domain_split_json")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
WHOLE_FOLDER = "."  # split name of a "folders" source that is read as a whole (no split sub-folder)


class DatasetUnavailableError(RuntimeError):
    """A Hub dataset could not be reached (offline, no network, gated or missing)."""


# --------------------------------------------------------------------------------------------------
# Sources and splits
# --------------------------------------------------------------------------------------------------


def load_split(
    source: str,
    split: str = "train",
    *,
    image_column: str = "image",
    label_column: str | None = "label",
    config_name: str | None = None,
    label_names: Sequence[str] | None = None,
    layout: str | None = None,
) -> tuple[datasets.Dataset, list[str]]:
    """Load one split of a dataset and its class names.

    Args:
        source: a ``save_to_disk`` folder, ``imagefolder:PATH``, a local data folder, or a Hub id
            (see the module docstring).
        split: split name; ``"a+b"`` concatenates splits. A single saved ``Dataset`` (not a dict)
            offers one split, named by its ``.split`` attribute or ``"train"``.
        image_column: column holding the images.
        label_column: column holding the labels, or None for unlabelled sets (then the class names
            are ``[]``).
        config_name: Hub dataset configuration (the ``name`` argument of ``load_dataset``).
        label_names: class name of each integer label, in label order. Required when the label
            column holds plain integers; when the column is a ``ClassLabel`` these names replace
            its own (for datasets whose names differ from the benchmark's spelling).
        layout: read ``source`` (a local path) with one of :data:`LAYOUTS` instead of ``datasets``:
            ``"folders"`` (``split`` names a sub-folder, also looked up under ``images/``; ``"."``
            reads the folder itself), ``"split_json"`` / ``"domain_split_json"`` (``source`` is the
            JSON file, ``split`` its ``train`` / ``val`` / ``test`` keys). See
            :func:`read_image_folder` and :func:`read_split_json`.

    Returns:
        ``(dataset, classnames)``; the label column (if any) is a ``ClassLabel`` and
        ``classnames == dataset.features[label_column].names``.

    Raises:
        FileNotFoundError: a local source does not exist or holds no data.
        ValueError: unknown split, missing column, or labels without class names.
        DatasetUnavailableError: a Hub id cannot be reached or does not exist.
    """
    if layout is not None:
        ds = load_layout(source, split, layout, labelled=label_column is not None)
        wanted = [image_column] + ([label_column] if label_column else [])
        require_columns(ds, wanted, f"{source!r} (split {split!r}, layout {layout!r})")
        if label_column is None:
            return ds, []
        return _ensure_class_label(ds, label_column, label_names, source)
    kind, location = _resolve_source(source)
    if kind == "hub":
        ds = _load_hub(location, split, config_name)
    else:
        ds = _pick_split(_load_local(kind, location), split, source)
    wanted = [image_column] + ([label_column] if label_column else [])
    require_columns(ds, wanted, f"{source!r} (split {split!r})")
    if label_column is None:
        return ds, []
    return _ensure_class_label(ds, label_column, label_names, source)


def _resolve_source(source: str) -> tuple[str, str]:
    """Return ``(kind, location)`` with kind in {"disk", "imagefolder", "local", "hub"}."""
    if source.startswith(IMAGEFOLDER_PREFIX):
        path = Path(source[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"Image folder {str(path)!r} does not exist. Expected {LOCAL_LAYOUTS}."
            )
        return "imagefolder", str(path)
    if source.startswith(HUB_PREFIX):
        return "hub", source[len(HUB_PREFIX) :]
    path = Path(source).expanduser()
    if path.is_dir():
        return ("disk" if _is_saved_dataset(path) else "local"), str(path)
    if path.exists() or _looks_like_path(source):
        raise FileNotFoundError(
            f"Dataset folder {source!r} does not exist (or is not a folder). Expected {LOCAL_LAYOUTS}. "
            "A Hub id has the form 'org/name'."
        )
    return "hub", source


def _looks_like_path(source: str) -> bool:
    # A Hub id is "name" or "org/name"; anything else that is not an existing folder is a local
    # path the user mistyped, and deserves a "not found" error rather than a Hub lookup.
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or "\\" in source
        or source.count("/") > 1
    )


def _is_saved_dataset(path: Path) -> bool:
    return (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        (path / datasets.config.DATASET_STATE_JSON_FILENAME).is_file()
        and (path / datasets.config.DATASET_INFO_FILENAME).is_file()
    )


def _load_local(kind: str, path: str) -> dict[str, datasets.Dataset]:
    """All splits of a local source, as a plain dict."""
    if kind == "disk":
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.Dataset):
            return {str(loaded.split) if loaded.split else "train": loaded}
        return dict(loaded)
    try:
        if kind == "imagefolder":
            loaded = datasets.load_dataset("imagefolder", data_dir=path)
        else:
            loaded = datasets.load_dataset(path)
    except FileNotFoundError as e:  # EmptyDatasetError / DataFilesNotFoundError
        raise FileNotFoundError(
            f"No data files found in {path!r} ({e}). Expected {LOCAL_LAYOUTS}."
        ) from e
    return dict(loaded)


def _pick_split(
    splits: dict[str, datasets.Dataset], split: str, source: str
) -> datasets.Dataset:
    names = [part.strip() for part in split.split("+")]
    missing = [name for name in names if name not in splits]
    if missing:
        raise ValueError(
            f"Split {missing[0]!r} not found in {source!r}; available splits: {sorted(splits)}. "
            "Pass one of them as `split` (join several with '+')."
        )
    if len(names) == 1:
        return splits[names[0]]
    return datasets.concatenate_datasets([splits[name] for name in names])


def _load_hub(repo_id: str, split: str, config_name: str | None) -> datasets.Dataset:
    _fail_fast_if_hub_unresolvable(repo_id)
    try:
        return datasets.load_dataset(repo_id, config_name, split=split)
    except _NETWORK_ERRORS as e:
        raise DatasetUnavailableError(_unreachable_message(repo_id, e)) from e
    except DatasetNotFoundError as e:
        raise DatasetUnavailableError(
            f"Hub dataset {repo_id!r} does not exist or cannot be accessed ({e}). Check the id, log in "
            "with `hf auth login` for gated datasets, or use a local folder / `save_to_disk` copy."
        ) from e
    except ValueError as e:
        if "Unknown split" in str(e):
            raise ValueError(f"Hub dataset {repo_id!r}: {e} Pass one of them as `split`.") from e
        raise


def _unreachable_message(repo_id: str, error: BaseException | None) -> str:
    offline = _hub_offline()
    reason = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the Hub is unreachable"
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return (
        f"Cannot load Hub dataset {repo_id!r}: {reason}{detail}. Download it once with network access "
        "(it is then cached; set HF_HUB_OFFLINE=1 to reuse the cache without network), or pass a local "
        "folder: an image folder (imagefolder:PATH) or a copy written with `save_to_disk`."
    )


def _hub_offline() -> bool:
    return hub_offline() or bool(datasets.config.HF_HUB_OFFLINE)


def _fail_fast_if_hub_unresolvable(repo_id: str) -> None:
    """Raise at once when the Hub's host name does not resolve (see :mod:`croft_core.offline`);
    in offline mode ``datasets`` itself fails at once or uses its cache."""
    if _hub_offline():
        return
    reason = hub_unreachable_reason()
    if reason is not None:
        raise DatasetUnavailableError(_unreachable_message(repo_id, OSError(reason)))


def require_columns(ds: datasets.Dataset, columns: Sequence[str], what: str) -> None:
    """Raise a ValueError naming the missing columns and the ones that exist.

    Args:
        ds: the dataset to check.
        columns: column names that must exist.
        what: how to name the dataset in the message (e.g. the source and split).
    """
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"Column(s) {missing} not found in {what}; its columns are {ds.column_names}. "
            "Pass the right names (image_column= / label_column= / domain_column=)."
        )


def column_array(ds: datasets.Dataset, column: str) -> np.ndarray:
    """One column as a numpy array without decoding any image.

    Integer columns (``ClassLabel`` included) give int64; other columns give an object array.
    Reads through Arrow, so it is cheap even for ImageNet-sized datasets.

    Args:
        ds: the dataset (an indices mapping from ``select`` is honoured).
        column: the column name.

    Returns:
        Array of shape ``[len(ds)]``.
    """
    chunked = ds.select_columns([column]).with_format("arrow")[:].column(column)
    if pa.types.is_integer(chunked.type):
        return chunked.to_numpy().astype(np.int64)
    return np.array(chunked.to_pylist(), dtype=object)


def _ensure_class_label(
    ds: datasets.Dataset, column: str, label_names: Sequence[str] | None, source: str
) -> tuple[datasets.Dataset, list[str]]:
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        if label_names is None:
            return ds, list(feature.names)
        if len(label_names) != feature.num_classes:
            raise ValueError(
                f"label_names has {len(label_names)} names but column {column!r} of {source!r} has "
                f"{feature.num_classes} classes; give one name per class, in label order."
            )
        return _with_class_label(ds, column, column_array(ds, column), list(label_names)), list(
            label_names
        )
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        values = ds.select_columns([column]).with_format("arrow")[:].column(column)
        names = sorted(str(v) for v in pc.unique(values).to_pylist() if v is not None)
        codes = pc.index_in(values, value_set=pa.array(names, type=values.type))
        codes = np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        logger.info(
            "Encoded string column %r of %s as a ClassLabel with %d names", column, source, len(names)
        )
        return _with_class_label(ds, column, codes, names), names
    if label_names is not None and dtype is not None and dtype.startswith(("int", "uint")):
        codes = column_array(ds, column)
        if codes.size and (codes.min() < -1 or codes.max() >= len(label_names)):
            raise ValueError(
                f"Column {column!r} of {source!r} has labels in [{codes.min()}, {codes.max()}] but "
                f"label_names has only {len(label_names)} names."
            )
        return _with_class_label(ds, column, codes, list(label_names)), list(label_names)
    raise ValueError(
        f"Column {column!r} of {source!r} is {feature}, not a ClassLabel, so its class names are unknown. "
        "Pass label_names=[...] (the class name of each integer label, in order; `label_names` in a "
        f"SplitSpec), or cast it once and save: ds.cast_column({column!r}, datasets.ClassLabel(names=[...]))"
        ".save_to_disk(PATH)."
    )


def _with_class_label(
    ds: datasets.Dataset, column: str, codes: np.ndarray, names: list[str]
) -> datasets.Dataset:
    # remove + add keeps everything in memory; `cast_column` would write a cache file next to the
    # user's data, which may be read-only.
    feature = datasets.ClassLabel(names=names)
    return ds.remove_columns(column).add_column(column, codes.astype(np.int64), feature=feature)


# --------------------------------------------------------------------------------------------------
# Local layouts of the official code: image-folder trees and split JSON files
# --------------------------------------------------------------------------------------------------

# Parsed layouts, keyed by (kind, path, split, option, modification time): a benchmark reads the same
# ImageNet train folder for its train and val roles, and a 1.28M-file scan is worth doing once.
_LAYOUT_CACHE: dict[tuple, datasets.Dataset] = {}
_LAYOUT_CACHE_SIZE = 16
_LAYOUT_LOCK = threading.Lock()


def load_layout(source: str, split: str, layout: str, *, labelled: bool = True) -> datasets.Dataset:
    """Read a local folder in one of :data:`LAYOUTS`; ``"a+b"`` concatenates splits.

    Args:
        source: a folder (``"folders"``) or a JSON file (``"split_json"``, ``"domain_split_json"``).
        split: sub-folder / JSON key; ``"."`` reads a ``"folders"`` source as a whole.
        layout: one of :data:`LAYOUTS`.
        labelled: ``"folders"`` only: label each image by its top-level class folder (False reads
            every image below the folder, unlabelled: the MCM OOD subsets).

    Returns:
        A dataset with ``image``, ``id`` (path relative to the source), and ``label`` (a
        ``ClassLabel``) when labelled, plus ``domain`` for ``"domain_split_json"``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; use one of {LAYOUTS} (or None for `datasets`).")
    parts = [part.strip() for part in split.split("+")]
    if layout == "folders":
        loaded = [read_image_folder(source, part, labelled=labelled) for part in parts]
    else:
        loaded = [read_split_json(source, part, with_domain=layout == "domain_split_json") for part in parts]
    return loaded[0] if len(loaded) == 1 else datasets.concatenate_datasets(loaded)


def _cached(key: tuple, build):
    with _LAYOUT_LOCK:
        if key in _LAYOUT_CACHE:
            return _LAYOUT_CACHE[key]
    value = build()
    with _LAYOUT_LOCK:
        if len(_LAYOUT_CACHE) >= _LAYOUT_CACHE_SIZE:
            _LAYOUT_CACHE.pop(next(iter(_LAYOUT_CACHE)))
        _LAYOUT_CACHE[key] = value
    return value


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: str) -> list[str]:
    """Every image file below ``folder`` (absolute paths), in sorted order; hidden entries skipped."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(current, f) for f in sorted(files) if _is_image(f))
    return found


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def resolve_split_folder(root: str | Path, split: str = WHOLE_FOLDER) -> Path:
    """The folder a ``"folders"`` source reads for ``split``.

    ``split`` is looked up as ``root/split`` then ``root/images/split`` (CoOp keeps ImageNet under
    ``imagenet/images/{train,val}``); ``"."`` is ``root`` itself. A folder whose only sub-folder is
    ``images/`` (CoOp's ``imagenet-sketch/images/``, MCM's ``iNaturalist/images/``) is entered.

    Raises:
        FileNotFoundError: naming every place that was looked at.
    """
    root = Path(root).expanduser()
    if split in (WHOLE_FOLDER, ""):
        candidates = [root]
    else:
        candidates = [root / split, root / "images" / split]
    for folder in candidates:
        if folder.is_dir():
            subs = _subfolders(folder)
            if subs == ["images"]:
                folder = folder / "images"
            return folder
    where = " or ".join(repr(str(c)) for c in candidates)
    raise FileNotFoundError(
        f"Image folder {where} does not exist. Expected a class-per-folder tree "
        "(<folder>/<class>/<image>, the torchvision ImageFolder layout"
        + (f", with the {split!r} split as a sub-folder" if split not in (WHOLE_FOLDER, "") else "")
        + ")."
    )


def read_image_folder(
    root: str | Path, split: str = WHOLE_FOLDER, *, labelled: bool = True
) -> datasets.Dataset:
    """A class-per-folder image tree as a dataset (paths only; images decode on access).

    Args:
        root: the dataset folder.
        split: sub-folder to read (see :func:`resolve_split_folder`); ``"."`` reads ``root``.
        labelled: label each image by its top-level folder (sorted folder names become the
            ``ClassLabel`` names: wnids for ImageNet, ``0``..``999`` for ImageNet-V2); False reads
            every image below the folder at any depth, without labels.

    Returns:
        Columns ``image`` (``datasets.Image``), ``id`` (path relative to ``root``) and, when
        labelled, ``label``.

    Raises:
        FileNotFoundError: the folder is missing or holds no image.
    """
    root = Path(root).expanduser()
    folder = resolve_split_folder(root, split)
    key = ("folders", str(folder.resolve()), labelled, folder.stat().st_mtime_ns)
    return _cached(key, lambda: _scan_folder(root, folder, labelled))


def _scan_folder(root: Path, folder: Path, labelled: bool) -> datasets.Dataset:
    columns: dict[str, list] = {"image": [], "id": []}
    features = {"image": datasets.Image(), "id": datasets.Value("string")}
    if labelled:
        classes = _subfolders(folder)
        codes: list[int] = []
        for code, name in enumerate(classes):
            paths = _walk_images(str(folder / name))
            columns["image"].extend(paths)
            codes.extend([code] * len(paths))
        columns["label"] = codes
        features["label"] = datasets.ClassLabel(names=classes or ["none"])
    else:
        columns["image"] = _walk_images(str(folder))
    if not columns["image"]:
        layout = "<class>/<image> sub-folders" if labelled else "image files at any depth"
        raise FileNotFoundError(
            f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {str(folder)!r}; expected {layout}."
        )
    # `folder` is `root` or below it, so ids are paths relative to the source folder
    columns["id"] = [Path(os.path.relpath(p, str(root))).as_posix() for p in columns["image"]]
    logger.info("Read %d images from %s", len(columns["image"]), folder)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def read_split_json(path: str | Path, split: str, *, with_domain: bool = False) -> datasets.Dataset:
    """One split of a CoOp-format split file (``split_zhou_*.json``, CRoFT's ``test_on_<domain>.json``).

    The file is ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``
    (CoOp's ``OxfordPets.save_split`` format, which the official CRoFT PACS/VLCS readers also use).
    ``relpath`` is relative to the image folder next to the file: the file's own folder or one of
    its sub-folders (``images/``, ``jpg/``, ``101_ObjectCategories/``), found by looking for the
    first listed image.

    Args:
        path: the JSON file.
        split: one key of the file.
        with_domain: add a ``domain`` column: the folder two levels above each image
            (``<domain>/<class>/<image>``, the PACS/VLCS layout; ASSUMPTION: CRoFT's JSON files list
            paths that way, relative to ``PACS/images`` / ``VLCS/images``; the official reader found
            the domain by substring).

    Returns:
        Columns ``image``, ``label`` (``ClassLabel``; names from the file, in label order), ``id``
        (the listed relative path) and optionally ``domain``.

    Raises:
        FileNotFoundError: the file, or images it lists, are missing.
        ValueError: the file is not in this format or lacks the split.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Split file {str(path)!r} does not exist. Expected a CoOp-format JSON "
            '({"train"|"val"|"test": [[relative image path, label, class name], ...]}) next to its '
            "image folder."
        )
    key = ("split_json", str(path.resolve()), split, with_domain, path.stat().st_mtime_ns)
    return _cached(key, lambda: _parse_split_json(path, split, with_domain))


def _parse_split_json(path: Path, split: str, with_domain: bool) -> datasets.Dataset:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"Split file {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(
            f"Split file {str(path)!r} must map split names to lists of [path, label, class name]."
        )
    if split not in data:
        raise ValueError(f"Split {split!r} not found in {str(path)!r}; its splits are {sorted(data)}.")
    names: dict[int, str] = {}
    for key, items in data.items():
        for item in items:
            if not (isinstance(item, (list, tuple)) and len(item) == 3):
                raise ValueError(
                    f"Split file {str(path)!r}, split {key!r}: entry {item!r} is not "
                    "[path, label, class name]."
                )
            label, classname = int(item[1]), str(item[2])
            if names.setdefault(label, classname) != classname:
                raise ValueError(
                    f"Split file {str(path)!r}: label {label} is both {names[label]!r} and {classname!r}."
                )
    items = data[split]
    if not items:
        raise ValueError(f"Split {split!r} of {str(path)!r} is empty.")
    rel = [str(item[0]).replace("\\", "/") for item in items]
    image_root = _find_image_root(path, rel)
    paths = [str(image_root / r) for r in rel]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} images listed in split {split!r} of {str(path)!r} are "
            f"missing under {str(image_root)!r}, e.g. {missing[:3]}."
        )
    n_classes = max(names) + 1
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=[names.get(i, f"class_{i}") for i in range(n_classes)]),
        "id": datasets.Value("string"),
    }
    columns: dict[str, list] = {"image": paths, "label": [int(item[1]) for item in items], "id": rel}
    if with_domain:
        columns["domain"] = [_domain_of(r) for r in rel]
        features["domain"] = datasets.Value("string")
    logger.info("Read %d images of split %r from %s", len(paths), split, path)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _domain_of(relpath: str) -> str:
    parts = Path(relpath).parts
    return parts[-3] if len(parts) >= 3 else parts[0]


def _find_image_root(path: Path, relpaths: Sequence[str]) -> Path:
    folder = path.parent
    preferred = [folder / "images", folder / "jpg", folder / "101_ObjectCategories", folder]
    others = [folder / name for name in _subfolders(folder) if folder / name not in preferred]
    candidates = preferred + others
    probe = relpaths[0]
    for root in candidates:
        if (root / probe).is_file():
            return root
    raise FileNotFoundError(
        f"Cannot find the image folder of {str(path)!r}: its first image {probe!r} is in none of "
        f"{[str(c) for c in candidates[:6]]}. Put the images next to the split file "
        "(e.g. PACS/images/, caltech-101/101_ObjectCategories/, dtd/images/, oxford_flowers/jpg/)."
    )


# --------------------------------------------------------------------------------------------------
# Few-shot sampling
# --------------------------------------------------------------------------------------------------


def few_shot_indices(
    labels: Sequence | np.ndarray,
    shots: int | None,
    seed: int,
    *,
    domains: Sequence | np.ndarray | None = None,
    pool: Sequence[int] | np.ndarray | None = None,
    per_domain: str = "split",
    warn: bool = True,
) -> list[int]:
    """Seeded K-shot sampling per class, or per (class, domain), without replacement.

    Each group gets its own ``numpy.random.Generator`` seeded with ``(seed, crc32(group key))``, so
    one group's draw does not depend on which other groups exist. A group with fewer items than
    requested gives all of them, with a warning.

    Args:
        labels: per-row class (ints or strings), shape ``[N]``.
        shots: images per class; None or -1 keeps every candidate. With ``domains`` the budget is
            split evenly: ``shots // n_domains`` per (class, domain), as CROFT_SPEC §5 item 12 fixes
            the official PACS sampler.
        seed: non-negative integer seed.
        domains: per-row domain, shape ``[N]``, or None to sample per class only.
        pool: candidate row positions (into ``labels``); default all rows.
        per_domain: with ``domains``, ``"split"`` draws ``shots // n_domains`` per (class, domain)
            (K images per class in all); ``"each"`` draws ``shots`` per (class, domain).
        warn: log a warning for groups with fewer items than requested (off for caps, where
            a small class is expected).

    Returns:
        Sorted row positions (into ``labels``).
    """
    if per_domain not in ("split", "each"):
        raise ValueError(f"per_domain must be 'split' or 'each'; got {per_domain!r}.")
    labels = np.asarray(labels)
    candidates = np.arange(len(labels)) if pool is None else np.unique(np.asarray(pool, dtype=np.int64))
    if shots is None or shots == -1:
        return candidates.tolist()
    if shots < 1:
        raise ValueError(f"shots must be >= 1, or None / -1 for all images; got {shots}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}.")
    if len(candidates) == 0:
        return []
    keys = [labels[candidates]]
    per_group = shots
    if domains is not None:
        domain_of = np.asarray(domains)[candidates]
        n_domains = len(np.unique(domain_of))
        per_group = shots // n_domains if per_domain == "split" else shots
        if per_group == 0:
            raise ValueError(
                f"shots={shots} is fewer than the {n_domains} domains, so shots // n_domains = 0 "
                "per (class, domain). Use shots >= the number of domains, or sample per class."
            )
        if per_domain == "split" and shots % n_domains:
            logger.info(
                "%d shots over %d domains: %d per (class, domain), %d per class in all",
                shots, n_domains, per_group, per_group * n_domains,
            )
        keys.append(domain_of)
    chosen: list[np.ndarray] = []
    for key, members in _groups(keys, candidates):
        if len(members) <= per_group:
            if len(members) < per_group and warn:
                logger.warning(
                    "Group %s has %d images, fewer than the %d requested; taking all of them",
                    key, len(members), per_group,
                )
            chosen.append(members)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
        chosen.append(rng.choice(members, size=per_group, replace=False))
    return np.sort(np.concatenate(chosen)).tolist()


def official_balanced_indices(
    labels: Sequence | np.ndarray,
    domains: Sequence | np.ndarray,
    shots: int,
    seed: int,
    *,
    pool: Sequence[int] | np.ndarray | None = None,
) -> list[int]:
    """The official ``generate_fewshot_dataset_balance`` draw, bug included (parity runs only).

    For every class the official loop split the *whole* set by domain and drew ``shots // n_domains``
    images per domain, ignoring the class (CROFT_SPEC §5 item 12): PACS "16 shots" is
    7 classes x 3 domains x 5 = 105 images of any class, possibly with repeats. Reproduced here with a
    seeded draw per class iteration.

    Args:
        labels: per-row class, shape ``[N]`` (only the set of classes matters).
        domains: per-row domain, shape ``[N]``.
        shots: the official ``NUM_SHOTS``.
        seed: non-negative seed.
        pool: candidate row positions; default all rows.

    Returns:
        Sorted row positions, repeats kept (``n_classes * n_domains * (shots // n_domains)`` of them).
    """
    labels, domains = np.asarray(labels), np.asarray(domains)
    candidates = np.arange(len(labels)) if pool is None else np.unique(np.asarray(pool, dtype=np.int64))
    if shots < 1 or seed < 0:
        raise ValueError(f"shots must be >= 1 and seed >= 0; got shots={shots}, seed={seed}.")
    domain_of = domains[candidates]
    unique_domains = sorted({_plain(d) for d in domain_of.tolist()}, key=str)
    per_domain = shots // max(len(unique_domains), 1)
    chosen = []
    for label in sorted({_plain(v) for v in labels[candidates].tolist()}, key=str):
        rng = np.random.default_rng([seed, zlib.crc32(repr(label).encode())])
        for domain in unique_domains:
            members = candidates[domain_of == domain]
            take = min(per_domain, len(members))
            chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).tolist() if chosen else []


def _groups(keys: list[np.ndarray], candidates: np.ndarray):
    """Yield ``(key tuple, member positions)`` per distinct key, in sorted key order."""
    codes = np.zeros(len(candidates), dtype=np.int64)
    uniques = []
    for values in keys:
        unique, inverse = np.unique(values, return_inverse=True)
        codes = codes * len(unique) + inverse
        uniques.append(unique)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        first = order[start]
        key = tuple(_plain(values[first]) for values in keys)
        yield key, candidates[order[start:end]]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
