"""The embedded synthetic world as CRoFT protocols (definitions): ``shapes`` and ``shapes_dg``.

``shapes`` is the Setup-I miniature (photo-only training):

- ID: the 10 :data:`~croft_core.data.synth.world.ID_CLASSES`, **photo** style; few-shot train from the
  ``train`` split, validation from ``validation``, ID test from ``test``.
- Covariate shift: the same classes in the **sketch**, **cartoon** and **painting** styles (test split).
- Semantic shift: photo-style test images of every other class — one set per class (so results are
  reported per OOD class) or a single "unseen shapes" set (near-OOD); and the far-OOD set
  ``non-shapes`` (noise, blank canvases, stripes, checks, dots, gradients, scribbles, textures,
  clutter; :data:`FAR_OOD_NAME`), pooled apart as ``semantic_far`` vs ``semantic_near``.

``shapes_dg`` is the Setup-II miniature, leave-one-style-out like PACS (CROFT_SPEC §3.2):

- ID: the same classes in the three **source** styles (every style but ``heldout``); few-shot train
  (K // 3 per class and style), validation and ID test from those styles only.
- Covariate shift: the held-out style (test split).
- Semantic shift: the unseen shapes in **all four** styles, one set per class (near-OOD), and the
  far-OOD ``non-shapes`` set, as in ``shapes``.

The dataset is rendered deterministically on first use into the cache
(``$CROFT_CACHE/shapes-<version>``, about a minute on one core) and reused afterwards; the folder name
carries a hash of the renderer's source, so a changed renderer never serves stale images. A folder
passed as ``root`` must carry the stamp of the same world version (``croft render-shapes`` writes it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from croft_core.data.benchmarks.spec import Benchmark, SplitSpec
from croft_core.errors import CroftError

logger = logging.getLogger(__name__)

DEFAULT_HELDOUT = "painting"
"""The style ``shapes_dg`` holds out unless told otherwise."""


class ShapesWorldError(CroftError, ValueError):
    """A shapes benchmark option or render folder that cannot be used; the message says the fix."""


def dataset_version() -> str:
    """Hash of the renderer's source (``synth/world.py`` and ``dataset.py``): part of the cache path."""
    from croft_core.data.synth.dataset import world_version

    return world_version()


def check_render_folder(root: str | Path) -> None:
    """Raise :class:`ShapesWorldError` unless ``root`` was rendered by this version of the world."""
    from croft_core.data.synth.dataset import STAMP_NAME

    root = Path(root)
    stamp_path = root / STAMP_NAME
    found = json.loads(stamp_path.read_text()).get("world_version") if stamp_path.is_file() else None
    if found != dataset_version():
        what = f"world version {found}" if found else "an older world (no shapes_world.json)"
        raise ShapesWorldError(
            f"{root} was rendered by {what}, but this code renders world version {dataset_version()}: "
            f"re-render it with `croft render-shapes --out {root}`, or leave out the folder to use the "
            "cache.")


def ensure_shapes_dataset(root: str | Path | None = None) -> Path:
    """Return the folder of the rendered shapes dataset, rendering it first if needed.

    A given ``root`` that already holds a dataset must come from this world version
    (:func:`check_render_folder`); an empty or missing one is rendered into.
    """
    from croft_core.data import DEFAULT_CACHE_DIR
    from croft_core.data.synth.dataset import build_shapes_dataset

    root = Path(root) if root is not None else Path(DEFAULT_CACHE_DIR) / f"shapes-{dataset_version()}"
    if (root / "dataset_dict.json").is_file():
        check_render_folder(root)
        return root
    logger.info("rendering the shapes dataset into %s (first use only)", root)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_shapes_dataset(tmp)
    if not (root / "dataset_dict.json").is_file():  # another process may have finished first
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    shutil.rmtree(tmp, ignore_errors=True)
    return root


def _spec_factory(source: str):
    def spec(name: str, split: str, domains: Sequence[str], classes: Sequence[str]) -> SplitSpec:
        return SplitSpec(name=name, source=source, split=split, domain_column="domain",
                         domains=tuple(domains), classes=tuple(classes))

    return spec


FAR_OOD_NAME = "non-shapes"
"""The far-OOD set of both benchmarks: test images that show no shape at all."""


def _far_ood(spec) -> SplitSpec:
    """The far-OOD semantic set: every non-shape kind of the test split (noise, blank canvases, ...).

    Rendered from its own seed stream in the test split only (the dataset has no other non-shape
    images), so no method trains, selects or calibrates on it.
    """
    from croft_core.data.synth.dataset import NO_DOMAIN
    from croft_core.data.synth.world import NONSHAPE_KINDS

    return spec(FAR_OOD_NAME, "test", (NO_DOMAIN,), NONSHAPE_KINDS)


def shapes_benchmark(root: str | Path | None = None, semantic_per_class: bool = True) -> Benchmark:
    """The ``shapes`` benchmark definition (Setup-I miniature; renders the dataset on first use).

    Args:
        root: a rendered dataset folder (``croft render-shapes --out DIR``); default: the cache.
        semantic_per_class: one semantic set per OOD class (True) or one pooled set.
    """
    from croft_core.data.synth.world import DOMAINS, ID_CLASSES, OOD_CLASSES

    spec = _spec_factory(str(ensure_shapes_dataset(root)))
    semantic = (tuple(spec(c, "test", ("photo",), (c,)) for c in OOD_CLASSES) if semantic_per_class
                else (spec("unseen shapes", "test", ("photo",), OOD_CLASSES),)) + (_far_ood(spec),)
    return Benchmark(
        name="shapes", classnames=tuple(ID_CLASSES),
        train=spec("photo train", "train", ("photo",), ID_CLASSES),
        val=spec("photo val", "validation", ("photo",), ID_CLASSES),
        id_test=spec("photo", "test", ("photo",), ID_CLASSES),
        covariate=tuple(spec(d, "test", (d,), ID_CLASSES) for d in DOMAINS if d != "photo"),
        semantic=semantic, far_ood=(FAR_OOD_NAME,), templates="single", text_mode="normalized",
        # The official RandomResizedCrop(scale 0.08-1) cuts the small centred shapes apart: zero-shot
        # accuracy on such training views is 51% against 78% on plain images, and every method
        # trained on them got worse on the test sets. Train on plain views instead.
        train_augment=False,
        description="Embedded synthetic world: 10 photo-style ID shapes; sketch/cartoon/painting "
                    "covariate shift; unseen shapes as semantic shift.")


def _names(value: str | Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    """A class list from an option: a sequence, a comma-separated string, or ``None`` (default)."""
    if value is None:
        return tuple(default)
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(v).strip() for v in items if str(v).strip())


def _dg_classes(classes, unseen) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check ``shapes_dg``'s class options; return the ID classes and the unseen ones."""
    from croft_core.data.synth.world import CLASSES, ID_CLASSES

    ids = _names(classes, ID_CLASSES)
    ood = _names(unseen, [c for c in CLASSES if c not in ids])
    unknown = [c for c in (*ids, *ood) if c not in CLASSES]
    if unknown:
        raise ShapesWorldError(f"{unknown} are not shapes of the world; use classes from {list(CLASSES)}.")
    overlap = [c for c in ids if c in ood]
    if overlap:
        raise ShapesWorldError(
            f"classes {overlap} are both ID and unseen; remove them from `unseen` (or from `classes`): "
            "a semantic-shift set must hold other classes only.")
    if not ids or not ood:
        raise ShapesWorldError("shapes_dg needs at least one ID class and one unseen class.")
    return ids, ood


def shapes_dg(heldout: str = DEFAULT_HELDOUT, root: str | Path | None = None,
              classes: str | Sequence[str] | None = None,
              unseen: str | Sequence[str] | None = None) -> Benchmark:
    """The ``shapes_dg`` benchmark: leave-one-style-out (Setup-II miniature, like PACS).

    Args:
        heldout: the style held out as the covariate test set (one of the world's ``DOMAINS``).
        root: a rendered dataset folder (``croft render-shapes --out DIR``); default: the cache.
        classes: ID classes (a list or a comma-separated string); default the 10 ``ID_CLASSES``.
        unseen: semantic-shift classes; default every other class of the world.
    """
    from croft_core.data.synth.world import DOMAINS

    if heldout not in DOMAINS:
        raise ShapesWorldError(
            f"heldout={heldout!r} is not a style of the shapes world; use one of {list(DOMAINS)}, "
            f"e.g. --benchmark-arg heldout={DEFAULT_HELDOUT}.")
    ids, ood = _dg_classes(classes, unseen)
    sources = tuple(d for d in DOMAINS if d != heldout)
    spec = _spec_factory(str(ensure_shapes_dataset(root)))
    return Benchmark(
        name=f"shapes_dg_{heldout}", classnames=ids,
        train=spec("source styles train", "train", sources, ids),
        val=spec("source styles val", "validation", sources, ids),
        id_test=spec("source styles", "test", sources, ids),
        covariate=(spec(heldout, "test", (heldout,), ids),),
        semantic=tuple(spec(c, "test", DOMAINS, (c,)) for c in ood) + (_far_ood(spec),),
        far_ood=(FAR_OOD_NAME,),
        templates="single", text_mode="normalized", shots_per="class_domain",
        train_augment=False,  # as ``shapes``: random crops cut the small shapes apart
        detection_id="covariate_correct",  # Setup-II's protocol: held-out images classified correctly
        description=f"Embedded synthetic world, leave-one-style-out: trained on {', '.join(sources)}, "
                    f"{heldout} held out; unseen shapes in every style as semantic shift.")
