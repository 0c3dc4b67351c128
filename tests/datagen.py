"""Tiny generated image datasets and a benchmark over them, for fast offline tests.

Each class has its own colour (from a hash of its name, so it does not depend on the order of
``classes``); each image is that colour plus noise. Domains after the first are a covariate shift:
the image is blended towards grey. Everything here runs in well under a second.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import PIL.Image

from croft_core.data.benchmarks import Benchmark, SplitSpec

CLASSES = ("circle", "square", "triangle", "star")
DOMAINS = ("photo", "sketch")
SPLITS = ("train", "validation", "test")
TINY_ID_CLASSES = ("circle", "square", "triangle")
TINY_OOD_CLASSES = ("star",)


def class_colour(name: str) -> np.ndarray:
    """A fixed RGB colour for a class name, shape [3], uint8."""
    return np.random.default_rng(zlib.crc32(name.encode())).integers(0, 256, size=3).astype(np.uint8)


def make_image(name: str, domain_index: int, rng: np.random.Generator, size: int = 16) -> PIL.Image.Image:
    """One ``size``x``size`` RGB image of class ``name`` in domain number ``domain_index``."""
    pixels = class_colour(name).astype(np.float32) + rng.normal(0, 12, size=(size, size, 3))
    if domain_index > 0:  # covariate shift: wash the colour out towards grey
        grey = pixels.mean(axis=-1, keepdims=True)
        pixels = 0.4 * pixels + 0.6 * grey
    return PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _rows(classes: Sequence[str], domains: Sequence[str], n: int, size: int, rng: np.random.Generator):
    """Yield ``(class, domain, image)`` with ``n`` images per (class, domain)."""
    for name in classes:
        for d, domain in enumerate(domains):
            for _ in range(n):
                yield name, domain, make_image(name, d, rng, size)


def make_tiny_imagefolder(
    root: str | Path,
    classes: Sequence[str] = CLASSES,
    domains: Sequence[str] = DOMAINS,
    n: int = 6,
    size: int = 16,
    seed: int = 0,
    *,
    splits: Sequence[str] | None = ("train", "test"),
    metadata: bool = True,
) -> Path:
    """Write an image folder ``root/<split>/<class>/<domain>_<i>.png``.

    Args:
        root: folder to create.
        classes: class names (folder names).
        domains: domain names (file-name prefixes, and a ``domain`` column with ``metadata``).
        n: images per (split, class, domain).
        size: image side in pixels.
        seed: noise seed.
        splits: split folders; None writes ``root/<class>/...`` with no split level.
        metadata: write ``metadata.csv`` (``file_name,label,domain``) in each split folder, so that
            ``datasets`` adds string ``label`` and ``domain`` columns; without it the label is the
            folder name (a ClassLabel) and there is no domain column.

    Returns:
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits or (None,):
        base = root / split if split else root
        records = []
        for i, (name, domain, image) in enumerate(_rows(classes, domains, n, size, rng)):
            relative = f"{name}/{domain}_{i:03d}.png"
            (base / name).mkdir(parents=True, exist_ok=True)
            image.save(base / relative)
            records.append((relative, name, domain))
        if metadata:
            with open(base / "metadata.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file_name", "label", "domain"])
                writer.writerows(records)
    return root


def make_tiny_dataset_dict(
    root: str | Path,
    classes: Sequence[str] = CLASSES,
    domains: Sequence[str] = DOMAINS,
    n: int = 6,
    size: int = 16,
    seed: int = 0,
    *,
    splits: Sequence[str] = SPLITS,
    with_ids: bool = False,
) -> Path:
    """Save a ``DatasetDict`` (``image``, ``label`` ClassLabel in ``classes`` order, ``domain``).

    Args:
        root: folder for ``save_to_disk``.
        classes: class names; their order is the ClassLabel order.
        domains: domain names.
        n: images per (split, class, domain).
        size: image side in pixels.
        seed: noise seed.
        splits: split names.
        with_ids: add a unique string ``id`` column (``"<split>-<i>"``).

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(classes)),
        "domain": datasets.Value("string"),
    })
    if with_ids:
        features["id"] = datasets.Value("string")
    parts = {}
    for split in splits:
        rows = list(_rows(classes, domains, n, size, rng))
        columns = {
            "image": [image for _, _, image in rows],
            "label": [classes.index(name) for name, _, _ in rows],
            "domain": [domain for _, domain, _ in rows],
        }
        if with_ids:
            columns["id"] = [f"{split}-{i}" for i in range(len(rows))]
        parts[split] = datasets.Dataset.from_dict(columns, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return Path(root)


def tiny_benchmark(root: str | Path, *, val_shots: int | None = 2, **dataset_kwargs) -> Benchmark:
    """A benchmark over a tiny generated ``DatasetDict`` saved under ``root/tiny``.

    ID classes circle/square/triangle in domain "photo"; covariate set = the "sketch" domain of the
    test split; semantic set = the "star" class of the test split (both domains).

    Args:
        root: folder to write the data into (reused when it already exists).
        val_shots: val images per class.
        **dataset_kwargs: passed to :func:`make_tiny_dataset_dict`.

    Returns:
        The :class:`Benchmark`.
    """
    path = Path(root) / "tiny"
    if not path.exists():
        make_tiny_dataset_dict(path, **dataset_kwargs)
    source = str(path)

    def in_domain(name: str, split: str, domain: str = "photo") -> SplitSpec:
        return SplitSpec(name=name, source=source, split=split, domain_column="domain", domains=(domain,))

    return Benchmark(
        name="tiny",
        classnames=TINY_ID_CLASSES,
        train=in_domain("photo", "train"),
        val=in_domain("photo-val", "validation"),
        id_test=in_domain("photo", "test"),
        covariate=(in_domain("sketch", "test", "sketch"),),
        semantic=(SplitSpec(name="unseen-shapes", source=source, split="test", classes=TINY_OOD_CLASSES),),
        val_shots=val_shots,
        description="Tiny generated shapes-by-colour benchmark for tests.",
    )
