"""Splitting an image folder: seeded, stratified where the classes allow it, never crashing."""

from __future__ import annotations

import numpy as np

from search.tasks.images import _split


def test_splits_are_seeded_disjoint_and_stratified():
    labels = [i % 3 for i in range(300)]
    rest, val, test = _split(labels, 1, (0.1, 0.1))
    assert sorted(rest + val + test) == list(range(300))
    assert len(val) == 30 and len(test) == 30
    for part in (val, test):
        assert np.bincount(np.asarray(labels)[part]).tolist() == [10, 10, 10]
    assert _split(labels, 1, (0.1, 0.1)) == [rest, val, test]
    assert _split(labels, 2, (0.1, 0.1)) != [rest, val, test]


def test_folders_too_small_to_stratify_still_split():
    few = list(np.random.default_rng(0).integers(0, 10, 30))  # classes with one image
    rest, val = _split(few, 0, (0.1,))
    assert len(val) == 3 and sorted(rest + val) == list(range(30))
    assert _split([0], 0, (0.1, 0.1)) == [[0], [], []]  # the caller reports the empty parts
    assert [len(p) for p in _split([-1] * 5, 0, (0.2, 0.2))] == [3, 1, 1]  # unlabeled
