"""Local folders in the layouts of the official code: image-folder trees and CoOp split JSON files.

:data:`LAYOUTS`: ``"folders"`` (torchvision ``ImageFolder`` trees: ImageNet, ImageNet-V2/-Sketch/-A/-R,
the MCM OOD subsets), ``"split_json"`` (CoOp's ``split_zhou_*.json``) and ``"domain_split_json"`` (the
``test_on_<domain>.json`` files of CRoFT's PACS/VLCS, same format plus a domain read from each path).
They are read by a plain directory scan (no ``datasets`` cache is written next to the user's data)
and get an ``id`` column with each image's relative path, so manifests survive moving the data.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)

LAYOUTS = ("folders", "split_json", "domain_split_json")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
WHOLE_FOLDER = "."  # split name of a "folders" source that is read as a whole (no split sub-folder)

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
    """Every image file below ``folder`` (absolute paths), in sorted order; hidden entries skipped.

    Symbolic links inside ``folder`` are never followed (a link loop would walk forever, and a link
    could reach files outside the dataset); ``folder`` itself may be a link.
    """
    found = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(path for path in (os.path.join(current, f) for f in sorted(files) if _is_image(f))
                     if not os.path.islink(path))
    return found


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))


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
