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

import json

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
def all_distances(q, qi, db_t, out):
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
    for b in prange((nq + QUERY_BLOCK - 1) // QUERY_BLOCK):
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
def _rank_kernel(q, db_t, nbits, out_idx, out_dist):
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
def _distance_kernel(q, db_t, out):
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
def _range_count_kernel(q, db_t, radius, counts):
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
def _range_fill_kernel(q, db_t, radius, lims, out_idx, out_dist):
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


INDEX_MAGIC = b"RSHASH-BINARY-INDEX\n"
_INDEX_HEADER = 512  # bytes before the words: magic, a JSON line, the digest slot


class BinaryIndex:
    """Exact Hamming search over binary codes, shaped like faiss's ``IndexBinaryFlat``.

    ``d`` is the code length in bits (a multiple of 8). :meth:`add` appends packed
    codes, (n, d/8) uint8 in numpy ``packbits`` order (the codes Parquet's ``code``
    column); they get ids ``ntotal..ntotal+n-1``, and ids are also the tie order.
    The codes are held word-major (``words_t``, (words, ntotal) uint64), converted
    once when added, which is what every compiled pass reads.

    * :meth:`search` ``(q, k) -> (D, I)``: D int32 and I int64, (nq, k), nearest
      first, ties by id; past ``ntotal`` padded with D = INT32_MAX, I = -1 (faiss's
      padding).
    * :meth:`range_search` ``(q, radius) -> (lims, D, I)``: every code at distance
      < radius (faiss's convention); query i's are ``D[lims[i]:lims[i+1]]``, here in
      (distance, id) order.
    * :meth:`rank` (every code ranked) and :meth:`distances` (the full matrix).
    * :meth:`write` / :func:`read_binary_index` (memory-mapped, digest checked).

    ``threads`` per call: the compiled passes' threads (None: all cores).
    Hand-written rather than faiss: faiss is not a runtime dependency and its
    binary top-k does not break ties by id (benchmarks/search.py compares them).
    """

    def __init__(self, d: int):
        if not isinstance(d, (int, np.integer)) or d <= 0 or d % 8:
            raise RshashError(f"code length must be a positive multiple of 8 bits, got {d!r}")
        self.d = int(d)
        self.code_size = self.d // 8
        self.words = -(-self.code_size // 8)
        self._parts: list[np.ndarray] = []
        self._words_t = np.zeros((self.words, 0), dtype=np.uint64)

    @property
    def ntotal(self) -> int:
        return self._words_t.shape[1] + sum(p.shape[1] for p in self._parts)

    def __len__(self) -> int:
        return self.ntotal

    def _check(self, codes, what: str) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise ValueError(
                f"{what} must be packed codes of shape (n, {self.code_size}) "
                f"uint8 for {self.d} bits, got {codes.shape} {codes.dtype}"
            )
        return codes

    def add(self, codes) -> BinaryIndex:
        """Append packed codes (converted to words once)."""
        codes = self._check(codes, "codes")
        self._parts.append(np.ascontiguousarray(as_words(codes).T))
        return self

    @property
    def words_t(self) -> np.ndarray:
        """The codes word-major, (words, ntotal) uint64 (read-only)."""
        if self._parts:
            self._words_t = np.ascontiguousarray(
                np.concatenate([self._words_t, *self._parts], axis=1)
            )
            self._parts = []
            self._words_t.flags.writeable = False
        return self._words_t

    def reconstruct_n(self, i0: int = 0, n: int | None = None) -> np.ndarray:
        """Packed codes i0..i0+n-1, (n, d/8) uint8."""
        block = self.words_t[:, i0 : None if n is None else i0 + n]
        return np.ascontiguousarray(block.T).view(np.uint8)[:, : self.code_size]

    def query_words(self, q) -> np.ndarray:
        """Packed queries as (nq, words) uint64, checked against the code length."""
        return as_words(self._check(q, "queries"))

    def search(self, q, k: int, threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        qw, db_t = self.query_words(q), self.words_t
        kk = min(int(k), db_t.shape[1])
        idx = np.full((len(qw), int(k)), -1, dtype=np.int64)
        dist = np.full((len(qw), int(k)), np.iinfo(np.int32).max, dtype=np.int32)
        if kk and len(qw):
            i, d = np.zeros((len(qw), kk), np.int64), np.zeros((len(qw), kk), np.uint16)
            run_parallel(threads, _topk_kernel, qw, db_t, kk, 64 * self.words, i, d)
            idx[:, :kk], dist[:, :kk] = i, d
        return dist, idx

    def range_search(self, q, radius: int, threads: int | None = 1):
        if not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        qw, db_t = self.query_words(q), self.words_t
        radius = min(int(radius), self.d + 1)
        counts = np.zeros(len(qw), dtype=np.int64)
        if radius > 0 and db_t.shape[1]:
            run_parallel(threads, _range_count_kernel, qw, db_t, radius, counts)
        lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        idx = np.empty(lims[-1], dtype=np.int64)
        dist = np.empty(lims[-1], dtype=np.int32)
        if lims[-1]:
            run_parallel(threads, _range_fill_kernel, qw, db_t, radius, lims, idx, dist)
        return lims, dist, idx

    def rank(self, q, threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
        """Every code ranked per query: (D uint16, I int64), both (nq, ntotal)."""
        qw, db_t = self.query_words(q), self.words_t
        idx = np.empty((len(qw), db_t.shape[1]), dtype=np.int64)
        dist = np.empty((len(qw), db_t.shape[1]), dtype=np.uint16)
        run_parallel(threads, _rank_kernel, qw, db_t, 64 * self.words, idx, dist)
        return dist, idx

    def distances(self, q, threads: int | None = 1) -> np.ndarray:
        """(nq, ntotal) uint16 Hamming distances."""
        qw, db_t = self.query_words(q), self.words_t
        out = np.empty((len(qw), db_t.shape[1]), dtype=np.uint16)
        run_parallel(threads, _distance_kernel, qw, db_t, out)
        return out

    def write(self, path) -> None:
        """Save atomically: a 512-byte header (magic, JSON, digest slot), then the words."""
        from rshash.digest import PLACEHOLDER, write_sealed

        words_t = self.words_t
        meta = json.dumps(
            {
                "d": self.d,
                "ntotal": int(words_t.shape[1]),
                "words": self.words,
                "byteorder": "little",
            }
        ).encode()
        header = INDEX_MAGIC + meta + b"\n" + PLACEHOLDER.encode()
        if len(header) > _INDEX_HEADER:
            raise AssertionError("binary index header too long")

        def write(tmp):
            with open(tmp, "wb") as fh:
                fh.write(header.ljust(_INDEX_HEADER, b"\0"))
                fh.write(np.ascontiguousarray(words_t, dtype="<u8").tobytes())

        write_sealed(path, write)


def read_binary_index(path, mmap: bool = True) -> BinaryIndex:
    """Load an index written by :meth:`BinaryIndex.write` (its digest checked first),
    the words memory-mapped unless ``mmap`` is False."""
    from rshash.digest import verify

    verify(path, "binary index")
    with open(path, "rb") as fh:
        head = fh.read(_INDEX_HEADER)
    try:
        if not head.startswith(INDEX_MAGIC):
            raise ValueError("no rshash binary index magic")
        meta = json.loads(head[len(INDEX_MAGIC) :].split(b"\n", 1)[0])
        index = BinaryIndex(meta["d"])
        shape = (index.words, int(meta["ntotal"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RshashError(f"{path}: not a readable binary index ({exc})") from None
    if mmap and shape[1]:
        words_t = np.memmap(path, dtype="<u8", mode="r", offset=_INDEX_HEADER, shape=shape)
    else:
        with open(path, "rb") as fh:
            fh.seek(_INDEX_HEADER)
            words_t = np.frombuffer(fh.read(), dtype="<u8").reshape(shape).copy()
    index._words_t = words_t
    return index


def as_index(codes) -> BinaryIndex:
    """``codes`` if it is a BinaryIndex, else a BinaryIndex of these packed codes."""
    if isinstance(codes, BinaryIndex):
        return codes
    codes = np.asarray(codes, dtype=np.uint8)
    return BinaryIndex(8 * codes.shape[1]).add(codes)


def hamming_distances(
    q_packed: np.ndarray, db_packed: np.ndarray, threads: int | None = 1
) -> np.ndarray:
    """(nq, ndb) uint16 Hamming distances between packed codes."""
    return as_index(db_packed).distances(q_packed, threads)


def hamming_topk(
    q_packed: np.ndarray, db_packed: np.ndarray, k: int, threads: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database codes per query: (indices int64, distances uint16),
    both (nq, min(k, ndb)), by distance then database index.

    One pass over the database per block of queries; memory is O(nq * k)
    whatever the database size. Equals ``hamming_rank(...)[:, :k]``.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    db = as_index(db_packed)
    k = min(int(k), db.ntotal)
    if not k:
        return np.zeros((len(q_packed), 0), np.int64), np.zeros((len(q_packed), 0), np.uint16)
    dist, idx = db.search(q_packed, k, threads)
    return idx, dist.astype(np.uint16)


def hamming_rank(
    q_packed: np.ndarray, db_packed: np.ndarray, threads: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Every database code ranked per query: (indices int64, distances uint16), both
    (nq, ndb), by distance then database index (a stable counting sort)."""
    dist, idx = as_index(db_packed).rank(q_packed, threads)
    return idx, dist


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
