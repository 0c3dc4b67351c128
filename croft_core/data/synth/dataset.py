"""Export the shapes world as a Hugging Face ``datasets`` dataset.

``build_shapes_dataset`` renders every class of :data:`~croft_core.data.synth.world.CLASSES`
in every domain of :data:`~croft_core.data.synth.world.DOMAINS` and writes a
:class:`datasets.DatasetDict` with the splits

* ``train``      -- the few-shot pool (default 40 images per (class, domain));
* ``validation`` -- default 10 per (class, domain);
* ``test``       -- default 30 per (class, domain).

The folder also holds ``shapes_world.json`` naming the world version (:func:`world_version`)
that rendered it, so a benchmark never reads images of another version of the world.
The test split also holds the far-OOD images: as many per non-shape kind
(:data:`~croft_core.data.synth.world.NONSHAPE_KINDS`: noise, blank canvases, stripes, ...) as per
(class, domain), labelled after the shape classes, domain ``"none"``, rendered from their own seed
stream. With the defaults that is 3,840 / 960 / 2,880 + 270 images of 64x64 px (about 45 s to
render on one CPU core, a few MB on disk), small enough for ``croft bench`` on a
CPU. Columns: ``image`` (``datasets.Image``), ``label`` (``ClassLabel`` over
``CLASSES`` then ``NONSHAPE_KINDS``), ``domain`` (``ClassLabel`` over ``DOMAINS`` then ``"none"``), ``caption`` (a
web-like caption, see :func:`~croft_core.data.synth.world.caption`) and ``id``.

Each image has its own random generator seeded from ``(seed, split, class,
domain, index)``, so the bytes do not depend on rendering order and the same
seed always gives the same dataset. The pretraining stream
(:mod:`croft_core.runs.pretrain`) uses a different seed namespace, so the
benchmark's images are never seen in pretraining.

Command line: ``croft render-shapes --out DIR [--seed 0]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import datasets
import numpy as np

from croft_core.seeds import DATASET_STREAM, NONSHAPE_STREAM
from croft_core.data.synth.world import (CLASSES, DOMAINS, NONSHAPE_KINDS, caption, nonshape_caption, random_colour,
                                         render, render_nonshape)

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test")

STAMP_NAME = "shapes_world.json"
"""File in a rendered folder naming the world version (and settings) that rendered it."""

DEFAULT_SIZES: dict[str, int] = {"train": 40, "validation": 10, "test": 30}
"""Default number of images per (class, domain) in each split."""

NO_DOMAIN = "none"
"""The ``domain`` of a non-shape image (it is drawn in no style)."""

NONSHAPE_SPLITS: tuple[str, ...] = ("test",)
"""Splits that hold non-shape images (as many per kind as the split has per (class, domain)): the
far-OOD set is a test set only, so nothing trains, selects or calibrates on it."""


def world_version() -> str:
    """Hash of the renderer's source (``world.py`` and this file): images change only with it."""
    here = Path(__file__).parent
    digest = hashlib.sha1()
    for name in ("world.py", "dataset.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:10]


def features() -> datasets.Features:
    """The column schema of the shapes dataset."""
    return datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=[*CLASSES, *NONSHAPE_KINDS]),
        "domain": datasets.ClassLabel(names=[*DOMAINS, NO_DOMAIN]),
        "caption": datasets.Value("string"),
        "id": datasets.Value("string"),
    })


def example_rng(seed: int, split: str, class_index: int, domain_index: int, index: int) -> np.random.Generator:
    """The generator of one dataset image, independent of rendering order."""
    entropy = [DATASET_STREAM, seed, SPLITS.index(split), class_index, domain_index, index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def nonshape_rng(seed: int, split: str, kind_index: int, index: int) -> np.random.Generator:
    """The generator of one non-shape image: its own stream, apart from every shape image's."""
    entropy = [NONSHAPE_STREAM, seed, SPLITS.index(split), kind_index, index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _add_nonshapes(columns: dict[str, list], split: str, n_per_kind: int, seed: int, size: int) -> None:
    """Append ``n_per_kind`` non-shape images of every kind (label after the shape classes)."""
    for k, kind in enumerate(NONSHAPE_KINDS):
        for i in range(n_per_kind):
            rng = nonshape_rng(seed, split, k, i)
            columns["image"].append(render_nonshape(kind, rng, size=size))
            columns["caption"].append(nonshape_caption(kind, rng))
            columns["label"].append(len(CLASSES) + k)
            columns["domain"].append(len(DOMAINS))
            columns["id"].append(f"{split}-{kind.replace(' ', '_')}-{NO_DOMAIN}-{i:04d}")


def build_split(split: str, n_per_class_domain: int, seed: int = 0, size: int = 64) -> datasets.Dataset:
    """Render one split: ``n_per_class_domain`` images for every (class, domain), and in the test
    split as many non-shape images of every kind (:data:`NONSHAPE_SPLITS`)."""
    columns: dict[str, list] = {"image": [], "label": [], "domain": [], "caption": [], "id": []}
    for c, class_name in enumerate(CLASSES):
        for d, domain in enumerate(DOMAINS):
            for i in range(n_per_class_domain):
                rng = example_rng(seed, split, c, d, i)
                colour = random_colour(rng)
                columns["image"].append(render(class_name, domain, rng, size=size, colour=colour))
                columns["caption"].append(caption(class_name, domain, colour, rng))
                columns["label"].append(c)
                columns["domain"].append(d)
                columns["id"].append(f"{split}-{class_name.replace(' ', '_')}-{domain}-{i:04d}")
    if split in NONSHAPE_SPLITS:
        _add_nonshapes(columns, split, n_per_class_domain, seed, size)
    logger.info("rendered %s: %d images", split, len(columns["id"]))
    return datasets.Dataset.from_dict(columns, features=features(), split=datasets.NamedSplit(split))


def build_shapes_dataset(
    out_dir: str | Path | None,
    n_per_class_domain: int | dict[str, int] | None = None,
    seed: int = 0,
    size: int = 64,
) -> datasets.DatasetDict:
    """Render the shapes dataset and, if ``out_dir`` is given, ``save_to_disk`` it there.

    ``n_per_class_domain`` is either one count used for every split or a dict
    ``{"train": .., "validation": .., "test": ..}``; by default
    :data:`DEFAULT_SIZES`.
    """
    if n_per_class_domain is None:
        sizes = dict(DEFAULT_SIZES)
    elif isinstance(n_per_class_domain, int):
        sizes = {split: n_per_class_domain for split in SPLITS}
    else:
        sizes = {split: int(n_per_class_domain[split]) for split in SPLITS}
    dataset = datasets.DatasetDict({
        split: build_split(split, sizes[split], seed=seed, size=size) for split in SPLITS
    })
    if out_dir is not None:
        dataset.save_to_disk(str(out_dir))
        stamp = {"world_version": world_version(), "seed": seed, "size": size, "sizes": sizes}
        (Path(out_dir) / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
        logger.info("saved shapes dataset to %s", out_dir)
    return dataset
