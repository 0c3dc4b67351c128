"""croft_core.data.benchmarks.sampling: seeded few-shot draws per class and per (class, domain)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from croft_core.data.benchmarks.sampling import few_shot_indices, official_balanced_indices


def _labels_domains(n_per_group=10, classes=4, domains=3):
    labels = np.repeat(np.arange(classes), n_per_group * domains)
    doms = np.tile(np.repeat([f"d{i}" for i in range(domains)], n_per_group), classes)
    return labels, doms


def test_few_shot_per_class_counts_and_determinism():
    labels, _ = _labels_domains()
    picked = few_shot_indices(labels, 5, seed=1)
    assert Counter(labels[picked].tolist()) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert picked == sorted(set(picked))  # sorted, no duplicates
    assert few_shot_indices(labels, 5, seed=1) == picked
    assert few_shot_indices(labels, 5, seed=2) != picked


def test_few_shot_per_class_domain_splits_the_budget():
    labels, doms = _labels_domains(domains=3)
    picked = few_shot_indices(labels, 16, seed=0, domains=doms)
    counts = Counter(zip(labels[picked].tolist(), doms[picked].tolist()))
    assert set(counts.values()) == {16 // 3} and len(counts) == 4 * 3  # 5 per (class, domain)
    with pytest.raises(ValueError, match="fewer than the 3 domains"):
        few_shot_indices(labels, 2, seed=0, domains=doms)


def test_few_shot_respects_pool_and_string_labels():
    labels = np.array(["b", "a", "b", "a", "b", "a"], dtype=object)
    pool = [0, 1, 2, 3]
    picked = few_shot_indices(labels, 1, seed=3, pool=pool)
    assert set(picked) <= set(pool) and sorted(labels[picked]) == ["a", "b"]


def test_few_shot_small_class_takes_all_with_warning(caplog):
    labels = np.array([0, 0, 0, 1])
    with caplog.at_level(logging.WARNING, logger="croft_core.data.benchmarks.sampling"):
        picked = few_shot_indices(labels, 2, seed=0)
    assert 3 in picked and len(picked) == 3
    assert "fewer than the 2 requested" in caplog.text


def test_few_shot_all_and_bad_shots():
    labels = np.array([0, 1, 1])
    assert few_shot_indices(labels, None, seed=0) == [0, 1, 2]
    assert few_shot_indices(labels, -1, seed=0, pool=[2, 0]) == [0, 2]
    with pytest.raises(ValueError, match="shots must be >= 1"):
        few_shot_indices(labels, 0, seed=0)


def test_few_shot_groups_are_independent():
    # A class's draw depends only on the seed and its own rows, not on which other classes exist.
    labels, _ = _labels_domains(classes=3)
    picked_all = few_shot_indices(labels, 4, seed=7)
    picked_sub = few_shot_indices(labels, 4, seed=7, pool=np.flatnonzero(labels != 2))
    assert [i for i in picked_all if labels[i] != 2] == picked_sub


def test_official_balanced_draw_ignores_the_class():
    # The official PACS sampler: per class iteration, shots // n_domains images per domain of ANY
    # class (CROFT_SPEC §5 item 12): 7 classes x 3 domains x 5 = 105 rows, repeats allowed.
    labels, doms = _labels_domains(n_per_group=10, classes=7, domains=3)
    picked = official_balanced_indices(labels, doms, 16, seed=1)
    assert len(picked) == 7 * 3 * 5 and picked == sorted(picked)
    assert Counter(doms[picked].tolist()) == {"d0": 35, "d1": 35, "d2": 35}
    assert len(set(picked)) < len(picked)  # the same image drawn for several class iterations
    assert official_balanced_indices(labels, doms, 16, seed=1) == picked
    assert official_balanced_indices(labels, doms, 16, seed=2) != picked
    with pytest.raises(ValueError, match="shots must be >= 1"):
        official_balanced_indices(labels, doms, 0, seed=1)
