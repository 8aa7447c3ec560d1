"""The binary index: exact Hamming search over packed codes, shaped like faiss's
``IndexBinaryFlat`` (``add``, ``search(q, k) -> (D, I)``, ``range_search``), its
file format (memory-mapped, digest checked), and the functional helpers evaluation
uses (``hamming_distances``, ``hamming_topk``, ``hamming_rank``).

The flat scan runs the compiled kernels of :mod:`rshash.hamming.kernels`;
multi-index hashing (:mod:`rshash.hamming.mih`) reads a fraction of the codes
through tables. Ties go to the lower id everywhere.
"""

from __future__ import annotations

import json

import numpy as np

from rshash import RshashError
from rshash.digest import BINARY_INDEX_MAGIC, PLACEHOLDER, verify, write_sealed
from rshash.hamming import mih
from rshash.hamming.kernels import (
    as_words,
    distance_kernel,
    range_count_kernel,
    range_fill_kernel,
    rank_kernel,
    run_parallel,
    topk_kernel,
    topk_serial,
)

INDEX_MAGIC = BINARY_INDEX_MAGIC  # the digest module finds the slot after it
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
    reads every code; multi-index hashing (:mod:`rshash.hamming.mih`) reads a fraction of
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
        self._tables = None  # rshash.hamming.mih.Tables of ids 0..ntab-1, or None
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
        """The multi-index tables (:class:`rshash.hamming.mih.Tables`), built now if absent or
        rebuilt if the codes appended since pass an eighth of those they index."""

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
        """MIH top-k of the queries qw into idx, dist; each query's work (mih.ABORTED where
        it gave up)."""

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
            topk_serial(*args)
        else:
            run_parallel(threads, topk_kernel, *args)

    def search(self, q, k: int, threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:

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
                if probe < len(qw) and (work == mih.ABORTED).mean() <= 0.5:
                    rest = self._mih_topk(qw[probe:], kk, threads, budget, i[probe:], d[probe:])
                    work = np.concatenate([work, rest])
                flat[: len(work)] = work == mih.ABORTED
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

        done = work[work != mih.ABORTED]
        self._last = {
            "call": call,
            **what,
            "queries": int(nq),
            "mih": int(nq - flat.sum()),
            "flat": int(flat.sum()),
            "gave_up": int((work == mih.ABORTED).sum()),
            "work": float(done.mean()) if len(done) else None,
        }

    def range_search(self, q, radius: int, threads: int | None = 1):

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
            run_parallel(threads, range_count_kernel, qs, db_t, radius, c)
            counts[sel] = c
        lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        idx = np.empty(lims[-1], dtype=np.int64)
        dist = np.empty(lims[-1], dtype=np.int32)
        if radius > 0 and len(sel) and counts[sel].sum():
            qs = np.ascontiguousarray(qw[sel])
            sub = np.concatenate([[0], np.cumsum(counts[sel])]).astype(np.int64)
            si, sd = np.empty(sub[-1], np.int64), np.empty(sub[-1], np.int32)
            run_parallel(threads, range_fill_kernel, qs, db_t, radius, sub, si, sd)
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
        run_parallel(threads, rank_kernel, qw, db_t, 64 * self.words, idx, dist)
        return dist, idx

    def distances(self, q, threads: int | None = 1) -> np.ndarray:
        """(nq, ntotal) uint16 Hamming distances."""
        qw, db_t = self.query_words(q), self.words_t
        out = np.empty((len(qw), db_t.shape[1]), dtype=np.uint16)
        run_parallel(threads, distance_kernel, qw, db_t, out)
        return out

    def write(self, path) -> None:
        """Save atomically: a 512-byte header (magic, JSON, digest slot), the words, then
        the multi-index tables (ids, directories; little-endian uint32), built first
        where a search would use them (auto at this size, or forced), so a loaded index
        never rebuilds them. Codes appended since the tables were built are saved as
        such (read directly until the next rebuild)."""

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
