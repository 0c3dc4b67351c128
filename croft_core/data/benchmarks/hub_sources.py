"""The Hugging Face Hub sources of the real benchmarks, as data: where, which revision, what to expect.

Each :class:`HubSource` names a dataset repository, the revision the definitions read (a commit sha
where one was confirmed, else a named ref), the columns and splits the definitions use, and what the
dataset card says about them (row counts, number of classes, gate, licence). The benchmark
definitions (:mod:`~croft_core.data.benchmarks.imagenet`, :mod:`~croft_core.data.benchmarks.pacs_vlcs`) take their
source, revision and columns from here, and :func:`~croft_core.data.benchmarks.check_hub_sources` compares
each entry with the Hub's metadata (``croft check-sources``).

``verified`` says what was confirmed, and how: everything here was read from public dataset cards,
repository pages and viewer pages, never loaded from this project's machines (see
``docs/REPRODUCE.md``). Row counts are ``None`` where no card stated them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LABEL_KINDS = ("class_label", "int", "string")
PARQUET_EXPORT = "refs/convert/parquet"  # the Hub's auto-converted parquet branch


@dataclass(frozen=True)
class HubSource:
    """One Hub dataset as the benchmark definitions read it."""

    repo_id: str
    revision: str  # commit sha (40 hex digits) or a named ref
    splits: tuple[tuple[str, int | None], ...]  # (split, rows the card states, or None)
    image_column: str = "image"
    label_column: str = "label"
    label_kind: str = "class_label"  # "class_label", "int" (plain label indices) or "string"
    n_classes: int | None = None  # ClassLabel size the card states
    class_names: tuple[str, ...] | None = None  # the ClassLabel names, when the card lists them
    names_within: str | None = None  # "imagenet_wnids": every ClassLabel name is an ImageNet-1k wnid
    domain_column: str | None = None
    config_name: str | None = None
    gated: bool = False
    license: str = "unknown"
    size: str = ""
    used_by: tuple[str, ...] = ()  # registered benchmarks that read it
    verified: str = ""  # what was confirmed, from which page

    def __post_init__(self) -> None:
        if self.label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {LABEL_KINDS}; got {self.label_kind!r}.")

    @property
    def card(self) -> str:
        """The dataset card's address."""
        return f"https://huggingface.co/datasets/{self.repo_id}"

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.splits)

    def spec_fields(self) -> dict[str, Any]:
        """The :class:`~croft_core.data.benchmarks.SplitSpec` fields that read this source."""
        fields: dict[str, Any] = {
            "source": self.repo_id, "revision": self.revision, "config_name": self.config_name,
            "image_column": self.image_column, "label_column": self.label_column,
        }
        if self.domain_column is not None:
            fields["domain_column"] = self.domain_column
        return fields


# The 101 Caltech-101 classes as flwrlabs/caltech101 names them (its viewer: lower case, sorted, no
# BACKGROUND_Google; e.g. 1 airplanes, 36 faces, 56 leopards, 65 motorbikes, 100 yin_yang).
CALTECH101_CLASSES = (
    "accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai", "brain",
    "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side", "ceiling_fan", "cellphone",
    "chair", "chandelier", "cougar_body", "cougar_face", "crab", "crayfish", "crocodile", "crocodile_head",
    "cup", "dalmatian", "dollar_bill", "dolphin", "dragonfly", "electric_guitar", "elephant", "emu",
    "euphonium", "ewer", "faces", "faces_easy", "ferry", "flamingo", "flamingo_head", "garfield",
    "gerenuk", "gramophone", "grand_piano", "hawksbill", "headphone", "hedgehog", "helicopter", "ibis",
    "inline_skate", "joshua_tree", "kangaroo", "ketch", "lamp", "laptop", "leopards", "llama", "lobster",
    "lotus", "mandolin", "mayfly", "menorah", "metronome", "minaret", "motorbikes", "nautilus", "octopus",
    "okapi", "pagoda", "panda", "pigeon", "pizza", "platypus", "pyramid", "revolver", "rhino", "rooster",
    "saxophone", "schooner", "scissors", "scorpion", "sea_horse", "snoopy", "soccer_ball", "stapler",
    "starfish", "stegosaurus", "stop_sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella",
    "watch", "water_lilly", "wheelchair", "wild_cat", "windsor_chair", "wrench", "yin_yang",
)
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
_IMAGENET_USERS = ("setup1", "imagenet_four_ood", "imagenet_full_spectrum")
_VARIANT_USERS = ("setup1", "imagenet_full_spectrum")

HUB_SOURCES: dict[str, HubSource] = {
    "imagenet": HubSource(
        "ILSVRC/imagenet-1k", PARQUET_EXPORT, (("train", 1_281_167), ("validation", 50_000)),
        n_classes=1000, gated=True, license="ImageNet terms of access (gated)", size="about 150 GB",
        used_by=_IMAGENET_USERS,
        verified="issue 14 (card read side by side): gated; the main branch loads through a script "
        "(imagenet-1k.py) that datasets 4+ refuses, so the auto-converted parquet branch is read. "
        "Not confirmed from here: that the parquet export is complete (check-sources compares rows).",
    ),
    "imagenet_v2": HubSource(
        "clip-benchmark/wds_imagenetv2", "main", (("test", 10_000),), image_column="webp",
        label_column="cls", label_kind="int", license="unknown (ImageNetV2: MIT)", size="about 1.2 GB",
        used_by=_VARIANT_USERS,
        verified="repo page: webdataset shards under test/, classnames.txt, head commit 98e9ba6 (full sha "
        "not recorded: pinned to main until check-sources prints it); issue 14: columns webp / cls, "
        "cls = ImageNet-1k index.",
    ),
    "imagenet_sketch": HubSource(
        "clip-benchmark/wds_imagenet_sketch", "751cf0a06276ed52b015c5dfef068f161bd0dfb7",
        (("test", 50_889),), image_column="jpg", label_column="cls", label_kind="int",
        license="unknown (ImageNet-Sketch: MIT)", size="about 8 GB", used_by=_VARIANT_USERS,
        verified="viewer page: columns __key__, __url__, cls (int64), jpg (image), split test, read at "
        "commit 751cf0a (the viewer lists 30.1k rows of its own conversion; ImageNet-Sketch has 50,889).",
    ),
    "imagenet_a": HubSource(
        "barkermrl/imagenet-a", "0358b7eed4fa2e7615870f8914ca055d35bbbb0b", (("train", 7_500),),
        n_classes=200, names_within="imagenet_wnids", license="mit", size="about 680 MB",
        used_by=_VARIANT_USERS,
        verified="repo pages: parquet data, one train split of 7.5k rows, licence mit; commit 0358b7e is "
        "its parquet branch (default/train/0000-0001.parquet); issue 14: label = ClassLabel of the 200 "
        "ImageNet-A wnids.",
    ),
    "imagenet_r": HubSource(
        "axiong/imagenet-r", "f4be3aeec67c5214a04365c388ea9d1fc4b74f36", (("test", 30_000),),
        label_column="wnid", label_kind="string", config_name="test", license="mit", size="about 2.2 GB",
        used_by=_VARIANT_USERS,
        verified="card: config test, features image / wnid (string) / class_name (string), split test "
        "of 30,000 rows, licence mit; commit f4be3ae ('Delete loading script') holds test/*.parquet.",
    ),
    "pacs": HubSource(
        "flwrlabs/pacs", "394113073258ead631f617d2e13bb377c0715c4b", (("train", 9_991),),
        n_classes=7, class_names=PACS_CLASSES, domain_column="domain", license="unknown",
        size="about 200 MB", used_by=("setup2",),
        verified="card and viewer: image, domain (string: art_painting, cartoon, photo, sketch), label "
        "(ClassLabel, 7 classes), one train split; commit 3941130 is the card's last update.",
    ),
    "dtd": HubSource(
        "tanganke/dtd", "main", (("train", None), ("test", None)), n_classes=47, license="unknown",
        size="about 600 MB", used_by=("setup2", "imagenet_four_ood", "imagenet_full_spectrum"),
        verified="issue 14: matches what the code expects (image, label ClassLabel, train/test).",
    ),
    "food101": HubSource(
        "ethz/food101", "main", (("train", 75_750), ("validation", 25_250)), n_classes=101,
        license="unknown", size="about 5 GB", used_by=("setup2",),
        verified="issue 14: matches what the code expects (image, label ClassLabel, train/validation).",
    ),
    "caltech101": HubSource(
        "flwrlabs/caltech101", "main", (("train", None),), n_classes=101, class_names=CALTECH101_CLASSES,
        license="unknown", size="about 130 MB", used_by=("setup2",),
        verified="card and viewer: image, label (ClassLabel, 101 lower-case classes, no "
        "BACKGROUND_Google), one train split, licence unknown.",
    ),
    "flowers": HubSource(
        "nelorth/oxford-flowers", "main", (("train", None), ("test", None)), n_classes=102,
        class_names=tuple(str(i) for i in range(1, 103)), license="unknown", size="about 330 MB",
        used_by=("setup2",),
        verified="issue 14: image, label ClassLabel named '1'..'102'.",
    ),
}


def hub_source(name: str) -> HubSource:
    """A catalogue entry by name (a key of :data:`HUB_SOURCES`)."""
    if name not in HUB_SOURCES:
        raise ValueError(f"Unknown Hub source {name!r}; known: {sorted(HUB_SOURCES)}.")
    return HUB_SOURCES[name]
