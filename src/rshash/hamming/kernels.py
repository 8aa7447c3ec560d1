"""The compiled Hamming kernels (numba, cached on disk; no torch).

They run over uint64 code words, the database transposed word-major (``db_t``,
words x codes) once per call so that every code width vectorises alike (see
``_fill_distances``). They are hand-written rather than taken from faiss: faiss is
not a runtime dependency, its binary top-k does not break ties by database order,
and it has no full ranking. Distances are integers 0..bits, so selection and
ranking are by counting (a histogram per query), never by sorting. Ties go to the
lower database index. ``threads`` is the number of threads a call may use (a
rule's ``threads:``); None means all cores.
"""

from __future__ import annotations

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
def popcount(typingctx, x):
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
            d = popcount(x ^ b[j])
            out[j] = d
            hits += d <= t
        return hits
    for j in range(n):
        out[j] = popcount(x ^ b[j])
    for w in range(1, words - 1):
        x = q[qi, w]
        b = db_t[w, start:stop]
        for j in range(n):
            out[j] += popcount(x ^ b[j])
    x = q[qi, words - 1]
    b = db_t[words - 1, start:stop]
    for j in range(n):
        d = out[j] + popcount(x ^ b[j])
        out[j] = d
        hits += d <= t
    return hits


@njit(cache=True)
def all_distances(q, qi, db_t, out):
    """out[j] = distance from query qi to database code j, a CHUNK at a time (the
    chunk's slice of ``out`` stays in cache across the word passes)."""
    ndb = db_t.shape[1]
    for start in range(0, ndb, CHUNK):
        stop = min(start + CHUNK, ndb)
        _fill_distances(q, qi, db_t, start, stop, out[start:stop], 0)


@njit(nogil=True, cache=True)
def _topk_block(q, db_t, k, nbits, out_idx, out_dist, b):
    """Exact top-k by counting for query block b (queries b*QUERY_BLOCK..), in one
    pass over the database.

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
    q0, m = b * QUERY_BLOCK, min(QUERY_BLOCK, nq - b * QUERY_BLOCK)
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
def topk_kernel(q, db_t, k, nbits, out_idx, out_dist):
    """Exact top-k per query (:func:`_topk_block`), threads over query blocks."""
    for b in prange((q.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK):
        _topk_block(q, db_t, k, nbits, out_idx, out_dist, b)


@njit(nogil=True, cache=True)
def topk_serial(q, db_t, k, nbits, out_idx, out_dist):
    """:func:`topk_kernel` on the calling thread with the GIL released: one thread
    needs no parallel launch, and shards search side by side in Python threads."""
    for b in range((q.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK):
        _topk_block(q, db_t, k, nbits, out_idx, out_dist, b)


@njit(parallel=True, cache=True)
def rank_kernel(q, db_t, nbits, out_idx, out_dist):
    """Full ranking per query: a counting sort of all distances (stable, so ties
    keep database order)."""
    nq = q.shape[0]
    ndb = db_t.shape[1]
    for qi in prange(nq):
        dist = np.empty(ndb, np.int64)
        all_distances(q, qi, db_t, dist)
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
def distance_kernel(q, db_t, out):
    """All distances, query blocks against database chunks."""
    nq = q.shape[0]
    ndb = db_t.shape[1]
    for b in prange((nq + QUERY_BLOCK - 1) // QUERY_BLOCK):
        q0, m = b * QUERY_BLOCK, min(QUERY_BLOCK, nq - b * QUERY_BLOCK)
        dist = np.empty(CHUNK, np.int64)
        for start in range(0, ndb, CHUNK):
            stop = min(start + CHUNK, ndb)
            for i in range(m):
                _fill_distances(q, q0 + i, db_t, start, stop, dist, 0)
                for jj in range(stop - start):
                    out[q0 + i, start + jj] = dist[jj]


def as_words(packed: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, ceil(nbytes/8)) uint64, zero-padded."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2:
        raise ValueError(f"expected packed codes of shape (n, nbytes), got {packed.shape}")
    pad = -packed.shape[1] % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def run_parallel(threads: int | None, kernel, *args) -> None:
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


@njit(parallel=True, cache=True)
def range_count_kernel(q, db_t, radius, counts):
    nq = q.shape[0]
    ndb = db_t.shape[1]
    for qi in prange(nq):
        dist = np.empty(min(CHUNK, ndb), np.int64)
        n = 0
        for start in range(0, ndb, CHUNK):
            stop = min(start + CHUNK, ndb)
            n += _fill_distances(q, qi, db_t, start, stop, dist, radius - 1)
        counts[qi] = n


@njit(parallel=True, cache=True)
def range_fill_kernel(q, db_t, radius, lims, out_idx, out_dist):
    """Per query, the items at distance < radius in (distance, index) order: a counting
    sort of the distances below the radius into the query's slice lims[qi]:lims[qi+1]."""
    nq = q.shape[0]
    ndb = db_t.shape[1]
    for qi in prange(nq):
        if lims[qi + 1] == lims[qi]:
            continue
        dist = np.empty(ndb, np.int64)
        all_distances(q, qi, db_t, dist)
        start = np.zeros(radius + 1, np.int64)
        for j in range(ndb):
            if dist[j] < radius:
                start[dist[j] + 1] += 1
        for d in range(1, radius + 1):
            start[d] += start[d - 1]
        base = lims[qi]
        for j in range(ndb):
            d = dist[j]
            if d < radius:
                out_idx[base + start[d]] = j
                out_dist[base + start[d]] = d
                start[d] += 1
