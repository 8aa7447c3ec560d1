"""Real-valued distances and full orders (numpy, no torch): what the Euclidean
rankings and the plain references of the tests use.

A ranking orders the database for each query by distance, ascending; ties go to
the lower database index. Callers put the database in the split's ``db_order``
first, so the index is the seeded tie rank.
"""

from __future__ import annotations

import numpy as np


def euclidean_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """(nq, ndb) float64 Euclidean distances between real vectors."""
    q = np.asarray(q, dtype=np.float64)
    db = np.asarray(db, dtype=np.float64)
    # einsum: squared norms without an (n, dim) temporary
    sq = (
        np.einsum("ij,ij->i", q, q)[:, None]
        + np.einsum("ij,ij->i", db, db)[None, :]
        - 2.0 * (q @ db.T)
    )
    np.maximum(sq, 0.0, out=sq)
    return np.sqrt(sq, out=sq)


def rank(distances: np.ndarray) -> np.ndarray:
    """Per row, column indices by distance ascending, ties by index ascending."""
    return np.argsort(distances, axis=1, kind="stable")


def topk(distances: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` columns of :func:`rank`, without a full sort.

    Selects the k smallest per row (at the k-th distance, the lowest
    indices), then orders them stably; identical to ``rank(d)[:, :k]``.
    """
    distances = np.asarray(distances)
    nq, ndb = distances.shape
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if k >= ndb:
        return rank(distances)
    kth = np.partition(distances, k - 1, axis=1)[:, k - 1, None]
    below = distances < kth
    at = distances == kth
    need = k - below.sum(1, keepdims=True)
    chosen = below | (at & (np.cumsum(at, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(nq, k)  # ascending index per row
    order = np.argsort(np.take_along_axis(distances, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)
