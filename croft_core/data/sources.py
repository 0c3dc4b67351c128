"""Dataset sources: one split of a local folder or a Hub dataset, with its class names.

Every split CRoFT Lab reads is described by a *source* string and column names, never by a Python
class per dataset (STYLE.md convention 11, Part 3 item 3). A source is one of:

- a local folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- ``imagefolder:PATH``, or a local folder of data files (``PATH/<class>/<image>``, optionally under
  split folders ``PATH/train|validation|test/``, or with a ``metadata.csv`` carrying extra columns
  such as ``domain``), loaded with the generic ``datasets`` builders;
- a Hugging Face Hub dataset id (``org/name``, or ``hf://datasets/org/name``);
- with ``layout=``, a local folder in the layout the official code and its users already have
  (:data:`croft_core.data.layouts.LAYOUTS`: image-folder trees and CoOp / CRoFT split JSON files).

Class names come from the label column's ``ClassLabel`` (a string label column, as an image folder
with a ``metadata.csv`` produces, is encoded to a ``ClassLabel`` with sorted names).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.exceptions import DatasetNotFoundError

from croft_core.errors import HubError
from croft_core.data.layouts import LAYOUTS, load_layout
from croft_core.offline import hub_offline, hub_unreachable_reason

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


class DatasetUnavailableError(HubError):
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
    revision: str | None = None,
    token: str | bool | None = None,
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
            :func:`croft_core.data.layouts.read_image_folder` and :func:`croft_core.data.layouts.read_split_json`.
        revision: Hub sources only: the commit sha or named ref to read (default: the main branch).
        token: Hub sources only: the ``token`` of ``datasets.load_dataset`` (``None``: the
            logged-in one or ``HF_TOKEN``; ``False``: none).

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
        ds = _load_hub(location, split, config_name, revision, token)
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


def _load_hub(repo_id: str, split: str, config_name: str | None, revision: str | None,
              token: str | bool | None = None) -> datasets.Dataset:
    _fail_fast_if_hub_unresolvable(repo_id)
    try:  # hf://datasets/: the Hub only (a plain ORG/NAME also opens a local folder of that name)
        return datasets.load_dataset(HUB_PREFIX + repo_id, config_name, split=split, revision=revision,
                                     token=token)
    except _NETWORK_ERRORS as e:
        raise DatasetUnavailableError(_unreachable_message(repo_id, e)) from e
    except DatasetNotFoundError as e:
        raise DatasetUnavailableError(_not_accessible_message(repo_id, revision, e)) from e
    except ValueError as e:
        if "Unknown split" in str(e):
            raise ValueError(f"Hub dataset {repo_id!r}: {e} Pass one of them as `split`.") from e
        raise


def _not_accessible_message(repo_id: str, revision: str | None, error: BaseException) -> str:
    at = f" at revision {revision!r}" if revision else ""
    return (
        f"Hub dataset {repo_id!r}{at} does not exist or cannot be accessed ({error}). If it is gated "
        f"(ILSVRC/imagenet-1k is), accept its terms while logged in at https://huggingface.co/datasets/"
        f"{repo_id}, then set HF_TOKEN to a read token of that account (or run `hf auth login`). "
        "Otherwise check the id and revision (`croft check-sources`), or use a local folder / "
        "`save_to_disk` copy."
    )


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
