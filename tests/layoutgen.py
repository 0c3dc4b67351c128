"""Fabricated miniature copies of the real benchmark data layouts, for offline end-to-end tests.

Each writer creates the folder tree, class-name files and split JSON files exactly as the official
code and its users have them (CoOp's DATASETS.md for ImageNet and the open sets, CRoFT's README for
PACS/VLCS, MCM's for the four OOD sets), with a few generated 8x8 images per class instead of the
real photos. Images of one class share a colour (from a hash of the class name, as in
``datagen.py``), so tiny models can tell classes apart.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import PIL.Image

from croft_core.data.benchmarks import imagenet_classes, setup1_class_split
from croft_core.data.benchmarks.hub_sources import CALTECH101_CLASSES

SIZE = 8
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
VLCS_CLASSES = ("bird", "car", "chair", "dog", "person")
VLCS_DOMAINS = ("CALTECH", "LABELME", "PASCAL", "SUN")
# CoOp's 100 Caltech-101 classes as split_zhou_Caltech101.json spells them: the raw folders without
# BACKGROUND_Google and Faces_easy, with airplanes -> airplane, Faces -> face, Leopards -> leopard,
# Motorbikes -> motorbike. The official keep-lists miss those four renamed classes.
_COOP_RENAMES = {"airplanes": "airplane", "faces": "face", "leopards": "leopard", "motorbikes": "motorbike"}
CALTECH_CLASSES = tuple(_COOP_RENAMES.get(c, c) for c in CALTECH101_CLASSES if c != "faces_easy")
DTD_CLASSES = ("banded", "braided", "bubbly")
FOOD_CLASSES = ("apple_pie", "baby_back_ribs", "baklava")
FLOWER_CLASSES = ("pink primrose", "hard-leaved pocket orchid", "canterbury bells")
FOUR_OOD = ("iNaturalist", "SUN", "Places")


def write_image(path: Path, key: str, index: int = 0, *, fmt: str | None = None) -> Path:
    """One ``SIZE`` x ``SIZE`` image of class ``key`` (its colour plus seeded noise)."""
    rng = np.random.default_rng([zlib.crc32(key.encode()), index])
    colour = np.random.default_rng(zlib.crc32(key.encode())).integers(0, 256, size=3)
    pixels = np.clip(colour + rng.normal(0, 10, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    PIL.Image.fromarray(pixels).save(path, format=fmt or ("JPEG" if jpeg else "PNG"))
    return path


def _class_folder(root: Path, classes: Iterable[str], n: int, ext: str = ".JPEG", key=str,
                  offset: int = 0) -> None:
    for name in classes:
        for i in range(n):
            write_image(root / name / f"{name}_{i:04d}{ext}", key(name), offset + i)


# --------------------------------------------------------------------------------------------------
# ImageNet family (CoOp layout)
# --------------------------------------------------------------------------------------------------


def imagenet_subset(seed: int = 1, n_id: int = 6, n_ood: int = 6) -> list[int]:
    """ImageNet class indices that get images: the first ``n_id`` ID and ``n_ood`` held-out classes
    of Setup-I's ``seed`` draw (every other class has a class-name line but no images)."""
    id_idx, ood_idx = setup1_class_split(seed)
    return sorted(id_idx[:n_id] + ood_idx[:n_ood])


def make_imagenet_coop(root: str | Path, classes: Sequence[int], *, n_train: int = 3, n_val: int = 2,
                       n_shifted: int = 1, adversarial: Sequence[int] | None = None,
                       rendition: Sequence[int] | None = None, flat: bool = False) -> Path:
    """CoOp's ImageNet layout under ``root`` for the class indices ``classes``.

    ``imagenet/classnames.txt`` (all 1000 ``"<wnid> <name>"`` lines), ``imagenet/images/{train,val}/
    <wnid>/``, ``imagenetv2/imagenetv2-matched-frequency-format-val/<index>/``,
    ``imagenet-sketch/images/<wnid>/``, ``imagenet-adversarial/imagenet-a/<wnid>/`` and
    ``imagenet-rendition/imagenet-r/<wnid>/`` (-A/-R over ``adversarial`` / ``rendition``, default
    every other class of ``classes``). With ``flat``: ``imagenet/{train,val}``, ``imagenetv2/<index>``,
    ``imagenet-sketch/<wnid>``, ``imagenet-a``, ``imagenet-r`` and ``root/classnames.txt``.
    """
    root = Path(root)
    names, wnids = imagenet_classes()
    listing = "".join(f"{w} {n}\n" for w, n in zip(wnids, names))
    (root / "imagenet").mkdir(parents=True, exist_ok=True)
    (root / ("classnames.txt" if flat else "imagenet/classnames.txt")).write_text(listing)
    images = root / "imagenet" if flat else root / "imagenet" / "images"
    key = {wnids[i]: names[i] for i in range(len(names))}.get
    chosen = [wnids[i] for i in classes]
    _class_folder(images / "train", chosen, n_train, key=key)
    _class_folder(images / "val", chosen, n_val, key=key, offset=50)
    v2 = root / "imagenetv2" if flat else root / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for i in classes:
        for j in range(n_shifted):
            write_image(v2 / str(i) / f"v2_{j}.jpeg", names[i], 100 + j)
    sketch = root / "imagenet-sketch" if flat else root / "imagenet-sketch" / "images"
    _class_folder(sketch, chosen, n_shifted, ext=".JPEG", key=key, offset=200)
    adversarial = list(classes[::2]) if adversarial is None else adversarial
    rendition = list(classes[1::2]) if rendition is None else rendition
    a_dir = root / ("imagenet-a" if flat else "imagenet-adversarial/imagenet-a")
    r_dir = root / ("imagenet-r" if flat else "imagenet-rendition/imagenet-r")
    _class_folder(a_dir, [wnids[i] for i in adversarial], n_shifted, ext=".jpg", key=key)
    _class_folder(r_dir, [wnids[i] for i in rendition], n_shifted, ext=".jpg", key=key)
    if not flat:  # CoOp copies classnames.txt next to each variant
        for folder in ("imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"):
            (root / folder / "classnames.txt").write_text(listing)
    return root


def make_four_ood(root: str | Path, n: int = 3) -> Path:
    """MCM's OOD folders: ``iNaturalist/images/*.jpg``, ``SUN/images``, ``Places/images``, and
    ``dtd/images/<class>/`` (Textures), ``n`` images each (per class for DTD)."""
    root = Path(root)
    for name in FOUR_OOD:
        for i in range(n):
            write_image(root / name / "images" / f"{name.lower()}_{i:05d}.jpg", name, i)
    _class_folder(root / "dtd" / "images", DTD_CLASSES[:1], n, ext=".jpg")
    return root


# --------------------------------------------------------------------------------------------------
# Setup-II: PACS / VLCS (CRoFT README layout) and the CoOp open sets
# --------------------------------------------------------------------------------------------------


def make_domain_dataset(root: str | Path, name: str = "PACS", classes: Sequence[str] = PACS_CLASSES,
                        domains: Sequence[str] = PACS_DOMAINS, n: int = 3, n_val: int = 1) -> Path:
    """``root/<name>/images/<domain>/<class>/<image>`` and one ``test_on_<domain>.json`` per domain.

    Each JSON is CoOp's split format with paths relative to ``images/``: ``test`` = every image of
    the held-out domain; ``val`` = the first ``n_val`` images per (class, source domain); ``train``
    = the rest of the source-domain images. File names use the lower-case domain
    (``test_on_caltech.json``), as CRoFT's README lists them.
    """
    base = Path(root) / name
    items: dict[str, list] = {d: [] for d in domains}
    for d in domains:
        for label, cls in enumerate(classes):
            for i in range(n):
                rel = f"{d}/{cls}/pic_{i:03d}.jpg"
                write_image(base / "images" / rel, cls, zlib.crc32(rel.encode()) % 1000)
                items[d].append((i, [rel, label, cls]))
    for held_out in domains:
        split = {"train": [], "val": [], "test": [item for _, item in items[held_out]]}
        for d in domains:
            if d == held_out:
                continue
            for i, item in items[d]:
                split["val" if i < n_val else "train"].append(item)
        (base / f"test_on_{held_out.lower()}.json").write_text(json.dumps(split))
    return base


def _coop_split(folder: Path, image_dir: str, json_name: str, classes: Sequence[str], n: int,
                flat_names: bool = False) -> Path:
    """A CoOp dataset folder: images under ``image_dir`` and ``split_zhou_*.json`` (1 train, 1 val,
    the rest test per class)."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    counter = 0
    for label, cls in enumerate(classes):
        for i in range(n):
            counter += 1
            rel = f"image_{counter:05d}.jpg" if flat_names else f"{cls}/{cls}_{i:04d}.jpg"
            write_image(folder / image_dir / rel, cls, i)
            split["train" if i == 0 else "val" if i == 1 else "test"].append([rel, label, cls])
    path = folder / json_name
    path.write_text(json.dumps(split))
    return path


def make_open_sets(root: str | Path, n: int = 3) -> Path:
    """CoOp's ``caltech-101/``, ``dtd/``, ``food-101/`` and ``oxford_flowers/`` (flat ``jpg/`` files)."""
    root = Path(root)
    _coop_split(root / "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                CALTECH_CLASSES, n)
    _coop_split(root / "dtd", "images", "split_zhou_DescribableTextures.json", DTD_CLASSES, n)
    _coop_split(root / "food-101", "images", "split_zhou_Food101.json", FOOD_CLASSES, n)
    _coop_split(root / "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", FLOWER_CLASSES, n,
                flat_names=True)
    (root / "oxford_flowers" / "cat_to_name.json").write_text(
        json.dumps({str(i + 1): c for i, c in enumerate(FLOWER_CLASSES)}))
    return root
