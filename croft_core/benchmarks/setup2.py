"""CRoFT Setup-II (CROFT_SPEC §3.2): PACS / VLCS leave-one-domain-out with an open set.

Train, val and ID test come from the source domains, the held-out domain is the covariate set, and
DTD / Food101 / Caltech101 (optionally Oxford Flowers) capped per class are the semantic sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from croft_core.benchmarks.spec import DATA_DIR, Benchmark, SplitSpec

# Setup-II (CROFT_SPEC §3.2). Hub sources hold every domain in one split with a domain column; the
# local layout is CRoFT's README: <root>/PACS/images/<domain>/<class>/<image> with
# <root>/PACS/test_on_<domain>.json (train/val = source domains, test = the held-out one), same for VLCS.
SETUP2_DATASETS = {
    "pacs": {
        "source": "flwrlabs/pacs",  # image, domain (string), label (ClassLabel); one "train" split
        "split": "train",
        "local_dir": "PACS",
        "classnames": ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
        "domains": ("art_painting", "cartoon", "photo", "sketch"),
        "official_sampler": "official_balance",  # generate_fewshot_dataset_balance (buggy)
        "caltech_keep": "caltech101_keep_pacs.txt",
        "open_set_exclude": {"caltech101": ("elephant", "electric_guitar", "dalmatian", "snoopy")},
    },
    "vlcs": {
        "source": "flwrlabs/vlcs",  # assumed same layout as flwrlabs/pacs (unverified)
        "split": "train",
        "local_dir": "VLCS",
        "classnames": ("bird", "car", "chair", "dog", "person"),
        "domains": ("CALTECH", "LABELME", "PASCAL", "SUN"),
        "official_sampler": "class",  # VLCS used the plain per-class sampler
        "caltech_keep": "caltech101_keep_vlcs.txt",
        "open_set_exclude": {
            "caltech101": (
                "car_side", "chair", "windsor_chair", "wheelchair", "flamingo", "flamingo_head", "emu",
                "ibis", "pigeon", "wild_cat", "dalmatian", "snoopy",
            )
        },
    },
}
SETUP2_SAMPLERS = {"balanced": "class_domain", "per_domain": "class_each_domain", "per_class": "class"}
# Open sets: Hub default, and the local CoOp layout <root>/<dir>/<split file> (images next to it).
OPEN_SET_SOURCES = {
    "dtd": {"source": "tanganke/dtd", "split": "train+test",
            "local": ("dtd", "split_zhou_DescribableTextures.json")},
    "food101": {"source": "ethz/food101", "split": "train+validation",
                "local": ("food-101", "split_zhou_Food101.json")},
    "caltech101": {"source": "flwrlabs/caltech101", "split": "train",
                   "local": ("caltech-101", "split_zhou_Caltech101.json")},
    # image + ClassLabel named "1".."102" (the card); the open set needs no class names
    "flowers": {"source": "nelorth/oxford-flowers", "split": "train+test",
                "local": ("oxford_flowers", "split_zhou_OxfordFlowers.json")},
}
OPEN_SET_LOCAL_SPLIT = "train+val+test"  # the official open set pools the three CoOp splits


def caltech101_official_classes(dataset: str) -> tuple[str, ...]:
    """The Caltech101 classes the official open-set reader keeps for ``"pacs"`` or ``"vlcs"``.

    Transcribed from the ``new_class`` lists of the official ``PACS_Caltech101`` /
    ``VLCS_Caltech101`` readers (``croft_core/vocab/benchmarks/caltech101_keep_*.txt``). They spell
    ``airplanes``, ``Faces_easy``, ``Leopards`` and ``Motorbikes`` as the raw Caltech folders do, so
    with CoOp's split file (``airplane``, ``face``, ...) those classes are dropped too: 92 classes
    remain for PACS and 84 for VLCS (CROFT_SPEC §3.2).
    """
    if dataset not in SETUP2_DATASETS:
        raise ValueError(f"Unknown Setup-II dataset {dataset!r}; use one of {sorted(SETUP2_DATASETS)}.")
    path = DATA_DIR / SETUP2_DATASETS[dataset]["caltech_keep"]
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def setup2(
    dataset: str = "pacs",
    test_domain: str | None = None,
    *,
    open_set: Sequence[str] = ("dtd", "food101", "caltech101"),
    root: str | None = None,
    source: str | None = None,
    domains: Sequence[str] | None = None,
    open_set_sources: Mapping[str, str] | None = None,
    val_shots: int = 16,
    open_set_max_per_class: int = 100,
    eval_max_per_class: int | None = None,
    sampler: str = "balanced",
    caltech_filter: str = "official",
) -> Benchmark:
    """CRoFT Setup-II (CROFT_SPEC §3.2): PACS/VLCS leave-one-domain-out with an open set.

    Train is K shots over the source domains; val is ``val_shots`` per class from them; the ID test
    set is every other source-domain image; the held-out domain is the covariate set; the open sets
    capped at ``open_set_max_per_class`` images per class are the semantic sets.

    Args:
        dataset: ``"pacs"`` or ``"vlcs"`` (a key of ``SETUP2_DATASETS``).
        test_domain: the held-out domain; default the last of the dataset's domains.
        open_set: semantic sets (keys of ``OPEN_SET_SOURCES``).
        root: folder with local copies: ``root/PACS/images/`` + ``root/PACS/test_on_<domain>.json``
            (``VLCS`` alike, lower-case domain), and CoOp's ``root/dtd/``, ``root/food-101/``,
            ``root/caltech-101/``, ``root/oxford_flowers/`` with their ``split_zhou_*.json``.
        source: override the ID dataset's source (a Hub id, or a split file when ``root`` is set).
        domains: override the domain names (as spelled in the source's domain column).
        open_set_sources: override open-set sources by name (Hub ids, or split files with ``root``).
        val_shots: val images per class.
        open_set_max_per_class: cap per open-set class (official: 100).
        eval_max_per_class: cap per class of ID test and covariate (official: 500); None: no cap.
        sampler: ``"balanced"`` (``K // 3`` per (class, domain), the fix of §5 item 12),
            ``"per_domain"`` (K per (class, domain)), ``"per_class"``, or ``"official"`` (PACS: the
            official buggy balance sampler; VLCS: per class).
        caltech_filter: ``"official"`` keeps the official reader's class list
            (:func:`caltech101_official_classes`); ``"exclude"`` keeps every class except the ones
            the official lists drop and the ID classes.
    """
    table, domains, test_domain = _setup2_arguments(dataset, test_domain, domains, sampler, caltech_filter)
    sources = tuple(d for d in domains if d != test_domain)
    id_spec, cap = _id_spec_factory(table, test_domain, root, source), {"max_per_class": eval_max_per_class}
    return Benchmark(
        name=f"setup2_{dataset}_{test_domain}",
        classnames=table["classnames"],
        train=id_spec("source-domains", sources, "train"),
        val=id_spec("source-domains-val", sources, "val"),
        id_test=id_spec("source-domains-test", sources, "id_test", **cap),
        covariate=(id_spec(test_domain, (test_domain,), "covariate", **cap),),
        semantic=tuple(
            _open_set_spec(name, dataset, root, open_set_sources, open_set_max_per_class, caltech_filter)
            for name in open_set
        ),
        templates="single", text_mode="raw", shots_per=_shots_per(table, sampler), val_shots=val_shots,
        description=f"CRoFT Setup-II: {dataset} trained on {', '.join(sources)}, {test_domain} held out; "
        f"open set {', '.join(open_set)}; sampler {sampler}.",
    )


def _shots_per(table: Mapping[str, Any], sampler: str) -> str:
    return table["official_sampler"] if sampler == "official" else SETUP2_SAMPLERS[sampler]


def _setup2_arguments(
    dataset: str, test_domain: str | None, domains: Sequence[str] | None, sampler: str, caltech_filter: str
) -> tuple[Mapping[str, Any], tuple[str, ...], str]:
    """Check :func:`setup2`'s options; return the dataset's table, its domains and the held-out one."""
    if dataset not in SETUP2_DATASETS:
        raise ValueError(f"Unknown Setup-II dataset {dataset!r}; use one of {sorted(SETUP2_DATASETS)}.")
    if sampler not in (*SETUP2_SAMPLERS, "official"):
        raise ValueError(f"sampler must be one of {[*SETUP2_SAMPLERS, 'official']}; got {sampler!r}.")
    if caltech_filter not in ("official", "exclude"):
        raise ValueError(f"caltech_filter must be 'official' or 'exclude'; got {caltech_filter!r}.")
    table = SETUP2_DATASETS[dataset]
    domains = tuple(domains or table["domains"])
    test_domain = test_domain or domains[-1]
    if test_domain not in domains:
        raise ValueError(
            f"test_domain {test_domain!r} is not a {dataset} domain; use one of {list(domains)}."
        )
    return table, domains, test_domain


def _id_spec_factory(
    table: Mapping[str, Any], test_domain: str, root: str | None, source: str | None
) -> Callable[..., SplitSpec]:
    """``id_spec(name, domains, role, **extra)``: a spec of the ID dataset, Hub or local layout."""
    if root is None:
        id_source = source or table["source"]

        def id_spec(name: str, doms: tuple[str, ...], role: str, **extra: Any) -> SplitSpec:
            return SplitSpec(name=name, source=id_source, split=table["split"], domain_column="domain",
                             domains=doms, **extra)

        return id_spec
    id_source = source or str(Path(root) / table["local_dir"] / f"test_on_{test_domain.lower()}.json")
    splits = {"train": "train", "val": "val", "id_test": "train", "covariate": "test"}

    def local_spec(name: str, doms: tuple[str, ...], role: str, **extra: Any) -> SplitSpec:
        return SplitSpec(name=name, source=id_source, split=splits[role], layout="domain_split_json",
                         domain_column="domain", domains=doms, **extra)

    return local_spec


def _open_set_spec(
    name: str,
    dataset: str,
    root: str | None,
    overrides: Mapping[str, str] | None,
    max_per_class: int,
    caltech_filter: str,
) -> SplitSpec:
    if name not in OPEN_SET_SOURCES:
        raise ValueError(f"Unknown open set {name!r}; use one of {sorted(OPEN_SET_SOURCES)}.")
    table = SETUP2_DATASETS[dataset]
    entry = {k: v for k, v in OPEN_SET_SOURCES[name].items() if k != "local"}
    if root is not None:
        folder, split_file = OPEN_SET_SOURCES[name]["local"]
        entry = {"source": str(Path(root) / folder / split_file), "split": OPEN_SET_LOCAL_SPLIT,
                 "layout": "split_json"}
    if overrides and name in overrides:
        entry["source"] = overrides[name]
    exclude = tuple(table["open_set_exclude"].get(name, ())) + tuple(table["classnames"])
    keep = None
    if name == "caltech101" and caltech_filter == "official":
        keep = tuple(c for c in caltech101_official_classes(dataset) if c not in table["classnames"])
    return SplitSpec(name=name, classes=keep, exclude_classes=exclude, max_per_class=max_per_class, **entry)
