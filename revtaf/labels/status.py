"""Disease-status vectors and the label-Hamming neighbours the LRE ranking loss is trained on (docs/method.md §5, §13.3).

A report's 18 labels x 4 states become a 72-dim one-hot status vector. Two reports are as far apart as the
number of bits their status vectors differ in: every disease whose state differs flips two bits.
"""

from __future__ import annotations

import numpy as np

from revtaf.labels.constants import STATES

N_STATES = len(STATES)
# Bound on the [chunk, n] distance block of `hamming_neighbours` (elements), ~128 MB of float32.
_BLOCK = 1 << 25


def _check_labels(labels, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be [n, diseases], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must hold integer states, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= N_STATES):
        raise ValueError(f"{name} states must be in 0..{N_STATES - 1}, got {labels.min()}..{labels.max()}")
    return labels


def status_vector(labels) -> np.ndarray:
    """labels int [n, D] in 0..3 -> one-hot float32 [n, 4D]; disease d, state s sits at column 4d + s."""
    labels = _check_labels(labels)
    n, d = labels.shape
    out = np.zeros((n, d * N_STATES), dtype=np.float32)
    out[np.arange(n)[:, None], np.arange(d) * N_STATES + labels] = 1.0
    return out


def hamming(a, b) -> np.ndarray:
    """Hamming distance of status vectors: a int [n, D], b int [m, D] -> int32 [n, m] = 2 x (#diseases differing)."""
    a, b = _check_labels(a, "a"), _check_labels(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same number of diseases, got {a.shape[1]} and {b.shape[1]}")
    return _distance(status_vector(a), status_vector(b), a.shape[1])


def _distance(sa: np.ndarray, sb: np.ndarray, d: int) -> np.ndarray:
    # One-hot dot product = number of diseases in the same state; the other d - agree differ in 2 bits each.
    agree = sa @ sb.T
    return (2 * (d - np.rint(agree))).astype(np.int32)


def hamming_neighbours(labels, groups: list[str] | None = None, k: int = 1) -> np.ndarray:
    """Indices of each row's k nearest rows by status Hamming distance -> int64 [n, k], nearest first.

    A row never picks itself, nor any row of its own group (e.g. the other images of the same study) when
    `groups` (length n) is given. Ties go to the lowest index. Computed in row chunks, so n can be large.
    """
    labels = _check_labels(labels)
    n, d = labels.shape
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} rows")
        _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        eligible = n - np.bincount(codes)[codes]  # rows outside each row's group
    else:
        codes = None
        eligible = np.full(n, n - 1)
    if n and eligible.min() < k:
        raise ValueError(f"row {int(eligible.argmin())} has only {int(eligible.min())} candidate neighbours, k={k}")

    status = status_vector(labels)
    chunk = max(1, _BLOCK // max(n, 1))
    out = np.empty((n, k), dtype=np.int64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        rows = np.arange(hi - lo)
        # Most diseases in the same state = smallest distance; argmax takes the first maximum, i.e. the lowest
        # index among ties. Excluded rows get -1, below any real agreement count.
        agree = status[lo:hi] @ status.T
        agree[rows, rows + lo] = -1
        if codes is not None:
            agree[codes[lo:hi, None] == codes[None, :]] = -1
        for j in range(k):
            out[lo:hi, j] = best = agree.argmax(axis=1)
            agree[rows, best] = -1
    return out
