"""CRoFT Setup-II (CROFT_SPEC §3.2): PACS / VLCS leave-one-domain-out with an open set.

Train, val and ID test come from the source domains, the held-out domain is the covariate set, and
DTD / Food101 / Caltech101 (optionally Oxford Flowers) capped per class are the semantic sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from croft_core.data.benchmarks.hub_sources import hub_source
from croft_core.data.benchmarks.spec import DATA_DIR, Benchmark, SplitSpec

# Setup-II (CROFT_SPEC §3.2). The Hub source (PACS only) holds every domain in one split with a domain
# column; the local layout is CRoFT's README: <root>/PACS/images/<domain>/<class>/<image> with
# <root>/PACS/test_on_<domain>.json (train/val = source domains, test = the held-out one), same for VLCS.
SETUP2_DATASETS = {
    "pacs": {
        "hub": "pacs",  # croft_core.data.benchmarks.hub_sources: flwrlabs/pacs, one "train" split
        "local_dir": "PACS",
        "classnames": ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
        "domains": ("art_painting", "cartoon", "photo", "sketch"),
        "official_sampler": "official_balance",  # generate_fewshot_dataset_balance (buggy)
        "open_set_keep": {"caltech101": ("caltech101_keep_pacs.txt", 92)},  # (list, official count)
        "open_set_exclude": {"caltech101": ("elephant", "electric_guitar", "dalmatian", "snoopy")},
    },
    "vlcs": {
        # No Hub copy of VLCS could be confirmed (flwrlabs/vlcs is not among that organisation's
        # datasets): VLCS is read from the official layout under root= only.
        "hub": None,
        "local_dir": "VLCS",
        "classnames": ("bird", "car", "chair", "dog", "person"),
        "domains": ("CALTECH", "LABELME", "PASCAL", "SUN"),
        "official_sampler": "class",  # VLCS used the plain per-class sampler
        "open_set_keep": {"caltech101": ("caltech101_keep_vlcs.txt", 84)},
        "open_set_exclude": {
            "caltech101": (
                "car_side", "chair", "windsor_chair", "wheelchair", "flamingo", "flamingo_head", "emu",
                "ibis", "pigeon", "wild_cat", "dalmatian", "snoopy",
            )
        },
    },
}
SETUP2_SAMPLERS = {"balanced": "class_domain", "per_domain": "class_each_domain", "per_class": "class"}
# Open sets: the Hub source (an entry of croft_core.data.benchmarks.hub_sources, every split pooled) and the
# local CoOp layout <root>/<dir>/<split file> (images next to it).
OPEN_SET_SOURCES = {
    "dtd": {"hub": "dtd", "local": ("dtd", "split_zhou_DescribableTextures.json")},
    "food101": {"hub": "food101", "local": ("food-101", "split_zhou_Food101.json")},
    "caltech101": {"hub": "caltech101", "local": ("caltech-101", "split_zhou_Caltech101.json")},
    "flowers": {"hub": "flowers", "local": ("oxford_flowers", "split_zhou_OxfordFlowers.json")},
}
OPEN_SET_LOCAL_SPLIT = "train+val+test"  # the official open set pools the three CoOp splits


def caltech101_official_classes(dataset: str) -> tuple[str, ...]:
    """The Caltech101 classes the official open-set run kept for ``"pacs"`` (92) or ``"vlcs"`` (84).

    The ``new_class`` lists of the official ``PACS_Caltech101`` / ``VLCS_Caltech101`` readers, minus
    the five names they spell as the raw Caltech folders do (``BACKGROUND_Google``, ``Faces_easy``,
    ``Leopards``, ``Motorbikes``, ``airplanes``): CoOp's split file, which the official code read,
    names those classes otherwise (or not at all), so the official run dropped them (CROFT_SPEC
    §3.2). ``croft_core/data/vocab/benchmarks/caltech101_keep_*.txt`` hold the classes that remained;
    they are matched ignoring case and ``_``, and the count is checked when the set is read.
    """
    if dataset not in SETUP2_DATASETS:
        raise ValueError(f"Unknown Setup-II dataset {dataset!r}; use one of {sorted(SETUP2_DATASETS)}.")
    return _official_keep(dataset, "caltech101")


def _official_keep(dataset: str, open_set: str) -> tuple[str, ...]:
    filename, _ = SETUP2_DATASETS[dataset]["open_set_keep"][open_set]
    path = DATA_DIR / filename
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
        detection_id="covariate_correct",  # the official open-set ID side (CROFT_SPEC §3.2)
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
        fields = _hub_id_fields(table, source)

        def id_spec(name: str, doms: tuple[str, ...], role: str, **extra: Any) -> SplitSpec:
            return SplitSpec(name=name, domains=doms, **fields, **extra)

        return id_spec
    id_source = source or str(Path(root) / table["local_dir"] / f"test_on_{test_domain.lower()}.json")
    splits = {"train": "train", "val": "val", "id_test": "train", "covariate": "test"}

    def local_spec(name: str, doms: tuple[str, ...], role: str, **extra: Any) -> SplitSpec:
        return SplitSpec(name=name, source=id_source, split=splits[role], layout="domain_split_json",
                         domain_column="domain", domains=doms, **extra)

    return local_spec


def _hub_id_fields(table: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """SplitSpec fields of the ID dataset's Hub source (``source`` overrides the repository)."""
    if source is not None:  # another repository: one split named "train", a "domain" column
        return {"source": source, "split": "train", "domain_column": "domain"}
    if table["hub"] is None:
        raise ValueError(
            f"{table['local_dir']} has no confirmed Hugging Face Hub copy, so it is read from the official "
            f"layout only: put {table['local_dir']}/images/<domain>/<class>/ and CRoFT's "
            f"{table['local_dir']}/test_on_<domain>.json files under one folder and pass root=<that folder> "
            "(docs/REPRODUCE.md says where to get them), or pass source=<a Hub id or dataset folder>."
        )
    hub = hub_source(table["hub"])
    return {**hub.spec_fields(), "split": "+".join(hub.split_names)}


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
    if root is not None:
        folder, split_file = OPEN_SET_SOURCES[name]["local"]
        entry = {"source": str(Path(root) / folder / split_file), "split": OPEN_SET_LOCAL_SPLIT,
                 "layout": "split_json"}
    else:
        hub = hub_source(OPEN_SET_SOURCES[name]["hub"])
        entry = {**hub.spec_fields(), "split": "+".join(hub.split_names)}
    if overrides and name in overrides:
        entry.update(source=overrides[name], revision=None, config_name=None)
    exclude = tuple(table["open_set_exclude"].get(name, ())) + tuple(table["classnames"])
    keep, n_classes = None, None
    if name in table["open_set_keep"] and caltech_filter == "official":
        n_classes = table["open_set_keep"][name][1]
        keep = tuple(c for c in _official_keep(dataset, name) if c not in table["classnames"])
    return SplitSpec(name=name, classes=keep, exclude_classes=exclude, max_per_class=max_per_class,
                     n_classes=n_classes, **entry)
