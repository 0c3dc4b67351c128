"""Datasets through `datasets`, and seeded few-shot sampling.

Every split CRoFT Lab reads is described by a *source* string and column names, never by a Python
class per dataset (STYLE.md convention 11, Part 3 item 3). A source is one of:

- a local folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- ``imagefolder:PATH``, or a local folder of data files (``PATH/<class>/<image>``, optionally under
  split folders ``PATH/train|validation|test/``, or with a ``metadata.csv`` carrying extra columns
  such as ``domain``), loaded with the generic ``datasets`` builders;
- a Hugging Face Hub dataset id (``org/name``, or ``hf://datasets/org/name``).

Class names come from the label column's ``ClassLabel`` (a string label column, as an image folder
with a ``metadata.csv`` produces, is encoded to a ``ClassLabel`` with sorted names).

:func:`few_shot_indices` is the seeded K-shot sampler. With domains it draws ``K // n_domains`` images
per (class, domain): CROFT_SPEC §5 item 12, the fix of the official
``generate_fewshot_dataset_balance``, which drew 105 PACS images ignoring class.
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.exceptions import DatasetNotFoundError

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

    Returns:
        ``(dataset, classnames)``; the label column (if any) is a ``ClassLabel`` and
        ``classnames == dataset.features[label_column].names``.

    Raises:
        FileNotFoundError: a local source does not exist or holds no data.
        ValueError: unknown split, missing column, or labels without class names.
        DatasetUnavailableError: a Hub id cannot be reached or does not exist.
    """
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
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


def _fail_fast_if_hub_unresolvable(repo_id: str) -> None:
    """Raise at once when the Hub's host name does not resolve.

    Without this, huggingface_hub retries for about 20 s before giving up on a machine with no
    network. Skipped in offline mode (``datasets`` then fails at once or uses its cache) and behind
    a proxy (the proxy, not this machine, resolves the name).
    """
    if _hub_offline() or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        raise DatasetUnavailableError(_unreachable_message(repo_id, e)) from e


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
# Few-shot sampling
# --------------------------------------------------------------------------------------------------


def few_shot_indices(
    labels: Sequence | np.ndarray,
    shots: int | None,
    seed: int,
    *,
    domains: Sequence | np.ndarray | None = None,
    pool: Sequence[int] | np.ndarray | None = None,
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

    Returns:
        Sorted row positions (into ``labels``).
    """
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
        per_group = shots // n_domains
        if per_group == 0:
            raise ValueError(
                f"shots={shots} is fewer than the {n_domains} domains, so shots // n_domains = 0 "
                "per (class, domain). Use shots >= the number of domains, or sample per class."
            )
        if shots % n_domains:
            logger.info(
                "%d shots over %d domains: %d per (class, domain), %d per class in all",
                shots, n_domains, per_group, per_group * n_domains,
            )
        keys.append(domain_of)
    chosen: list[np.ndarray] = []
    for key, members in _groups(keys, candidates):
        if len(members) <= per_group:
            if len(members) < per_group:
                logger.warning(
                    "Group %s has %d images, fewer than the %d requested; taking all of them",
                    key, len(members), per_group,
                )
            chosen.append(members)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
        chosen.append(rng.choice(members, size=per_group, replace=False))
    return np.sort(np.concatenate(chosen)).tolist()


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
