"""Distances and rankings (numpy only, no torch).

A ranking orders the database for each query by distance, ascending; ties
go to the lower database index. Callers put the database in the split's
``db_order`` first, so the index is the seeded tie rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def rank_coarse_to_fine(q_packed: np.ndarray, db_packed: np.ndarray, q_value: np.ndarray,
                        db_value: np.ndarray, top_m: int = 100) -> np.ndarray:
    """DMCH+: the top ``top_m`` by Hamming distance re-ranked by the Euclidean
    distance of the pre-binarization values; the rest keep their Hamming order.

    Ties in the Euclidean stage keep the Hamming order (itself tied by index).
    """
    if top_m < 1:
        raise RshashError(f"coarse_to_fine: top_m must be positive, got {top_m}")
    coarse = rank_hamming(q_packed, db_packed)
    m = min(int(top_m), coarse.shape[1])
    head = coarse[:, :m]
    q_value = np.asarray(q_value, dtype=np.float64)
    diff = np.asarray(db_value, dtype=np.float64)[head] - q_value[:, None, :]
    fine = np.einsum("qmk,qmk->qm", diff, diff)
    head = np.take_along_axis(head, np.argsort(fine, axis=1, kind="stable"), axis=1)
    return np.concatenate([head, coarse[:, m:]], axis=1)


def category_weighted_distances(q_packed: np.ndarray, db_packed: np.ndarray,
                                q_prob: np.ndarray, db_prob: np.ndarray) -> np.ndarray:
    """DAH: Hamming distance x exp(1 - p_i(c_q)), where c_q is the query's predicted
    class (argmax of its class probabilities) and p_i(c_q) the database item's
    probability of that class."""
    predicted = np.argmax(np.asarray(q_prob), axis=1)
    p = np.asarray(db_prob, dtype=np.float64)[:, predicted].T  # (nq, ndb)
    return hamming_distances(q_packed, db_packed) * np.exp(1.0 - p)


def rank_category_weighted(q_packed, db_packed, q_prob, db_prob) -> np.ndarray:
    return rank(category_weighted_distances(q_packed, db_packed, q_prob, db_prob))


@dataclass(frozen=True)
class Ranking:
    """A named ranking: the codes columns it reads and the function ordering the database.

    ``function(*query_columns, *database_columns, **params)`` -> (nq, ndb) indices,
    where the columns are the :class:`rshash.codes.Codes` attributes in ``needs``.
    """

    name: str
    needs: tuple[str, ...]
    function: Callable[..., np.ndarray]
    params: tuple[str, ...] = ()


RANKINGS: dict[str, Ranking] = {r.name: r for r in (
    Ranking("hamming", ("packed",), rank_hamming),
    Ranking("euclidean", ("value",), rank_euclidean),
    Ranking("coarse_to_fine", ("packed", "value"),
            lambda qp, qv, dp, dv, top_m=100: rank_coarse_to_fine(qp, dp, qv, dv, top_m),
            ("top_m",)),
    Ranking("category_weighted", ("packed", "class_prob"),
            lambda qp, qc, dp, dc: rank_category_weighted(qp, dp, qc, dc)),
)}


def get_ranking(name: str) -> Ranking:
    try:
        return RANKINGS[name]
    except KeyError:
        raise RshashError(f"unknown ranking {name!r}; known: {', '.join(RANKINGS)}") from None


def order(name: str, query: dict[str, np.ndarray], database: dict[str, np.ndarray],
          params: dict | None = None) -> np.ndarray:
    """(nq, ndb) database indices ranked for each query by the named ranking.

    ``query`` and ``database`` map the ranking's needed columns to arrays;
    the database is in tie order (the split's ``db_order``).
    """
    spec = get_ranking(name)
    params = dict(params or {})
    unknown = set(params) - set(spec.params)
    if unknown:
        raise RshashError(f"ranking {name!r}: unknown parameter(s) {sorted(unknown)}; "
                          f"known: {list(spec.params) or 'none'}")
    missing = [c for c in spec.needs if query.get(c) is None or database.get(c) is None]
    if missing:
        raise RshashError(f"ranking {name!r} needs the codes column(s) {missing}")
    return spec.function(*(query[c] for c in spec.needs),
                         *(database[c] for c in spec.needs), **params)
