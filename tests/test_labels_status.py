"""Status vectors, status Hamming distance and the label-Hamming neighbours (self / same-study excluded, ties)."""

import numpy as np
import pytest

import revtaf.labels.status as status_mod
from revtaf.labels import hamming, hamming_neighbours, status_vector


def test_status_vector_is_one_hot_per_disease():
    labels = np.array([[0, 1, 2, 3] + [0] * 14, [3] * 18], dtype=np.int8)
    v = status_vector(labels)
    assert v.shape == (2, 72)
    assert (v.sum(axis=1) == 18).all()
    assert v[0, [0, 4 + 1, 8 + 2, 12 + 3]].tolist() == [1, 1, 1, 1]
    assert v[1, 3::4].sum() == 18


def test_hamming_counts_two_bits_per_disagreeing_disease():
    a = np.zeros((1, 18), dtype=np.int64)
    b = np.zeros((3, 18), dtype=np.int64)
    b[1, 0] = 1
    b[2, :5] = [1, 2, 3, 1, 2]
    d = hamming(a, b)
    assert d.tolist() == [[0, 2, 10]]
    # equal to the popcount of XOR of the status vectors
    xor = np.logical_xor(status_vector(a)[:, None], status_vector(b)[None]).sum(-1)
    np.testing.assert_array_equal(d, xor)


def test_neighbours_exclude_self_and_same_group_and_break_ties_by_index():
    labels = np.zeros((6, 18), dtype=np.int8)
    labels[:, 0] = [1, 1, 1, 2, 1, 3]
    # rows 0,1 are one study; 1, 2 and 4 are exact copies of row 0
    groups = ["s0", "s0", "s1", "s2", "s3", "s4"]
    nb = hamming_neighbours(labels, groups, k=2)
    assert nb.dtype == np.int64 and nb.shape == (6, 2)
    assert nb[0].tolist() == [2, 4]  # not itself, not row 1 (same study); tie 2/4 -> lowest first
    assert nb[2].tolist() == [0, 1]
    assert nb[3].tolist() == [0, 1]  # all others are at distance 2: lowest indices
    assert hamming_neighbours(labels, None, k=1)[0].tolist() == [1]  # without groups, row 1 is fair game


def test_neighbours_match_brute_force_when_chunked(monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(120, 18))
    labels[:, 4:] = 0  # few distinct rows, many ties
    groups = [f"study{i // 3}" for i in range(120)]
    monkeypatch.setattr(status_mod, "_BLOCK", 500)  # 4 rows per chunk
    nb = hamming_neighbours(labels, groups, k=3)
    d = hamming(labels, labels)
    for i in range(120):
        brute = sorted((d[i, j], j) for j in range(120) if groups[j] != groups[i])[:3]
        assert nb[i].tolist() == [j for _, j in brute]


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        status_vector(np.zeros(18, dtype=np.int8))
    with pytest.raises(ValueError):
        status_vector(np.full((2, 18), 4))
    with pytest.raises(TypeError):
        status_vector(np.zeros((2, 18)))
    with pytest.raises(ValueError):
        hamming(np.zeros((2, 18), int), np.zeros((2, 14), int))
    with pytest.raises(ValueError):
        hamming_neighbours(np.zeros((3, 18), int), ["a", "b"])
    with pytest.raises(ValueError):
        hamming_neighbours(np.zeros((3, 18), int), ["a", "a", "b"], k=2)  # rows 0 and 1 have one candidate
    with pytest.raises(ValueError):
        hamming_neighbours(np.zeros((3, 18), int), None, k=0)
