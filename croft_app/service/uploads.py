"""Visitors' training images: a zip of class folders, or single images each given a label.

A zip from a stranger is checked from its central directory **before** one byte is extracted
(:func:`inspect_zip`), and the whole upload is refused, nothing kept, when any entry

- names a path outside the folder it is extracted into (absolute, a drive letter, ``..``);
- is a symbolic link, or encrypted;
- announces more than :attr:`UploadLimits.max_file_bytes`, or a compression ratio over
  :attr:`UploadLimits.max_ratio` (a zip bomb), or all entries together more than
  :attr:`UploadLimits.max_total_bytes`; or the zip holds more than :attr:`UploadLimits.max_entries`
  entries or more images than :attr:`UploadLimits.max_images`.

Files that are not images (by extension, or because they do not decode) are skipped and reported;
hidden files and ``__MACOSX`` folders are ignored. Extraction (:func:`extract_zip`) never uses the
names inside the zip: each image is written as ``<class index>/<n><ext>`` and its size is counted
while it streams, so a header that lies about sizes cannot fill the disk. The layout is ``imagefolder``:
``<class>/<image>`` (optionally below one common top folder), or ``train|validation|test/<class>/<image>``
when the data brings its own validation split.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from croft_core.errors import CroftError
from croft_core.data.images import ImageError, ImageLimits, load_image

__all__ = ["IMAGE_EXTENSIONS", "ImageItem", "UploadError", "UploadLimits", "UploadedImages",
           "extract_zip", "inspect_zip", "labelled_images"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test"}
_IGNORED_PARTS = ("__MACOSX",)
_CHUNK = 1 << 16
MAX_REPORTED = 20  # skipped files listed by name in messages


class UploadError(CroftError, ValueError):
    """An upload that cannot be used; the message says why and what to upload instead."""


@dataclass(frozen=True)
class UploadLimits:
    """Bounds on one training upload (safe defaults for a public server)."""

    max_zip_bytes: int = 200 * 2**20  # the zip file itself
    max_total_bytes: int = 500 * 2**20  # all entries, uncompressed (as announced and as counted)
    max_file_bytes: int = 25 * 2**20  # one image, uncompressed
    max_ratio: float = 100.0  # uncompressed / compressed size of one entry (images barely compress)
    max_entries: int = 10_000  # files and folders in the zip
    max_images: int = 2_000  # images per run
    max_classes: int = 100


@dataclass(frozen=True)
class ImageItem:
    """One usable training image."""

    path: str  # where it lies on the server (never shown to the visitor)
    label: int  # index into ``UploadedImages.classnames``
    split: str = "train"  # "train" | "val" (a zip's own validation folder) | "test"
    sha1: str = ""  # content hash: cache key of its features


@dataclass
class UploadedImages:
    """Checked images with their classes, and what was skipped (shown to the visitor)."""

    classnames: tuple[str, ...]
    items: list[ImageItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name in the upload, reason)
    root: Path | None = None  # the extraction folder (deleted by :meth:`cleanup`)

    def skipped_summary(self) -> str:
        """``"3 files skipped: a.txt (not an image), ..."`` or ``""``."""
        if not self.skipped:
            return ""
        shown = ", ".join(f"{n} ({r})" for n, r in self.skipped[:MAX_REPORTED])
        more = f", and {len(self.skipped) - MAX_REPORTED} more" if len(self.skipped) > MAX_REPORTED else ""
        return f"{len(self.skipped)} file(s) skipped: {shown}{more}"

    def cleanup(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class _Planned:
    info: zipfile.ZipInfo
    classname: str
    split: str


def _short(name: str, limit: int = 60) -> str:
    name = name.replace("\n", " ")
    return name if len(name) <= limit else "…" + name[-limit:]


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        return "a path outside the upload folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    if info.flag_bits & 0x1:
        return "an encrypted file"
    return None


def _check_sizes(info: zipfile.ZipInfo, limits: UploadLimits) -> None:
    what = _short(info.filename)
    if info.file_size > limits.max_file_bytes:
        raise UploadError(f"the zip is refused: {what!r} unpacks to {info.file_size / 2**20:.0f} MB, "
                          f"more than {limits.max_file_bytes // 2**20} MB per image")
    if info.file_size > 2**20 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise UploadError(f"the zip is refused: {what!r} is compressed more than "
                          f"{limits.max_ratio:.0f}x, as a zip bomb is; images barely compress")


def _class_of(parts: list[str]) -> tuple[str, str] | None:
    """``(split, class)`` of an entry's folder parts (after the common top folder), or None."""
    if len(parts) >= 3 and parts[0].lower() in SPLIT_FOLDERS:
        return SPLIT_FOLDERS[parts[0].lower()], parts[1]
    if len(parts) >= 2:
        return "train", parts[0]
    return None


def _strip_common_top(paths: list[list[str]]) -> list[list[str]]:
    """Drop one leading folder shared by every image (a zip of ``my-data/<class>/...``)."""
    while paths and all(len(p) >= 3 for p in paths) and len({p[0] for p in paths}) == 1 \
            and paths[0][0].lower() not in SPLIT_FOLDERS:
        paths = [p[1:] for p in paths]
    return paths


def inspect_zip(path: str | os.PathLike, limits: UploadLimits = UploadLimits()
                ) -> tuple[list[_Planned], list[tuple[str, str]], list[str]]:
    """Check a zip from its central directory, extracting nothing.

    Returns:
        ``(images, skipped, empty_classes)``: the image entries with their class and split, the
        skipped entries with the reason, and class folders holding no image.

    Raises:
        UploadError: not a zip, an unsafe entry, a size or count over ``limits``.
    """
    size = os.path.getsize(path)
    if size > limits.max_zip_bytes:
        raise UploadError(f"the zip is {size / 2**20:.0f} MB; upload at most {limits.max_zip_bytes // 2**20} MB")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise UploadError("the upload is not a readable zip file; zip one folder per class") from None
    if len(infos) > limits.max_entries:
        raise UploadError(f"the zip holds {len(infos):,} entries; at most {limits.max_entries:,} are accepted")
    total, images, skipped, folders = 0, [], [], set()
    for info in infos:
        reason = _unsafe_reason(info)
        if reason:
            raise UploadError(f"the zip is refused: {_short(info.filename)!r} is {reason}; zip plain "
                              f"files in class folders")
        parts = [p for p in info.filename.split("/") if p]
        if not parts or any(p.startswith(".") or p in _IGNORED_PARTS for p in parts):
            continue
        if info.is_dir():
            folders.add(tuple(parts))
            continue
        folders.update(tuple(parts[:i]) for i in range(1, len(parts)))
        _check_sizes(info, limits)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UploadError(f"the zip unpacks to more than {limits.max_total_bytes // 2**20} MB; "
                              f"upload fewer or smaller images")
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((_short(info.filename), "not an image"))
            continue
        images.append((info, parts))
    return _plan(images, skipped, folders, limits)


def _plan(images, skipped, folders, limits: UploadLimits):
    if len(images) > limits.max_images:
        raise UploadError(f"the zip holds {len(images):,} images; at most {limits.max_images:,} per "
                          f"training run")
    stripped = _strip_common_top([parts for _, parts in images])
    depth = len(images[0][1]) - len(stripped[0]) if images else 0
    planned = []
    for (info, _), parts in zip(images, stripped):
        where = _class_of(parts)
        if where is None:
            skipped.append((_short(info.filename), "not inside a class folder"))
            continue
        planned.append(_Planned(info, where[1], where[0]))
    used = {(p.split, p.classname) for p in planned}
    empty = sorted({f[depth] for f in folders if len(f) == depth + 1 and f[depth].lower() not in SPLIT_FOLDERS
                    and ("train", f[depth]) not in used})
    return planned, skipped, empty


def _copy_bounded(src, dst: Path, budget: int) -> tuple[int, str]:
    """Stream ``src`` into ``dst``; stop past ``budget`` bytes. Returns (bytes, sha1)."""
    digest, n = hashlib.sha1(), 0
    with open(dst, "wb") as out:
        while chunk := src.read(_CHUNK):
            n += len(chunk)
            if n > budget:
                raise UploadError("the zip is refused: an entry unpacks to more than its header "
                                  "announces or than the size limits allow")
            digest.update(chunk)
            out.write(chunk)
    return n, digest.hexdigest()


def _check_classes(classnames: Sequence[str], counts: dict[str, int], limits: UploadLimits,
                   what: str) -> None:
    if len(classnames) > limits.max_classes:
        raise UploadError(f"{what} has {len(classnames)} classes; at most {limits.max_classes} per run")
    if len(classnames) < 2:
        found = f"only the class {classnames[0]!r}" if classnames else "no class"
        raise UploadError(f"{what} has {found}; give at least two classes (one folder per class, "
                          f"each with images)")
    empty = [c for c in classnames if not counts.get(c)]
    if empty:
        raise UploadError(f"class(es) {[_short(c, 40) for c in empty[:10]]} of {what} have no usable "
                          f"image; add images or remove the folder(s)")


def _usable(path: Path, limits: ImageLimits) -> str | None:
    try:
        load_image(path, limits=limits)
    except ImageError as err:
        return str(err).split(";")[0][:80]
    return None


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> tuple[int, str]:
    """Stream one entry to ``target``; a damaged entry (its data does not match its header: a wrong
    size or CRC, a broken deflate stream) is an :class:`UploadError`, never a traceback."""
    try:
        with zf.open(info) as src:
            return _copy_bounded(src, target, budget)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        raise UploadError(f"the zip is refused: {_short(info.filename)!r} is damaged or does not match "
                          f"what the zip's header says about it ({type(err).__name__}); zip the class "
                          f"folders again") from None


def extract_zip(path: str | os.PathLike, dest: str | os.PathLike, limits: UploadLimits = UploadLimits(),
                image_limits: ImageLimits | None = None, check: Callable[[], None] = lambda: None
                ) -> UploadedImages:
    """Check (:func:`inspect_zip`), then extract the images of a zip of class folders into ``dest``.

    Every image is decoded once within ``image_limits``; those that do not decode are skipped and
    reported. ``check`` is called before each entry (it raises to stop: a Stop, a time cap). On any
    error ``dest`` is deleted: nothing is kept half-done.

    Raises:
        UploadError: see :func:`inspect_zip`; an entry whose data does not match its header; fewer
            than two classes, a class without a usable image, more than ``limits.max_classes`` classes.
    """
    planned, skipped, empty = inspect_zip(path, limits)
    image_limits = image_limits or ImageLimits.from_env()
    classnames = tuple(sorted({p.classname for p in planned if p.split == "train"} | set(empty)))
    dest = Path(dest)
    _check_classes(classnames, {c: 1 for c in {p.classname for p in planned}}, limits, "the zip")
    dest.mkdir(parents=True, exist_ok=False)
    try:
        items, counts, budget = [], {}, limits.max_total_bytes
        with zipfile.ZipFile(path) as zf:
            for k, p in enumerate(planned):
                check()
                if p.classname not in classnames:
                    skipped.append((_short(p.info.filename), "its class has no training folder"))
                    continue
                label = classnames.index(p.classname)
                target = dest / str(label) / f"{k:05d}{PurePosixPath(p.info.filename).suffix.lower()}"
                target.parent.mkdir(exist_ok=True)
                n, sha1 = _extract_one(zf, p.info, target, min(p.info.file_size, limits.max_file_bytes, budget))
                budget -= n
                bad = _usable(target, image_limits)
                if bad:
                    skipped.append((_short(p.info.filename), bad))
                    target.unlink()
                    continue
                items.append(ImageItem(str(target), label, p.split, sha1))
                if p.split == "train":
                    counts[p.classname] = counts.get(p.classname, 0) + 1
        _check_classes(classnames, counts, limits, "the zip")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    logger.info("upload: %d images in %d classes, %d skipped", len(items), len(classnames), len(skipped))
    return UploadedImages(classnames, items, skipped, dest)


def labelled_images(pairs: Sequence[tuple[str | os.PathLike, str]], limits: UploadLimits = UploadLimits(),
                    image_limits: ImageLimits | None = None, check: Callable[[], None] = lambda: None
                    ) -> UploadedImages:
    """Single uploaded images, each with a class name typed by the visitor.

    Args:
        pairs: ``(file path, label)``; the paths must already be confined to the upload folder.
        check: called before each image is decoded (it raises to stop: a Stop, a time cap).

    Raises:
        UploadError: an empty label, more than ``limits.max_images`` images, fewer than two classes,
            a class whose images are all unusable.
    """
    if len(pairs) > limits.max_images:
        raise UploadError(f"{len(pairs):,} images; at most {limits.max_images:,} per training run")
    image_limits = image_limits or ImageLimits.from_env()
    labels = [" ".join(str(label or "").split()) for _, label in pairs]
    if any(not label for label in labels):
        raise UploadError("every image needs a label (its class name)")
    if any(len(label) > 100 for label in labels):
        raise UploadError("class names have at most 100 characters")
    classnames = tuple(sorted(set(labels)))
    items, skipped, counts, seen = [], [], {}, {}
    for (path, _), label in zip(pairs, labels):
        check()
        if str(path) not in seen:  # a file named many times is decoded and hashed once
            bad = _usable(Path(path), image_limits)
            seen[str(path)] = (bad, None if bad else hashlib.sha1(Path(path).read_bytes()).hexdigest())
        bad, sha1 = seen[str(path)]
        if bad:
            skipped.append((_short(Path(path).name), bad))
            continue
        items.append(ImageItem(str(path), classnames.index(label), "train", sha1))
        counts[label] = counts.get(label, 0) + 1
    _check_classes(classnames, counts, limits, "the labelled images")
    return UploadedImages(classnames, items, skipped)
