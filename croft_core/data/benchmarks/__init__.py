"""Evaluation protocols as data: ID classes, few-shot train, val, ID test, covariate and semantic sets.

A :class:`Benchmark` is a frozen dataclass of :class:`SplitSpec` s; every protocol of the paper is one
*definition*, not a code path (STYLE.md Part 3 item 3). Each reads its data from the Hugging Face Hub
or, with ``root=``, from local folders in the layouts of the official code (see
``docs/REPRODUCE.md``). The package, one module per concern:

- :mod:`~croft_core.data.benchmarks.spec`: the definitions (:class:`SplitSpec`, :class:`Benchmark`);
- :mod:`~croft_core.data.benchmarks.loading`: a role of a definition -> rows (:class:`LoadedSplit`),
  with the fixes of the official code (CROFT_SPEC §5);
- :mod:`~croft_core.data.benchmarks.manifest`: the exact rows of a run, written and read back;
- :mod:`~croft_core.data.benchmarks.sources`: fail-fast checks that the data can be found;
- :mod:`~croft_core.data.benchmarks.hub_sources`: the Hub sources as data (repository, pinned revision,
  columns, what the cards say); :mod:`~croft_core.data.benchmarks.hub_check` compares them with the Hub's
  metadata (``croft check-sources``: :func:`check_hub_sources`, :func:`format_source_table`);
- :mod:`~croft_core.data.benchmarks.classnames`: class names matched ignoring case and ``_``;
- :mod:`~croft_core.data.benchmarks.registry`: names for ``--benchmark`` (:func:`get_benchmark`,
  :func:`register_benchmark`);
- one module per protocol family: :mod:`~croft_core.data.benchmarks.imagenet` (Setup-I, four-OOD,
  full-spectrum), :mod:`~croft_core.data.benchmarks.pacs_vlcs` (PACS / VLCS), and
  :mod:`~croft_core.data.benchmarks.shapes` (the embedded synthetic world).
"""

from croft_core.data.benchmarks.classnames import ClassMatchError, class_key
from croft_core.data.benchmarks.hub_check import (SourceCheck, check_hub_sources, compare_source,
                                             format_source_table)
from croft_core.data.benchmarks.hub_sources import HUB_SOURCES, HubSource
from croft_core.data.benchmarks.imagenet import (CLASSNAMES_FILES, COVARIATE_NAMES, COVARIATE_SETS, FOUR_OOD_DIRS,
                                            FOUR_OOD_DOWNLOAD, FOUR_OOD_HUB, IMAGENET_HUB, IMAGENET_LOCAL,
                                            IMAGENET_LOCAL_SPLITS, IMAGENET_SPLITS, IMAGENET_TEMPLATES,
                                            imagenet_classes, imagenet_four_ood, imagenet_full_spectrum,
                                            read_classnames, setup1, setup1_class_split,
                                            setup1_published_classes, write_setup1_class_lists)
from croft_core.data.benchmarks.manifest import (MANIFEST_FORMAT, materialize_from_manifest, read_manifest,
                                            write_manifest)
from croft_core.data.benchmarks.loading import ID_COLUMN, LoadedSplit, derive_seed, materialize
from croft_core.data.benchmarks.registry import BENCHMARKS, get_benchmark, register_benchmark
from croft_core.data.benchmarks.pacs_vlcs import (OPEN_SET_LOCAL_SPLIT, OPEN_SET_SOURCES, SETUP2_DATASETS,
                                          SETUP2_SAMPLERS, caltech101_official_classes, setup2)
from croft_core.data.benchmarks.shapes import shapes_benchmark, shapes_dg
from croft_core.data.benchmarks.sources import check_sources
from croft_core.data.benchmarks.spec import (DATA_DIR, DETECTION_IDS, EVAL_ROLES, MULTI_ROLES, ROLES, SHOTS_PER, Benchmark,
                                        SplitSpec, replace_spec)

__all__ = [
    "BENCHMARKS", "HUB_SOURCES", "ClassMatchError", "HubSource", "SourceCheck", "check_hub_sources",
    "class_key", "compare_source", "format_source_table", "CLASSNAMES_FILES", "COVARIATE_NAMES",
    "COVARIATE_SETS", "DATA_DIR", "DETECTION_IDS", "EVAL_ROLES",
    "FOUR_OOD_DIRS", "FOUR_OOD_DOWNLOAD", "FOUR_OOD_HUB", "ID_COLUMN", "IMAGENET_HUB", "IMAGENET_LOCAL",
    "IMAGENET_LOCAL_SPLITS", "IMAGENET_SPLITS", "IMAGENET_TEMPLATES", "MANIFEST_FORMAT", "MULTI_ROLES",
    "OPEN_SET_LOCAL_SPLIT", "OPEN_SET_SOURCES", "ROLES", "SETUP2_DATASETS", "SETUP2_SAMPLERS", "SHOTS_PER",
    "Benchmark", "LoadedSplit", "SplitSpec", "caltech101_official_classes", "check_sources", "derive_seed",
    "get_benchmark", "imagenet_classes", "imagenet_four_ood", "imagenet_full_spectrum", "materialize",
    "materialize_from_manifest", "read_classnames", "read_manifest", "register_benchmark", "replace_spec",
    "setup1", "setup1_class_split", "setup1_published_classes", "setup2", "shapes_benchmark", "shapes_dg",
    "write_manifest", "write_setup1_class_lists",
]
