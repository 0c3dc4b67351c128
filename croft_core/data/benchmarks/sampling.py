"""Seeded few-shot sampling.

:func:`few_shot_indices` is the seeded K-shot sampler. With domains it draws ``K // n_domains`` images
per (class, domain): CROFT_SPEC §5 item 12, the fix of the official
``generate_fewshot_dataset_balance``, which drew 105 PACS images ignoring class;
:func:`official_balanced_indices` reproduces that draw for parity runs.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def few_shot_indices(
    labels: Sequence | np.ndarray,
    shots: int | None,
    seed: int,
    *,
    domains: Sequence | np.ndarray | None = None,
    pool: Sequence[int] | np.ndarray | None = None,
    per_domain: str = "split",
    warn: bool = True,
) -> list[int]:
    """Seeded K-shot sampling per class, or per (class, domain), without replacement.

    Each group gets its own ``numpy.random.Generator`` seeded with ``(seed, crc32(group key))``, so
    one group's draw does not depend on which other groups exist. A group with fewer items than
    requested gives all of them, with a warning.

    Args:
        labels: per-row class (ints or strings), shape ``[N]``.
        shots: images per class; None or -1 keeps every candidate. With ``domains`` the budget is
            split evenly: ``shots // n_domains`` per (class, domain), as CROFT_SPEC §5 item 12 fixes
            the official PACS sampler.
        seed: non-negative integer seed.
        domains: per-row domain, shape ``[N]``, or None to sample per class only.
        pool: candidate row positions (into ``labels``); default all rows.
        per_domain: with ``domains``, ``"split"`` draws ``shots // n_domains`` per (class, domain)
            (K images per class in all); ``"each"`` draws ``shots`` per (class, domain).
        warn: log a warning for groups with fewer items than requested (off for caps, where
            a small class is expected).

    Returns:
        Sorted row positions (into ``labels``).
    """
    if per_domain not in ("split", "each"):
        raise ValueError(f"per_domain must be 'split' or 'each'; got {per_domain!r}.")
    labels = np.asarray(labels)
    candidates = np.arange(len(labels)) if pool is None else np.unique(np.asarray(pool, dtype=np.int64))
    if shots is None or shots == -1:
        return candidates.tolist()
    if shots < 1:
        raise ValueError(f"shots must be >= 1, or None / -1 for all images; got {shots}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}.")
    if len(candidates) == 0:
        return []
    keys, per_group = [labels[candidates]], shots
    if domains is not None:
        domain_of = np.asarray(domains)[candidates]
        per_group = _shots_per_domain(shots, len(np.unique(domain_of)), per_domain)
        keys.append(domain_of)
    chosen = [_draw(key, members, per_group, seed, warn) for key, members in _groups(keys, candidates)]
    return np.sort(np.concatenate(chosen)).tolist()


def _shots_per_domain(shots: int, n_domains: int, per_domain: str) -> int:
    per_group = shots // n_domains if per_domain == "split" else shots
    if per_group == 0:
        raise ValueError(
            f"shots={shots} is fewer than the {n_domains} domains, so shots // n_domains = 0 "
            "per (class, domain). Use shots >= the number of domains, or sample per class."
        )
    if per_domain == "split" and shots % n_domains:
        logger.info(
            "%d shots over %d domains: %d per (class, domain), %d per class in all",
            shots, n_domains, per_group, per_group * n_domains,
        )
    return per_group


def _draw(key: tuple, members: np.ndarray, per_group: int, seed: int, warn: bool) -> np.ndarray:
    """``per_group`` of one group's ``members``, drawn with the group's own generator."""
    if len(members) <= per_group:
        if len(members) < per_group and warn:
            logger.warning(
                "Group %s has %d images, fewer than the %d requested; taking all of them",
                key, len(members), per_group,
            )
        return members
    rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
    return rng.choice(members, size=per_group, replace=False)


def official_balanced_indices(
    labels: Sequence | np.ndarray,
    domains: Sequence | np.ndarray,
    shots: int,
    seed: int,
    *,
    pool: Sequence[int] | np.ndarray | None = None,
) -> list[int]:
    """The official ``generate_fewshot_dataset_balance`` draw, bug included (parity runs only).

    For every class the official loop split the *whole* set by domain and drew ``shots // n_domains``
    images per domain, ignoring the class (CROFT_SPEC §5 item 12): PACS "16 shots" is
    7 classes x 3 domains x 5 = 105 images of any class, possibly with repeats. Reproduced here with a
    seeded draw per class iteration.

    Args:
        labels: per-row class, shape ``[N]`` (only the set of classes matters).
        domains: per-row domain, shape ``[N]``.
        shots: the official ``NUM_SHOTS``.
        seed: non-negative seed.
        pool: candidate row positions; default all rows.

    Returns:
        Sorted row positions, repeats kept (``n_classes * n_domains * (shots // n_domains)`` of them).
    """
    labels, domains = np.asarray(labels), np.asarray(domains)
    candidates = np.arange(len(labels)) if pool is None else np.unique(np.asarray(pool, dtype=np.int64))
    if shots < 1 or seed < 0:
        raise ValueError(f"shots must be >= 1 and seed >= 0; got shots={shots}, seed={seed}.")
    domain_of = domains[candidates]
    unique_domains = sorted({_plain(d) for d in domain_of.tolist()}, key=str)
    per_domain = shots // max(len(unique_domains), 1)
    chosen = []
    for label in sorted({_plain(v) for v in labels[candidates].tolist()}, key=str):
        rng = np.random.default_rng([seed, zlib.crc32(repr(label).encode())])
        for domain in unique_domains:
            members = candidates[domain_of == domain]
            take = min(per_domain, len(members))
            chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).tolist() if chosen else []


def _groups(keys: list[np.ndarray], candidates: np.ndarray):
    """Yield ``(key tuple, member positions)`` per distinct key, in sorted key order."""
    codes = np.zeros(len(candidates), dtype=np.int64)
    uniques = []
    for values in keys:
        unique, inverse = np.unique(values, return_inverse=True)
        codes = codes * len(unique) + inverse
        uniques.append(unique)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        first = order[start]
        key = tuple(_plain(values[first]) for values in keys)
        yield key, candidates[order[start:end]]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
