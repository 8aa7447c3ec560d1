"""Distances and rankings (numpy only, no torch).

A ranking orders the database for each query by distance, ascending; ties
go to the lower database index. Callers put the database in the split's
``db_order`` first, so the index is the seeded tie rank.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rshash import RshashError


def _as_words(packed: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, ceil(nbytes/8)) uint64, zero-padded."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2:
        raise ValueError(f"expected packed codes of shape (n, nbytes), got {packed.shape}")
    pad = -packed.shape[1] % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming_distances(q_packed: np.ndarray, db_packed: np.ndarray,
                      block: int = 1024) -> np.ndarray:
    """(nq, ndb) uint16 Hamming distances between packed codes.

    XOR and popcount on 64-bit words, ``block`` queries at a time, so the
    temporary memory is ``block * ndb`` words.
    """
    if np.shape(q_packed)[1:] != np.shape(db_packed)[1:]:
        raise ValueError(f"code widths differ: {np.shape(q_packed)} vs {np.shape(db_packed)}")
    q = _as_words(q_packed)
    db_t = np.ascontiguousarray(_as_words(db_packed).T)  # (words, ndb)
    out = np.zeros((len(q), db_t.shape[1]), dtype=np.uint16)
    for start in range(0, len(q), block):
        acc = out[start:start + block]
        for w, db_word in enumerate(db_t):
            acc += np.bitwise_count(q[start:start + block, w, None] ^ db_word)
    return out


def euclidean_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """(nq, ndb) float64 Euclidean distances between real vectors."""
    q = np.asarray(q, dtype=np.float64)
    db = np.asarray(db, dtype=np.float64)
    sq = (q * q).sum(1)[:, None] + (db * db).sum(1)[None, :] - 2.0 * (q @ db.T)
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


def rank_hamming(q_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    return rank(hamming_distances(q_packed, db_packed))


def rank_euclidean(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    return rank(euclidean_distances(q, db))


# ranking name -> (the codes column it reads, function(query, database) -> order)
RANKINGS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "hamming": ("packed", rank_hamming),
    "euclidean": ("value", rank_euclidean),
}


def _lookup(name: str):
    try:
        return RANKINGS[name]
    except KeyError:
        raise RshashError(f"unknown ranking {name!r}; known: {', '.join(RANKINGS)}") from None


def ranking_input(name: str) -> str:
    """The :class:`rshash.codes.Codes` attribute a ranking reads (``packed``, ``value``)."""
    return _lookup(name)[0]


def order(name: str, query: np.ndarray, database: np.ndarray) -> np.ndarray:
    """(nq, ndb) database indices ranked for each query by the named ranking."""
    return _lookup(name)[1](query, database)
