"""Distances and rankings (numpy and numba, no torch).

A ranking orders the database for each query by distance, ascending; ties
go to the lower database index. Callers put the database in the split's
``db_order`` first, so the index is the seeded tie rank.

Packed-Hamming search runs in compiled kernels (numba, cached on disk) over
uint64 code words, the database transposed word-major (``db_t``, words x
codes) once per call so that every code width vectorises alike (see
``_fill_distances``). They are hand-written rather than taken from faiss:
faiss is not a runtime dependency, its binary top-k does not break ties by
database order, and it has no full ranking. Distances are integers
0..bits, so selection and ranking are by counting (a histogram per query),
never by sorting. ``threads`` is the number of threads a call may use
(a rule's ``threads:``); None means all cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from rshash import RshashError

QUERY_BLOCK = 16  # queries sharing one pass over a database chunk
CHUNK = 4096  # database codes per chunk: stays in L1/L2 while a query block scans it
SPAN = 256  # codes whose distances are computed (vectorised) before any is examined


@intrinsic
def _popcount(typingctx, x):
    """The LLVM ctpop intrinsic on a uint64 (one POPCNT instruction)."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)
    return types.int64(types.uint64), codegen


@njit(cache=True)
def _fill_distances(q, qi, db_t, start, stop, out, t):
    """out[:stop-start] = distances from query qi to database codes start..stop;
    returns how many are <= t. The database is word-major (``db_t[w, j]`` is word
    w of code j), so each pass reads one word of consecutive codes: contiguous
    loads that LLVM vectorises (SIMD popcount), a word per lane, whatever the
    code width. The count is a branch-free reduction fused into the last pass.
    Indices count up from 0 in a slice, so no negative-index wraparound check
    blocks vectorisation."""
    words = db_t.shape[0]
    n = stop - start
    x = q[qi, 0]
    b = db_t[0, start:stop]
    hits = 0
    if words == 1:
        for j in range(n):
            d = _popcount(x ^ b[j])
            out[j] = d
            hits += d <= t
        return hits
    for j in range(n):
        out[j] = _popcount(x ^ b[j])
    for w in range(1, words - 1):
        x = q[qi, w]
        b = db_t[w, start:stop]
        for j in range(n):
            out[j] += _popcount(x ^ b[j])
    x = q[qi, words - 1]
    b = db_t[words - 1, start:stop]
    for j in range(n):
        d = out[j] + _popcount(x ^ b[j])
        out[j] = d
        hits += d <= t
    return hits


@njit(cache=True)
def _all_distances(q, qi, db_t, out):
    """out[j] = distance from query qi to database code j, a CHUNK at a time (the
    chunk's slice of ``out`` stays in cache across the word passes)."""
    ndb = db_t.shape[1]
    for start in range(0, ndb, CHUNK):
        stop = min(start + CHUNK, ndb)
        _fill_distances(q, qi, db_t, start, stop, out[start:stop], 0)


@njit(parallel=True, cache=True)
def _topk_kernel(q, db_t, k, nbits, out_idx, out_dist):
    """Exact top-k per query by counting, in one pass over the database.

    Per query: ``counters[d]`` items kept at distance d, all of them below
    ``thres``; at ``thres`` up to k in database order. When k items lie
    strictly below ``thres`` it drops to the next non-empty distance
    (faiss's HCounterState scheme). Buckets fill in database order, so
    reading them by ascending distance gives the tie rule for free. Once
    the threshold is low, most runs of SPAN codes have no candidate at all
    and cost only the vectorised distance pass.
    """
    nq = q.shape[0]
    ndb = db_t.shape[1]
    nblocks = (nq + QUERY_BLOCK - 1) // QUERY_BLOCK
    for b in prange(nblocks):
        q0 = b * QUERY_BLOCK
        m = min(QUERY_BLOCK, nq - q0)
        counters = np.zeros((m, nbits + 1), np.int64)
        ids = np.empty((m, (nbits + 1) * k), np.int64)
        thres = np.full(m, nbits, np.int64)
        count_lt = np.zeros(m, np.int64)
        count_eq = np.zeros(m, np.int64)
        dist = np.empty(SPAN, np.int64)
        for chunk in range(0, ndb, CHUNK):
            chunk_stop = min(chunk + CHUNK, ndb)
            for i in range(m):
                t = thres[i]
                lt = count_lt[i]
                eq = count_eq[i]
                for start in range(chunk, chunk_stop, SPAN):
                    stop = min(start + SPAN, chunk_stop)
                    if _fill_distances(q, q0 + i, db_t, start, stop, dist, t) == 0:
                        continue
                    for jj in range(stop - start):
                        d = dist[jj]
                        if d < t:
                            ids[i, d * k + counters[i, d]] = start + jj
                            counters[i, d] += 1
                            lt += 1
                            while lt == k and t > 0:
                                t -= 1
                                eq = counters[i, t]
                                lt -= eq
                        elif d == t and eq < k:
                            ids[i, d * k + eq] = start + jj
                            eq += 1
                            counters[i, d] = eq
                thres[i] = t
                count_lt[i] = lt
                count_eq[i] = eq
        for i in range(m):
            n = 0
            for d in range(thres[i] + 1):
                for c in range(counters[i, d]):
                    if n < k:
                        out_idx[q0 + i, n] = ids[i, d * k + c]
                        out_dist[q0 + i, n] = d
                        n += 1


@njit(parallel=True, cache=True)
def _rank_kernel(q, db_t, nbits, out_idx, out_dist):
    """Full ranking per query: a counting sort of all distances (stable, so ties
    keep database order)."""
    nq = q.shape[0]
    ndb = db_t.shape[1]
    for qi in prange(nq):
        dist = np.empty(ndb, np.int64)
        _all_distances(q, qi, db_t, dist)
        start = np.zeros(nbits + 2, np.int64)
        for j in range(ndb):
            start[dist[j] + 1] += 1
        for d in range(1, nbits + 2):
            start[d] += start[d - 1]
        for j in range(ndb):
            d = dist[j]
            out_idx[qi, start[d]] = j
            out_dist[qi, start[d]] = d
            start[d] += 1


@njit(parallel=True, cache=True)
def _distance_kernel(q, db_t, out):
    """All distances, query blocks against database chunks."""
    nq = q.shape[0]
    ndb = db_t.shape[1]
    nblocks = (nq + QUERY_BLOCK - 1) // QUERY_BLOCK
    for b in prange(nblocks):
        q0 = b * QUERY_BLOCK
        m = min(QUERY_BLOCK, nq - q0)
        dist = np.empty(CHUNK, np.int64)
        for start in range(0, ndb, CHUNK):
            stop = min(start + CHUNK, ndb)
            for i in range(m):
                _fill_distances(q, q0 + i, db_t, start, stop, dist, 0)
                for jj in range(stop - start):
                    out[q0 + i, start + jj] = dist[jj]


def _as_words(packed: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, ceil(nbytes/8)) uint64, zero-padded."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2:
        raise ValueError(f"expected packed codes of shape (n, nbytes), got {packed.shape}")
    pad = -packed.shape[1] % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _words_pair(q_packed, db_packed):
    """The queries as (nq, words) uint64 and the database word-major, (words, ndb)
    (see ``_fill_distances``), after checking both have the same width."""
    if np.shape(q_packed)[1:] != np.shape(db_packed)[1:]:
        raise ValueError(f"code widths differ: {np.shape(q_packed)} vs {np.shape(db_packed)}")
    return _as_words(q_packed), np.ascontiguousarray(_as_words(db_packed).T)


def _run(threads: int | None, kernel, *args) -> None:
    """Call a parallel kernel on ``threads`` threads (None: all), then restore the count."""
    if threads is None:
        threads = numba.config.NUMBA_NUM_THREADS
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise RshashError(f"threads must be a positive integer, got {threads!r}")
    previous = numba.get_num_threads()
    numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)


def hamming_distances(q_packed: np.ndarray, db_packed: np.ndarray,
                      threads: int | None = 1) -> np.ndarray:
    """(nq, ndb) uint16 Hamming distances between packed codes."""
    q, db_t = _words_pair(q_packed, db_packed)
    out = np.empty((len(q), db_t.shape[1]), dtype=np.uint16)
    _run(threads, _distance_kernel, q, db_t, out)
    return out


def hamming_topk(q_packed: np.ndarray, db_packed: np.ndarray, k: int,
                 threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database codes per query: (indices int64, distances uint16),
    both (nq, min(k, ndb)), by distance then database index.

    One pass over the database per block of queries; memory is O(nq * k)
    whatever the database size. Equals ``hamming_rank(...)[:, :k]``.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    q, db_t = _words_pair(q_packed, db_packed)
    k = min(int(k), db_t.shape[1])
    idx = np.zeros((len(q), k), dtype=np.int64)
    dist = np.zeros((len(q), k), dtype=np.uint16)
    if k:
        _run(threads, _topk_kernel, q, db_t, k, 64 * q.shape[1], idx, dist)
    return idx, dist


def hamming_rank(q_packed: np.ndarray, db_packed: np.ndarray,
                 threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every database code ranked per query: (indices int64, distances uint16), both
    (nq, ndb), by distance then database index (a stable counting sort)."""
    q, db_t = _words_pair(q_packed, db_packed)
    idx = np.empty((len(q), db_t.shape[1]), dtype=np.int64)
    dist = np.empty((len(q), db_t.shape[1]), dtype=np.uint16)
    _run(threads, _rank_kernel, q, db_t, 64 * q.shape[1], idx, dist)
    return idx, dist


def euclidean_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """(nq, ndb) float64 Euclidean distances between real vectors."""
    q = np.asarray(q, dtype=np.float64)
    db = np.asarray(db, dtype=np.float64)
    # einsum: squared norms without an (n, dim) temporary
    sq = (np.einsum("ij,ij->i", q, q)[:, None] + np.einsum("ij,ij->i", db, db)[None, :]
          - 2.0 * (q @ db.T))
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


def rank_hamming(q_packed: np.ndarray, db_packed: np.ndarray,
                 threads: int | None = 1) -> np.ndarray:
    return hamming_rank(q_packed, db_packed, threads)[0]


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


@dataclass(frozen=True)
class Ranking:
    """A named ranking: the codes columns it reads and how it orders the database.

    ``function(*query_columns, *database_columns, **params)`` -> (nq, ndb) indices,
    where the columns are the :class:`rshash.codes.Codes` attributes in ``needs``.
    ``distances``, same arguments -> (nq, ndb) distances, for a ranking that is the
    ascending order of a distance matrix with ties by index (evaluation scores it
    without ordering the items, see rshash.scoring); without a ``function`` such a
    ranking orders by :func:`rank` of its distances.
    """

    name: str
    needs: tuple[str, ...]
    function: Callable[..., np.ndarray] | None = None
    params: tuple[str, ...] = ()
    distances: Callable[..., np.ndarray] | None = None

    def __post_init__(self):
        if self.function is None and self.distances is None:
            raise ValueError(f"ranking {self.name!r} needs a function or distances")


RANKINGS: dict[str, Ranking] = {r.name: r for r in (
    # the counting sort of rank_hamming is faster than rank() of the distances
    Ranking("hamming", ("packed",), rank_hamming, distances=hamming_distances),
    Ranking("euclidean", ("value",), distances=euclidean_distances),
    Ranking("coarse_to_fine", ("packed", "value"),
            lambda qp, qv, dp, dv, top_m=100: rank_coarse_to_fine(qp, dp, qv, dv, top_m),
            ("top_m",)),
    Ranking("category_weighted", ("packed", "class_prob"),
            distances=lambda qp, qc, dp, dc: category_weighted_distances(qp, dp, qc, dc)),
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
    if spec.function is None:
        return rank(_apply(spec, spec.distances, query, database, params))
    return _apply(spec, spec.function, query, database, params)


def distances(name: str, query: dict[str, np.ndarray], database: dict[str, np.ndarray],
              params: dict | None = None) -> np.ndarray:
    """(nq, ndb) distances whose ascending order, ties by index, is the named ranking
    (an error for a ranking that is not such an order, e.g. coarse_to_fine)."""
    spec = get_ranking(name)
    if spec.distances is None:
        raise RshashError(f"ranking {name!r} is not an order of distances")
    return _apply(spec, spec.distances, query, database, params)


def _apply(spec: Ranking, function, query: dict, database: dict, params: dict | None):
    params = dict(params or {})
    unknown = set(params) - set(spec.params)
    if unknown:
        raise RshashError(f"ranking {spec.name!r}: unknown parameter(s) {sorted(unknown)}; "
                          f"known: {list(spec.params) or 'none'}")
    missing = [c for c in spec.needs if query.get(c) is None or database.get(c) is None]
    if missing:
        raise RshashError(f"ranking {spec.name!r} needs the codes column(s) {missing}")
    return function(*(query[c] for c in spec.needs), *(database[c] for c in spec.needs),
                    **params)
