"""ImageNet-based protocols: CRoFT Setup-I, the ImageNet four-OOD benchmark and its full-spectrum variant.

- :func:`setup1` (CROFT_SPEC §3.1): 40% of the ImageNet classes as ID, ImageNet-V2/-Sketch/-A/-R as
  covariate shift, ImageNet val of the other classes as semantic shift.
- :func:`imagenet_four_ood`: ImageNet-1k vs the MCM subsets of iNaturalist, SUN, Places, Textures.
- :func:`imagenet_full_spectrum`: the same with the ImageNet variants counted as ID (OpenOOD v1.5).

Each dataset is read from the Hugging Face Hub (the default ids below), or, with ``root=``, from local
folders in the layouts the official code and its users already have (CoOp's DATASETS.md for
ImageNet, MCM's for the four OOD sets). Every default can be overridden by keyword, or the whole
definition edited as JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from croft_core.data.benchmarks.hub_sources import hub_source
from croft_core.data.benchmarks.spec import DATA_DIR, Benchmark, SplitSpec
from croft_core.data import VOCAB_DIR

logger = logging.getLogger(__name__)

IMAGENET_HUB = {
    # set -> its Hub source (croft_core.data.benchmarks.hub_sources: repo, revision, columns) and how its
    # labels map to class names: "index" sets (integer labels in ImageNet order) get `label_names`,
    # "wnid" sets (labels named by WordNet id, e.g. ImageNet-A's 200-class ClassLabel) a wnid -> name
    # class_map, which maps the 200-class subset onto the ImageNet-1k classes.
    "imagenet": {"hub": "imagenet", "labels": "index"},
    "imagenet_v2": {"hub": "imagenet_v2", "labels": "index"},
    "imagenet_sketch": {"hub": "imagenet_sketch", "labels": "index"},
    "imagenet_a": {"hub": "imagenet_a", "labels": "wnid"},
    "imagenet_r": {"hub": "imagenet_r", "labels": "wnid"},
}
IMAGENET_SPLITS = {"train": "train", "val": "train", "test": "validation"}  # "shifted": the source's split
# Local layout under `root`, CoOp's DATASETS.md first (what the official CRoFT code reads:
# imagenet/images/{train,val}/<wnid>/, imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/,
# imagenet-sketch/images/<wnid>/, imagenet-adversarial/imagenet-a/<wnid>/,
# imagenet-rendition/imagenet-r/<wnid>/); the flat names after it are accepted too. The first folder
# that exists is used; when none does, errors name the CoOp one.
IMAGENET_LOCAL = {
    "imagenet": {"dirs": ("imagenet",), "labels": "wnid"},
    "imagenet_v2": {
        "dirs": ("imagenetv2/imagenetv2-matched-frequency-format-val", "imagenetv2"),
        "labels": "folder_index",
    },
    "imagenet_sketch": {"dirs": ("imagenet-sketch",), "labels": "wnid"},
    "imagenet_a": {"dirs": ("imagenet-adversarial/imagenet-a", "imagenet-a"), "labels": "wnid"},
    "imagenet_r": {"dirs": ("imagenet-rendition/imagenet-r", "imagenet-r"), "labels": "wnid"},
}
# split sub-folders (also looked up under images/); "." reads the set's folder as a whole
IMAGENET_LOCAL_SPLITS = {"train": "train", "val": "train", "test": "val", "shifted": "."}
CLASSNAMES_FILES = ("imagenet/classnames.txt", "classnames.txt")  # CoOp's place, then root/
IMAGENET_TEMPLATES = "croft7"  # croft_core.clip.prompts: the 7-template ensemble of CROFT_SPEC §1.1
COVARIATE_SETS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
COVARIATE_NAMES = {s: s.replace("_", "-") for s in COVARIATE_SETS}


def read_classnames(path: str | Path) -> tuple[list[str], list[str] | None]:
    """Read a class-name file: one name per line, or CoOp's ``"<wnid> <name>"`` lines.

    Args:
        path: the text file.

    Returns:
        ``(names, wnids)``; wnids is None for a plain list.
    """
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    first = [line.split(maxsplit=1) for line in lines]
    if all(len(p) == 2 and p[0][:1] == "n" and p[0][1:].isdigit() for p in first):
        return [p[1] for p in first], [p[0] for p in first]
    return lines, None


def imagenet_classes() -> tuple[list[str], list[str]]:
    """The default ImageNet-1k class names and WordNet ids, in label order.

    ``croft_core/data/vocab/benchmarks/imagenet_classnames.txt``: open_clip's ``IMAGENET_CLASSNAMES``
    (OpenAI's cleaned CLIP names) except two repeated names made unique with their WordNet lemma
    (index 744 ``projectile``, 836 ``sunglass``). ``imagenet_wnids.txt``: the sorted ILSVRC-2012
    synsets (the ImageNet label order), as shipped in ``timm/data/_info/imagenet_synsets.txt``.
    """
    names = (DATA_DIR / "imagenet_classnames.txt").read_text().splitlines()
    wnids = (DATA_DIR / "imagenet_wnids.txt").read_text().split()
    assert len(names) == len(wnids) == 1000
    return names, wnids


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    renamed = [n for n in out if n not in names]
    if renamed:
        logger.warning("Class names repeated in the class list were made unique: %s", renamed[:10])
    return out


def _imagenet_classes(
    root: str | None, classnames: Sequence[str] | None, wnids: Sequence[str] | None
) -> tuple[list[str], list[str] | None]:
    default_names, default_wnids = imagenet_classes()
    if classnames is not None:
        names = list(classnames)
        if wnids is None and len(names) == len(default_wnids):
            wnids = default_wnids
        return _unique_names(names), None if wnids is None else list(wnids)
    if root is not None:
        for relative in CLASSNAMES_FILES:
            path = Path(root) / relative
            if path.is_file():
                names, file_wnids = read_classnames(path)
                if file_wnids is None and wnids is None and len(names) == len(default_wnids):
                    file_wnids = default_wnids
                return _unique_names(names), list(wnids) if wnids is not None else file_wnids
        if not Path(root).is_dir():
            raise ValueError(
                f"ImageNet data folder {str(root)!r} does not exist. Expected, under it, "
                f"{' or '.join(CLASSNAMES_FILES)} (CoOp's '<wnid> <name>' lines, optional) and the "
                "image folders imagenet/images/{train,val}/<wnid>/ (see docs/REPRODUCE.md); or pass "
                "classnames=[...]."
            )
        logger.info("No classnames.txt under %s; using the shipped ImageNet class names", root)
    return list(default_names), list(wnids) if wnids is not None else list(default_wnids)


def _local_dir(root: str | Path, which: str) -> Path:
    candidates = [Path(root) / d for d in IMAGENET_LOCAL[which]["dirs"]]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _imagenet_spec(
    which: str,
    name: str,
    split_role: str,
    root: str | None,
    names: list[str],
    wnids: list[str] | None,
    sources: Mapping[str, str] | None = None,
    **extra: Any,
) -> SplitSpec:
    """A SplitSpec for one ImageNet-family set, Hub or local layout."""
    if root is None:
        hub = hub_source(IMAGENET_HUB[which]["hub"])
        entry = {**hub.spec_fields(), "labels": IMAGENET_HUB[which]["labels"]}
        split = "+".join(hub.split_names) if split_role == "shifted" else IMAGENET_SPLITS[split_role]
        if sources and which in sources:  # another repository: the pinned revision is not its own
            entry.update(source=sources[which], revision=None, config_name=None)
    else:
        local = IMAGENET_LOCAL[which]
        entry = {"source": str(_local_dir(root, which)), "labels": local["labels"], "layout": "folders"}
        split = IMAGENET_LOCAL_SPLITS[split_role]
        if sources and which in sources:
            entry["source"] = sources[which]
    labels = entry.pop("labels")
    if labels == "index":
        entry["label_names"] = tuple(names)
    elif labels == "folder_index":
        entry["class_map"] = {str(i): n for i, n in enumerate(names)}
    elif wnids is not None:
        entry["class_map"] = dict(zip(wnids, names))
    else:  # no wnids known: the dataset's own class names must equal `names`
        logger.warning(
            "Set %r is labelled by wnid but no wnids were given; pass wnids= (or a CoOp classnames.txt "
            "with '<wnid> <name>' lines), or its rows will not match the class names",
            name,
        )
    return SplitSpec(name=name, split=split, **entry, **extra)


def setup1_class_split(
    seed: int, n_classes: int = 1000, id_fraction: float = 0.4
) -> tuple[list[int], list[int]]:
    """Setup-I's ID / held-out class indices for ``seed`` (each list in ImageNet label order).

    ``np.random.default_rng(seed).permutation(n_classes)``: the first ``round(id_fraction * n)`` are
    ID. The official code drew ``np.random.choice(classnames, 400)`` after Dassl's seeding, so its lists
    differ; ours are published for seeds 1-3 in ``croft_core/data/vocab/setup1_seed{S}_id.txt``
    (:func:`setup1_published_classes`) and frozen in every run's manifest.
    """
    if not 0 < id_fraction < 1:
        raise ValueError(f"id_fraction must be in (0, 1); got {id_fraction}.")
    order = np.random.default_rng(seed).permutation(n_classes)
    n_id = int(round(id_fraction * n_classes))
    return np.sort(order[:n_id]).tolist(), np.sort(order[n_id:]).tolist()


def setup1_published_classes(seed: int) -> list[str]:
    """The published Setup-I ID class names of ``seed`` (1, 2 or 3), in label order.

    ``croft_core/data/vocab/setup1_seed{S}_id.txt``, one name per line (also a vocabulary preset); the
    names are those of :func:`imagenet_classes`, so the wnid of each is found there.

    Raises:
        ValueError: no list is published for ``seed``.
    """
    path = VOCAB_DIR / f"setup1_seed{seed}_id.txt"
    if not path.is_file():
        raise ValueError(f"No published Setup-I class list for seed {seed}; seeds 1, 2 and 3 are published.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_setup1_class_lists(folder: str | Path, seeds: Sequence[int] = (1, 2, 3)) -> list[Path]:
    """Write ``setup1_seed{S}_id.txt`` (one ID class name per line) for ``seeds`` with the library's draw.

    This is how ``croft_core/data/vocab/setup1_seed{1,2,3}_id.txt`` were made; a test checks that the draw
    still reproduces them.
    """
    names, _ = imagenet_classes()
    written = []
    for seed in seeds:
        id_idx, _ = setup1_class_split(seed, len(names))
        path = Path(folder) / f"setup1_seed{seed}_id.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{names[i]}\n" for i in id_idx))
        written.append(path)
    return written


def setup1(
    seed: int = 1,
    *,
    root: str | None = None,
    classnames: Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
    id_fraction: float = 0.4,
    n_semantic: int = 1000,
    val_shots: int = 4,
    official_val: bool = False,
    covariate: Sequence[str] = COVARIATE_SETS,
    sources: Mapping[str, str] | None = None,
) -> Benchmark:
    """CRoFT Setup-I (CROFT_SPEC §3.1): ImageNet 40% ID classes, covariate ImageNet-V2/-Sketch/-A/-R.

    ID classes: :func:`setup1_class_split` of ``seed`` (label order = ImageNet order). Train: K shots
    per ID class from ImageNet train. Val: ``val_shots`` per class from ImageNet *train* outside the
    few-shot set (§5 item 14; ``official_val=True`` restores the official val ⊂ ID test). ID test:
    ImageNet val of the ID classes. Covariate: the ImageNet variants restricted to ID classes (-A/-R
    cover 200 classes, so about 80 ID classes; classification stays 400-way). Semantic:
    ``n_semantic`` seeded ImageNet-val images of the held-out classes (§5 item 13).

    Args:
        seed: chooses the ID classes (use the run seed, as the official code did).
        root: folder with local copies in CoOp's layout (``imagenet/images/{train,val}/<wnid>/``,
            ``imagenet/classnames.txt``, ``imagenetv2/imagenetv2-matched-frequency-format-val/``,
            ``imagenet-sketch/images/``, ``imagenet-adversarial/imagenet-a/``,
            ``imagenet-rendition/imagenet-r/``; flat ``imagenet/{train,val}``, ``imagenetv2/``,
            ``imagenet-a/``, ``imagenet-r/`` and ``root/classnames.txt`` also work); None reads the
            Hub sources in ``IMAGENET_HUB``.
        classnames: the 1000 ImageNet class names in label order (default: ``classnames.txt`` under
            ``root``, else :func:`imagenet_classes`).
        wnids: the matching WordNet ids (default: the file's, else the shipped ones).
        id_fraction: share of classes that are ID.
        n_semantic: size of the semantic-shift sample.
        val_shots: val images per ID class.
        official_val: parity: val drawn from the ID test split and allowed to overlap it.
        covariate: which of ``COVARIATE_SETS`` to evaluate.
        sources: override sources by set name (``imagenet``, ``imagenet_v2``, ...): a Hub id, or a
            local folder in the layout of that set.
    """
    _check_covariate(covariate)
    names, wnids = _imagenet_classes(root, classnames, wnids)
    id_idx, ood_idx = setup1_class_split(seed, len(names), id_fraction)
    spec = functools.partial(_imagenet_spec, root=root, names=names, wnids=wnids, sources=sources)
    ood_names = tuple(names[i] for i in ood_idx)
    return Benchmark(
        name=f"setup1_seed{seed}",
        classnames=tuple(names[i] for i in id_idx),
        train=spec("imagenet", "imagenet", "train"),
        val=spec("imagenet", "imagenet-val", "test" if official_val else "val"),
        id_test=spec("imagenet", "imagenet", "test"),
        covariate=tuple(spec(w, COVARIATE_NAMES[w], "shifted") for w in covariate),
        semantic=(spec("imagenet", "imagenet-ood", "test", classes=ood_names, max_total=n_semantic),),
        templates=IMAGENET_TEMPLATES, text_mode="normalized", shots_per="class", val_shots=val_shots,
        allow_val_test_overlap=official_val,
        description=f"CRoFT Setup-I: {len(id_idx)} random ImageNet classes (seed {seed}) as ID; "
        f"covariate {', '.join(COVARIATE_NAMES[w] for w in covariate)}; semantic = ImageNet val of "
        f"the other classes{'; official val (subset of ID test)' if official_val else ''}.",
    )


def _check_covariate(covariate: Sequence[str]) -> None:
    unknown = sorted(set(covariate) - set(COVARIATE_SETS))
    if unknown:
        raise ValueError(f"Unknown covariate set(s) {unknown}; use some of {list(COVARIATE_SETS)}.")


# ImageNet four-OOD (MCM, Ming et al. 2022; the MOS subsets of Huang & Li 2021): local folders as MCM
# and MOS distribute them (iNaturalist/images/*.jpg, ...; Textures = the whole DTD, dtd/images/).
FOUR_OOD_DIRS = {"inaturalist": "iNaturalist", "sun": "SUN", "places": "Places", "textures": "dtd"}
# Hub defaults: only Textures has a public copy we know of (the whole DTD, read unlabelled). No public
# Hub copy of the 10,000-image MOS subsets of iNaturalist / SUN / Places could be confirmed; they come
# from http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/{iNaturalist,SUN,Places}.tar.gz.
FOUR_OOD_HUB = {"textures": "dtd"}  # set -> croft_core.data.benchmarks.hub_sources entry
FOUR_OOD_DOWNLOAD = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/"


def _four_ood_specs(
    root: str | None, ood_sources: Mapping[str, str], names: Sequence[str]
) -> tuple[SplitSpec, ...]:
    missing = [] if root is not None else sorted(
        n for n in names if n not in ood_sources and n not in FOUR_OOD_HUB
    )
    if missing:
        raise ValueError(
            f"The ImageNet OOD sets {missing} have no Hub default: this benchmark needs root= (a folder "
            f"holding {', '.join(FOUR_OOD_DIRS[n] + '/' for n in missing)} as unpacked from "
            f"{FOUR_OOD_DOWNLOAD}) or ood_sources={{name: source}}."
        )
    specs = []
    for name in names:
        if name not in FOUR_OOD_DIRS:
            raise ValueError(f"Unknown OOD set {name!r}; use some of {list(FOUR_OOD_DIRS)}.")
        if name in ood_sources:
            source = ood_sources[name]
            entry = {"source": source, "split": "train"}
            if Path(source).expanduser().is_dir():
                entry = {"source": source, "split": ".", "layout": "folders"}
        elif root is not None:
            entry = {"source": str(Path(root) / FOUR_OOD_DIRS[name]), "split": ".", "layout": "folders"}
        else:  # read unlabelled: the whole set is out-of-distribution
            hub = hub_source(FOUR_OOD_HUB[name])
            entry = {k: v for k, v in hub.spec_fields().items() if k != "label_column"}
            entry["split"] = "+".join(hub.split_names)
        specs.append(SplitSpec(name=name, label_column=None, **entry))
    return tuple(specs)


def _imagenet_root(root: str | None) -> str | None:
    """``root`` when it holds ImageNet in a known layout (else ImageNet is read from the Hub)."""
    if root is None:
        return None
    return root if (Path(root) / "imagenet").is_dir() else None


def imagenet_four_ood(
    *,
    root: str | None = None,
    classnames: Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
    ood_sources: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    ood_sets: Sequence[str] = tuple(FOUR_OOD_DIRS),
    val_shots: int = 4,
) -> Benchmark:
    """The standard ImageNet-1k four-OOD benchmark (MCM subsets of iNaturalist, SUN, Places, Textures).

    ID is all 1000 ImageNet classes (ImageNet val as the ID test set), so CRoFT can be compared with
    MCM (zero-shot CLIP ViT-B/16: 42.7 FPR95 / 90.8 AUROC averaged over the four sets), LoCoOp and
    NegLabel. The OOD sets were curated to hold no ImageNet class and are read unlabelled.

    Args:
        root: folder with the OOD subsets (``root/iNaturalist``, ``root/SUN``, ``root/Places``,
            ``root/dtd``) and optionally ImageNet in :func:`setup1`'s layout (``root/imagenet``);
            without ``root/imagenet``, ImageNet is read from the Hub.
        classnames: the 1000 ImageNet class names (default as in :func:`setup1`).
        wnids: matching WordNet ids.
        ood_sources: override the OOD sources by name (a Hub id, or a local folder of images).
        sources: override the ImageNet sources (``{"imagenet": ...}``).
        ood_sets: which of the four sets to evaluate.
        val_shots: val images per class (from ImageNet train, outside the few-shot set).
    """
    imagenet_root = _imagenet_root(root)
    names, wnids = _imagenet_classes(imagenet_root if imagenet_root else None, classnames, wnids)
    semantic = _four_ood_specs(root, dict(ood_sources or {}), ood_sets)
    spec = functools.partial(_imagenet_spec, "imagenet", root=imagenet_root, names=names, wnids=wnids,
                             sources=sources)
    return Benchmark(
        name="imagenet_four_ood",
        classnames=tuple(names),
        train=spec("imagenet", "train"),
        val=spec("imagenet-val", "val"),
        id_test=spec("imagenet", "test"),
        semantic=semantic,
        templates="single",
        text_mode="normalized",
        val_shots=val_shots,
        description="ImageNet-1k vs " + " / ".join(s.name for s in semantic) + " (MCM subsets).",
    )


def imagenet_full_spectrum(
    *,
    root: str | None = None,
    classnames: Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
    covariate: Sequence[str] = COVARIATE_SETS,
    ood_sets: Sequence[str] = tuple(FOUR_OOD_DIRS),
    ood_sources: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    val_shots: int = 4,
) -> Benchmark:
    """Full-spectrum OOD detection on ImageNet-1k (OpenOOD v1.5 style).

    ID is ImageNet-1k; the covariate-shifted sets (ImageNet-V2 / -Sketch / -A / -R, all their classes)
    are *also ID* for detection and enter the accuracy over ID + covariate; the semantic sets are the
    four MCM OOD sets. :func:`croft_core.runs.evaluate.evaluate` reports this as ``full_spectrum``
    (covariate counted as ID) next to the standard per-set metrics. OpenOOD's own v1.5 lists
    (ImageNet-C, SSB-hard, NINCO, OpenImage-O) can be added as more sets by editing the JSON
    definition.

    Args:
        root: as :func:`imagenet_four_ood` (``root/imagenet`` and the CoOp ImageNet-variant folders
            read locally when present, else the Hub).
        classnames, wnids: as :func:`setup1`.
        covariate: which of ``COVARIATE_SETS`` count as covariate-shifted ID.
        ood_sets, ood_sources: as :func:`imagenet_four_ood`.
        sources: override ImageNet-family sources by set name.
        val_shots: val images per class.
    """
    _check_covariate(covariate)
    base = imagenet_four_ood(root=root, classnames=classnames, wnids=wnids, ood_sources=ood_sources,
                             sources=sources, ood_sets=ood_sets, val_shots=val_shots)
    imagenet_root = _imagenet_root(root)
    names, wnids = _imagenet_classes(imagenet_root, classnames, wnids)
    spec = functools.partial(_imagenet_spec, root=imagenet_root, names=names, wnids=wnids, sources=sources)
    return dataclasses.replace(
        base,
        name="imagenet_full_spectrum",
        covariate=tuple(spec(w, COVARIATE_NAMES[w], "shifted") for w in covariate),
        description="Full-spectrum ImageNet-1k: covariate-shifted "
        + ", ".join(COVARIATE_NAMES[w] for w in covariate) + " count as ID; OOD "
        + " / ".join(s.name for s in base.semantic) + ".",
    )


