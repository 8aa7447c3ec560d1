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
def _topk_kernel(q, db_t, k, nbits, out_idx, out_dist):
    """Exact top-k per query (:func:`_topk_block`), threads over query blocks."""
    for b in prange((q.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK):
        _topk_block(q, db_t, k, nbits, out_idx, out_dist, b)


@njit(nogil=True, cache=True)
def _topk_serial(q, db_t, k, nbits, out_idx, out_dist):
    """:func:`_topk_kernel` on the calling thread with the GIL released: one thread
    needs no parallel launch, and shards search side by side in Python threads."""
    for b in range((q.shape[0] + QUERY_BLOCK - 1) // QUERY_BLOCK):
        _topk_block(q, db_t, k, nbits, out_idx, out_dist, b)


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
INDEX_FORMAT = 2  # 1: the words alone (no "format" key); 2: the words, then any MIH tables
ENGINES = ("auto", "flat", "mih")
MIH_MIN_BITS = 32  # below this a flat scan reads fewer bytes than the tables' ids
MIH_MIN_CODES = 1 << 18  # below this a flat scan (under 0.1 ms at 64 bits) is hard to beat
MIH_MAX_K_FRACTION = 1 / 64  # k past ntotal * this: most tables' buckets get read anyway
# The auto engine's budget per query: a multi-index search gives up (and the query is
# scanned flat) once its bucket lookups plus codes read pass MIH_BUDGET_FRACTION of
# a flat scan's cost, counting one random read of a code as FLAT_PER_RANDOM_READ
# codes scanned per 64-bit word (measured with benchmarks/search_scale.py on the
# 2-core machine of the README figures: about 0.3 to 0.5 ns per word scanned, 50 to
# 150 ns per random read).
FLAT_PER_RANDOM_READ = 128
MIH_BUDGET_FRACTION = 0.25
AUTO_PROBE = 16  # queries of a batch searched by MIH before the rest follow their lead
AUTO_BACKOFF = 64  # single queries sent straight to the flat scan when most MIH give up
_NO_BUDGET = np.int64(1) << 62


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
    * :meth:`remove_ids` (faiss's: the rest are renumbered down, in order).
    * :meth:`write` / :func:`read_binary_index` (memory-mapped, digest checked).

    Two engines give the same answers (ids, distances and tie order): the flat scan
    reads every code; multi-index hashing (:mod:`rshash.mih`) reads a fraction of
    them through tables built once (on the first search that uses them, or on
    :meth:`write`, which saves them). ``engine``: ``"flat"``, ``"mih"`` or
    ``"auto"`` (the default): auto scans flat below MIH_MIN_BITS bits or
    MIH_MIN_CODES codes or when k is past MIH_MAX_K_FRACTION of them, else searches
    the tables with a budget of about MIH_BUDGET_FRACTION of a flat scan's cost per
    query, and scans flat the queries that run past it (uniform random codes, or a
    query far from every other code); when most recent single queries gave up, the
    next AUTO_BACKOFF go straight to the flat scan, and a batch follows its first
    AUTO_PROBE queries. :attr:`stats` says what the last search did and what the
    tables cost. Codes added after the tables were built are read directly by every
    multi-index search until they pass an eighth of the indexed ones (then the tables
    are rebuilt); removals update the tables in one pass.

    ``threads`` per call: the compiled passes' threads (None: all cores).
    Hand-written rather than faiss: faiss is not a runtime dependency and its
    binary top-k does not break ties by id (benchmarks/search.py compares them).
    """

    def __init__(self, d: int, engine: str = "auto"):
        if not isinstance(d, (int, np.integer)) or d <= 0 or d % 8:
            raise RshashError(f"code length must be a positive multiple of 8 bits, got {d!r}")
        self.d = int(d)
        self.code_size = self.d // 8
        self.words = -(-self.code_size // 8)
        self._parts: list[np.ndarray] = []
        self._words_t = np.zeros((self.words, 0), dtype=np.uint64)
        self.engine = engine
        self._tables = None  # rshash.mih.Tables of ids 0..ntab-1, or None
        self._backoff = 0  # single queries left to scan flat without trying MIH (auto)
        self._gave_up = 0.0  # recent fraction of single MIH queries that gave up (auto)
        self._last: dict = {}

    @property
    def engine(self) -> str:
        """``"auto"``, ``"flat"`` or ``"mih"``: which search :meth:`search` and
        :meth:`range_search` use (settable at any time; answers are the same)."""
        return self._engine

    @engine.setter
    def engine(self, value: str) -> None:
        if value not in ENGINES:
            raise RshashError(f"unknown search engine {value!r}; known: {', '.join(ENGINES)}")
        self._engine = value

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
        """Append packed codes (converted to words once; tables, if built, keep
        covering the earlier ids, and searches read the new ones directly)."""
        codes = self._check(codes, "codes")
        self._parts.append(np.ascontiguousarray(as_words(codes).T))
        return self

    def remove_ids(self, ids) -> int:
        """Remove the codes of these ids (ids not in the index are ignored); returns how
        many were removed. As faiss's ``remove_ids`` on a flat index, the remaining codes
        are renumbered: they keep their order and take ids 0..ntotal-1, so a code's id
        falls by the number of removed ids below it (a caller keeping its own id map
        drops the same rows). The tables are updated in one pass, not rebuilt."""
        from rshash import mih

        words_t = self.words_t
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        ids = ids[(ids >= 0) & (ids < words_t.shape[1])]
        if not len(ids):
            return 0
        keep = np.ones(words_t.shape[1], bool)
        keep[ids] = False
        self._words_t = np.ascontiguousarray(words_t[:, keep])
        self._words_t.flags.writeable = False
        if self._tables is not None:
            new_id = np.where(keep, np.cumsum(keep) - 1, -1)
            self._tables = _readonly(mih.compact(self._tables, new_id))
        return len(ids)

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

    # --- multi-index tables ------------------------------------------------------------

    def _mih_pays(self, k: int) -> bool:
        """Whether auto tries the tables for top-k (or a range search, k=1) here."""
        n = self.ntotal
        return self.d >= MIH_MIN_BITS and n >= MIH_MIN_CODES and k <= n * MIH_MAX_K_FRACTION

    def tables(self):
        """The multi-index tables (:class:`rshash.mih.Tables`), built now if absent or
        rebuilt if the codes appended since pass an eighth of those they index."""
        from rshash import mih

        words_t = self.words_t
        n, t = words_t.shape[1], self._tables
        if t is None or n - t.ntab > max(4096, t.ntab // 8):
            self._tables = _readonly(mih.build(words_t, self.d)) if n else None
        return self._tables

    def _budget(self) -> np.int64:
        flat = self.ntotal * self.words / FLAT_PER_RANDOM_READ
        return np.int64(max(256, MIH_BUDGET_FRACTION * flat))

    @property
    def stats(self) -> dict:
        """What the index holds and what its last search or range search did.

        ``engine`` (the setting), ``ntotal``, ``bits``, ``code_bytes``; ``tables``:
        None, or ``substrings`` (m), ``substring_bits``, ``bucket_bits``, ``indexed``
        (ids covered), ``appended`` (read directly), ``bytes`` and ``overhead`` (table
        bytes per code byte); ``last``: ``call`` (search or range_search), ``k`` or
        ``radius``, ``queries``, ``mih`` and ``flat`` (queries answered by each),
        ``gave_up`` (multi-index searches that ran past the budget and were scanned
        flat) and ``work`` (mean bucket lookups plus codes read per MIH query)."""
        code_bytes = 8 * self.words * self.ntotal
        t = self._tables
        tables = None
        if t is not None:
            tables = {
                "substrings": t.m,
                "substring_bits": [int(x) for x in t.bits],
                "bucket_bits": [int(x) for x in t.bucket_bits],
                "indexed": int(t.ntab),
                "appended": self.ntotal - int(t.ntab),
                "bytes": t.nbytes,
                "overhead": round(t.nbytes / code_bytes, 3) if code_bytes else None,
            }
        return {
            "engine": self.engine,
            "ntotal": self.ntotal,
            "bits": self.d,
            "code_bytes": code_bytes,
            "tables": tables,
            "last": dict(self._last),
        }

    def _plan(self, nq: int, k: int) -> str:
        """flat, mih (no budget: forced) or auto-mih (with a budget), for this call."""
        if self.engine != "auto":
            return self.engine
        if not self._mih_pays(k):
            return "flat"
        if nq == 1 and self._backoff > 0:
            self._backoff -= 1
            return "flat"
        return "auto-mih"

    def _mih_topk(self, qw, kk, threads, budget, idx, dist) -> np.ndarray:
        """MIH top-k of the queries qw into idx, dist; each query's work (ABORTED where
        it gave up)."""
        from rshash import mih

        t = self.tables()
        work = np.zeros(len(qw), np.int64)
        args = (qw, self.words_t, t.ntab, t.lo, t.bucket_bits, t.obase, t.ids, t.offsets, kk)
        if threads == 1:
            mih.topk_serial(*args, budget, idx, dist, work)
        else:
            run_parallel(threads, mih.topk_parallel, *args, budget, idx, dist, work)
        return work

    def _flat_topk(self, qw, kk, threads, idx, dist) -> None:
        args = (qw, self.words_t, kk, 64 * self.words, idx, dist)
        if threads == 1:
            _topk_serial(*args)
        else:
            run_parallel(threads, _topk_kernel, *args)

    def search(self, q, k: int, threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
        from rshash.mih import ABORTED

        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        qw = self.query_words(q)
        kk = min(int(k), self.ntotal)
        idx = np.full((len(qw), int(k)), -1, dtype=np.int64)
        dist = np.full((len(qw), int(k)), np.iinfo(np.int32).max, dtype=np.int32)
        plan = self._plan(len(qw), kk) if kk and len(qw) else "flat"
        work = np.zeros(0, np.int64)
        if kk and len(qw):
            i, d = np.zeros((len(qw), kk), np.int64), np.zeros((len(qw), kk), np.uint16)
            flat = np.ones(len(qw), bool)
            if plan != "flat":
                budget = _NO_BUDGET if plan == "mih" else self._budget()
                probe = len(qw) if plan == "mih" or len(qw) == 1 else min(AUTO_PROBE, len(qw))
                work = self._mih_topk(qw[:probe], kk, threads, budget, i, d)
                if probe < len(qw) and (work == ABORTED).mean() <= 0.5:
                    rest = self._mih_topk(qw[probe:], kk, threads, budget, i[probe:], d[probe:])
                    work = np.concatenate([work, rest])
                flat[: len(work)] = work == ABORTED
                if plan == "auto-mih" and len(qw) == 1:
                    self._learn(bool(flat[0]))
            if flat.any():
                sel = np.flatnonzero(flat)
                fi, fd = np.zeros((len(sel), kk), np.int64), np.zeros((len(sel), kk), np.uint16)
                self._flat_topk(np.ascontiguousarray(qw[sel]), kk, threads, fi, fd)
                i[sel], d[sel] = fi, fd
            idx[:, :kk], dist[:, :kk] = i, d
            self._record("search", len(qw), flat, work, k=int(k))
        return dist, idx

    def _learn(self, gave_up: bool) -> None:
        """Auto: follow the recent share of single queries whose MIH search gave up (a
        moving average over about 8); past half, scan the next AUTO_BACKOFF flat."""
        self._gave_up += (gave_up - self._gave_up) / 8
        if self._gave_up > 0.5:
            self._backoff = AUTO_BACKOFF

    def _record(self, call, nq, flat, work, **what) -> None:
        from rshash.mih import ABORTED

        done = work[work != ABORTED]
        self._last = {
            "call": call,
            **what,
            "queries": int(nq),
            "mih": int(nq - flat.sum()),
            "flat": int(flat.sum()),
            "gave_up": int((work == ABORTED).sum()),
            "work": float(done.mean()) if len(done) else None,
        }

    def range_search(self, q, radius: int, threads: int | None = 1):
        from rshash import mih

        if not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        qw, db_t = self.query_words(q), self.words_t
        radius = min(int(radius), self.d + 1)
        plan = self._plan(len(qw), 1) if radius > 0 and db_t.shape[1] and len(qw) else "flat"
        flat = np.ones(len(qw), bool)
        work = np.zeros(0, np.int64)
        found: list = [None] * len(qw)
        if plan != "flat":
            t = self.tables()
            budget = _NO_BUDGET if plan == "mih" else self._budget()
            work = np.empty(len(qw), np.int64)
            for qi in range(len(qw)):  # one at a time: the results' lengths vary
                cid, cd, work[qi] = mih.collect(
                    qw, qi, db_t, t.ntab, t.lo, t.bucket_bits, t.obase, t.ids, t.offsets,
                    db_t.shape[1] + 1, radius - 1, budget,
                )  # fmt: skip
                if work[qi] != mih.ABORTED:
                    near = cd < radius
                    order = np.lexsort((cid[near], cd[near]))
                    found[qi] = (cid[near][order], cd[near][order])
                    flat[qi] = False
        counts = np.array([0 if f is None else len(f[0]) for f in found], dtype=np.int64)
        sel = np.flatnonzero(flat)
        if radius > 0 and db_t.shape[1] and len(sel):
            qs = np.ascontiguousarray(qw[sel])
            c = np.zeros(len(sel), dtype=np.int64)
            run_parallel(threads, _range_count_kernel, qs, db_t, radius, c)
            counts[sel] = c
        lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        idx = np.empty(lims[-1], dtype=np.int64)
        dist = np.empty(lims[-1], dtype=np.int32)
        if radius > 0 and len(sel) and counts[sel].sum():
            qs = np.ascontiguousarray(qw[sel])
            sub = np.concatenate([[0], np.cumsum(counts[sel])]).astype(np.int64)
            si, sd = np.empty(sub[-1], np.int64), np.empty(sub[-1], np.int32)
            run_parallel(threads, _range_fill_kernel, qs, db_t, radius, sub, si, sd)
            for j, qi in enumerate(sel):
                found[qi] = (si[sub[j] : sub[j + 1]], sd[sub[j] : sub[j + 1]])
        for qi, f in enumerate(found):
            if f is not None and len(f[0]):
                idx[lims[qi] : lims[qi + 1]], dist[lims[qi] : lims[qi + 1]] = f
        if len(qw):
            self._record("range_search", len(qw), flat, work, radius=radius)
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
        """Save atomically: a 512-byte header (magic, JSON, digest slot), the words, then
        the multi-index tables (ids, directories; little-endian uint32), built first
        where a search would use them (auto at this size, or forced), so a loaded index
        never rebuilds them. Codes appended since the tables were built are saved as
        such (read directly until the next rebuild)."""
        from rshash.digest import PLACEHOLDER, write_sealed

        words_t = self.words_t
        want = self._tables is not None or self.engine == "mih" or self._mih_pays(1)
        tables = self.tables() if want and words_t.shape[1] else None
        meta = {
            "format": INDEX_FORMAT,
            "d": self.d,
            "ntotal": int(words_t.shape[1]),
            "words": self.words,
            "byteorder": "little",
            "tables": None if tables is None else tables.meta(),
        }
        header = INDEX_MAGIC + json.dumps(meta).encode() + b"\n" + PLACEHOLDER.encode()
        if len(header) > _INDEX_HEADER:
            raise AssertionError("binary index header too long")

        def write(tmp):
            with open(tmp, "wb") as fh:
                fh.write(header.ljust(_INDEX_HEADER, b"\0"))
                fh.write(np.ascontiguousarray(words_t, dtype="<u8").tobytes())
                if tables is not None:
                    fh.write(np.ascontiguousarray(tables.ids, dtype="<u4").tobytes())
                    fh.write(np.ascontiguousarray(tables.offsets, dtype="<u4").tobytes())

        write_sealed(path, write)


def _readonly(tables):
    """Tables whose arrays are read-only, as memory-mapped ones are (one compiled
    signature for both)."""
    for a in (tables.ids, tables.offsets):
        if a.flags.writeable:
            a.flags.writeable = False
    return tables


def read_binary_index(path, mmap: bool = True) -> BinaryIndex:
    """Load an index written by :meth:`BinaryIndex.write` (its digest checked first),
    the words and tables memory-mapped unless ``mmap`` is False. Files of format 1
    (before multi-index tables) load too; their tables are built on first use."""
    from rshash import mih
    from rshash.digest import verify

    verify(path, "binary index")
    with open(path, "rb") as fh:
        head = fh.read(_INDEX_HEADER)
    try:
        if not head.startswith(INDEX_MAGIC):
            raise ValueError("no rshash binary index magic")
        meta = json.loads(head[len(INDEX_MAGIC) :].split(b"\n", 1)[0])
        fmt = int(meta.get("format", 1))
        if fmt > INDEX_FORMAT:
            raise RshashError(
                f"{path}: binary index format {fmt} is newer than this rshash reads "
                f"(up to {INDEX_FORMAT}); upgrade rshash"
            )
        index = BinaryIndex(meta["d"])
        shape = (index.words, int(meta["ntotal"]))
        table_meta = meta.get("tables")
        sizes = mih.array_sizes(table_meta) if table_meta else (0, 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise RshashError(f"{path}: not a readable binary index ({exc})") from None
    layout = [("<u8", shape), ("<u4", (sizes[0],)), ("<u4", (sizes[1],))]
    arrays, offset = [], _INDEX_HEADER
    with open(path, "rb") as fh:
        for dtype, shp in layout:
            count = int(np.prod(shp))
            if mmap and count:
                arrays.append(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shp))
            else:
                fh.seek(offset)
                a = np.frombuffer(fh.read(count * np.dtype(dtype).itemsize), dtype=dtype)
                arrays.append(a.reshape(shp).copy())
                arrays[-1].flags.writeable = False
            offset += count * np.dtype(dtype).itemsize
    index._words_t = arrays[0]
    if table_meta:
        index._tables = _readonly(mih.from_meta(table_meta, arrays[1], arrays[2]))
    return index


class ShardedIndex:
    """Shards of one id space, searched side by side and merged exactly.

    ``shards``: :class:`BinaryIndex` objects or paths of index files (read
    memory-mapped), shard i holding the ids after shard i-1's (as
    :func:`write_shards` splits an index). :meth:`search` has BinaryIndex's shape
    and answer: each shard's top-k (its own engine: flat or multi-index) on one
    thread of a pool of ``threads`` (None: one per shard; the kernels release the
    GIL), then per query the shards' lists merged by (distance, global id), which is
    exact because every global top-k member is in its own shard's top-k. The same
    merge serves one shard per worker of a distributed engine (README).
    """

    def __init__(self, shards, mmap: bool = True):
        self.shards = [
            s if isinstance(s, BinaryIndex) else read_binary_index(s, mmap) for s in shards
        ]
        if not self.shards:
            raise RshashError("a sharded index needs at least one shard")
        bits = {s.d for s in self.shards}
        if len(bits) != 1:
            raise RshashError(f"shards of different code lengths: {sorted(bits)} bits")
        self.d = bits.pop()
        self.base = np.concatenate([[0], np.cumsum([s.ntotal for s in self.shards])])

    @property
    def ntotal(self) -> int:
        return int(self.base[-1])

    def __len__(self) -> int:
        return self.ntotal

    @property
    def stats(self) -> list[dict]:
        """Each shard's :attr:`BinaryIndex.stats`."""
        return [s.stats for s in self.shards]

    def search(self, q, k: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        q = np.asarray(q)
        workers = len(self.shards) if threads is None else max(1, int(threads))
        with ThreadPoolExecutor(min(workers, len(self.shards))) as pool:
            parts = list(pool.map(lambda s: s.search(q, k, threads=1), self.shards))
        return merge_topk(parts, self.base[:-1], k, self.d)


def merge_topk(parts, bases, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of shards' :meth:`BinaryIndex.search` answers ``parts`` ((D, I)
    each), shard i's ids offset by ``bases[i]``: by distance, then global id."""
    pad = np.iinfo(np.int32).max
    D = np.concatenate([p[0] for p in parts], axis=1)
    I = np.concatenate([np.where(p[1] >= 0, p[1] + b, -1) for p, b in zip(parts, bases)], axis=1)
    key = np.where(D == pad, d + 1, D).astype(np.int64) << 40 | np.where(I >= 0, I, 0)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def write_shards(index: BinaryIndex, paths) -> list:
    """Split ``index`` into len(paths) consecutive id ranges of nearly equal size, one
    index file each (with its tables where a search would use them); returns the paths
    (open them with :class:`ShardedIndex`)."""
    from pathlib import Path

    paths = [Path(p) for p in paths]
    cuts = np.linspace(0, index.ntotal, len(paths) + 1).astype(np.int64)
    for path, a, b in zip(paths, cuts[:-1], cuts[1:]):
        shard = BinaryIndex(index.d, engine=index.engine)
        shard.add(index.reconstruct_n(int(a), int(b - a)))
        shard.write(path)
    return paths


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
