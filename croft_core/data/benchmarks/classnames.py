"""Class-name matching between a dataset's labels and a benchmark definition.

Datasets spell the same class differently (Caltech-101's raw folders say ``Faces_easy`` and
``Leopards``, ``flwrlabs/caltech101`` says ``faces_easy`` and ``leopards``), and an exact string match
silently drops such classes. Names are therefore compared by :func:`class_key`, which ignores case and
``_`` vs space, and every list of names a definition filters by must be found in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from croft_core.errors import CroftError


class ClassMatchError(CroftError, ValueError):
    """A definition's class names do not match the dataset's (missing names, wrong count, ambiguity)."""


def class_key(name: str) -> str:
    """The comparison key of a class name: case-folded, ``_`` read as a space, spaces collapsed."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


def canonical_names(
    dataset_names: Sequence[str], class_map: Iterable[tuple[str, str]], benchmark_names: Sequence[str],
    what: str,
) -> list[str]:
    """Each dataset class's name after ``class_map``, spelled as the benchmark spells it when it is one.

    Args:
        dataset_names: the dataset's class names, in label order.
        class_map: ``(dataset name, benchmark name)`` pairs (matched exactly first, then by key).
        benchmark_names: the benchmark's ID classes.
        what: how to name the set in errors.

    Raises:
        ClassMatchError: two dataset classes differ only in case or ``_`` (name one with class_map).
    """
    exact = dict(class_map)
    by_key = {class_key(k): v for k, v in exact.items()}
    canon = {class_key(c): c for c in benchmark_names}
    mapped = [exact.get(n, by_key.get(class_key(n), n)) for n in dataset_names]
    seen: dict[str, str] = {}
    for raw, name in zip(dataset_names, mapped):
        other = seen.setdefault(class_key(name), raw)
        if other != raw and raw not in exact and other not in exact:
            raise ClassMatchError(
                f"{what}: dataset classes {other!r} and {raw!r} differ only in case or '_'; map one of "
                "them with SplitSpec.class_map."
            )
    return [canon.get(class_key(n), n) for n in mapped]


def names_mask(names: Sequence[str | None], wanted: Sequence[str]) -> np.ndarray:
    """bool [len(names)]: which names (None never) are in ``wanted``, compared by :func:`class_key`."""
    keys = {class_key(w) for w in wanted}
    return np.fromiter((n is not None and class_key(n) in keys for n in names), dtype=bool, count=len(names))


def require_all_present(names: Sequence[str | None], wanted: Sequence[str], what: str) -> None:
    """Raise unless every name of ``wanted`` is among ``names`` (by :func:`class_key`)."""
    present = {class_key(n) for n in names if n is not None}
    missing = [w for w in wanted if class_key(w) not in present]
    if missing:
        raise ClassMatchError(
            f"{what}: {len(missing)} of the {len(wanted)} classes to keep are not in the data, e.g. "
            f"{missing[:8]} (names are compared ignoring case and '_'; the data's classes look like "
            f"{sorted(n for n in names if n is not None)[:8]}). Fix the list or map the names with "
            "SplitSpec.class_map."
        )


def check_class_count(kept: Iterable[str | None], expected: int, what: str) -> None:
    """Raise unless ``kept`` holds exactly ``expected`` distinct classes (an official count)."""
    classes = sorted({class_key(c) for c in kept if c is not None})
    if len(classes) != expected:
        raise ClassMatchError(
            f"{what} keeps {len(classes)} classes after filtering, but the official count is {expected}. "
            "The data's class names differ from the definition's; compare them with `croft "
            "check-sources` and fix SplitSpec.classes / exclude_classes / class_map."
        )
