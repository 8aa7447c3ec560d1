"""Multi-index hashing: exact Hamming top-k and range search that reads a small
fraction of the codes (Norouzi, Punjani and Fleet, "Fast exact search in Hamming
space with multi-index hashing", TPAMI 2014).

The code's bits are split into ``m`` disjoint substrings; a code at distance D
from the query has, by the pigeonhole principle, some substring within
``floor(D / m)`` of the query's. One table per substring lists the ids by the
substring's value, so searching every table at substring radius 0, 1, 2, ...
finds every code at distance <= ``m*r + t`` once table ``t`` is done at radius
``r``; the search stops as soon as that bound reaches the k-th distance found
(then every code at or below it is known, so ties at the k-th distance go to
the lowest ids exactly as in the flat scan), or a range search's radius.

Layout (one home for it: :class:`Tables`): a table is a bucket directory on the
first ``bucket_bits`` bits of its substring (``offsets``, uint32, 2**b + 1 per
table) and the ids sorted by bucket (``ids``, uint32, ``ntab`` per table, in id
order within a bucket). When the substring is longer than the bucket key (so the
directory stays below about n/4 entries, the memory goal), a bucket holds codes
whose substrings differ beyond the key; scanning every bucket within key
distance r still covers every code within substring distance r (key bits are a
subset), so the bound above holds and the extra codes are only extra
verification. A candidate found again in a later table is recognised from its
own key distances (no per-query bitmap over the database).

Memory: 4*m bytes of ids per code plus 4*2**b per table (m = d / log2(n),
Norouzi's choice; :func:`plan`): 1.7x the codes at 64 bits and 1 to 10 million
codes (``BinaryIndex.stats["tables"]["overhead"]``); m grows as n shrinks, so a
small index pays more (about 3x at a few hundred codes, where the auto engine
never builds tables). Ids are uint32: an index of 2**32 codes or more is sharded.

Hand-written rather than faiss: faiss's ``IndexBinaryMultiHash`` searches a
fixed number of bit flips (approximate: its recall falls below 1) and neither it
nor faiss's flat index breaks ties by id; this one returns exactly what
:class:`rshash.hamming.BinaryIndex`'s flat scan returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from rshash.hamming.kernels import popcount

ABORTED = -1  # a query's work count when it ran past its budget (the caller scans it flat)


@dataclass
class Tables:
    """The tables of one index: ``ntab`` codes (ids 0..ntab-1) indexed, ``lo[t]`` the
    first bit of substring t (bits of the little-endian word view), ``bits[t]`` its
    length, ``bucket_bits[t]`` its key length, ``obase[t]`` where its directory starts
    in ``offsets``; ``ids`` is (m * ntab,) uint32, table t at ``t*ntab``."""

    ntab: int
    lo: np.ndarray  # int64 (m,)
    bits: np.ndarray  # int64 (m,)
    bucket_bits: np.ndarray  # int64 (m,)
    obase: np.ndarray  # int64 (m,)
    ids: np.ndarray  # uint32 (m * ntab,)
    offsets: np.ndarray  # uint32 (sum(2**b + 1),)

    @property
    def m(self) -> int:
        return len(self.lo)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.offsets.nbytes)

    def meta(self) -> dict:
        """What the file header records (the arrays follow the words)."""
        return {
            "ntab": int(self.ntab),
            "substring_lo": [int(x) for x in self.lo],
            "substring_bits": [int(x) for x in self.bits],
            "bucket_bits": [int(x) for x in self.bucket_bits],
        }


def plan(d: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, bits, bucket_bits) of the substrings for ``n`` codes of ``d`` bits.

    About m = d / log2(n) substrings (Norouzi et al.'s choice: about one code per
    bucket, so each radius step costs as many lookups as candidates), as equal as
    possible, none across a 64-bit word (reading a substring is then one load, shift
    and mask: the check for codes already seen reads one per table and candidate).
    Each bucket key is at most log2(n) - 2 bits (at most 28), so the directories
    hold at most about n/4 entries per table (the memory goal)."""
    logn = math.log2(max(n, 2))
    m = min(d, max(1, round(d / logn)))
    lo, bits = [], []
    for w in range(-(-d // 64)):
        width = min(64, d - 64 * w)
        parts = min(width, max(1, round(m * width / d)))
        sizes = np.full(parts, width // parts, np.int64)
        sizes[: width % parts] += 1
        lo += (64 * w + np.concatenate([[0], np.cumsum(sizes)[:-1]])).tolist()
        bits += sizes.tolist()
    lo, bits = np.asarray(lo, np.int64), np.asarray(bits, np.int64)
    key = max(1, min(28, int(math.floor(logn)) - 2))
    return lo, bits, np.minimum(bits, key)


def build(words_t: np.ndarray, d: int, ntab: int | None = None) -> Tables:
    """The tables of the first ``ntab`` codes (all by default) of a word-major index."""
    ntab = words_t.shape[1] if ntab is None else int(ntab)
    if ntab >= 2**32:
        raise ValueError("multi-index tables hold at most 2**32 - 1 codes (shard the index)")
    lo, bits, bucket_bits = plan(d, ntab)
    sizes = (1 << bucket_bits) + 1
    obase = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    ids = np.empty(len(lo) * ntab, np.uint32)
    offsets = np.empty(int(sizes.sum()), np.uint32)
    _build_kernel(words_t, ntab, lo, bucket_bits, obase, ids, offsets)
    return Tables(ntab, lo, bits, bucket_bits, obase, ids, offsets)


def from_meta(meta: dict, ids: np.ndarray, offsets: np.ndarray) -> Tables:
    """Tables from a header's :meth:`Tables.meta` and the arrays read after the words."""
    lo = np.asarray(meta["substring_lo"], np.int64)
    bits = np.asarray(meta["substring_bits"], np.int64)
    bucket_bits = np.asarray(meta["bucket_bits"], np.int64)
    sizes = (1 << bucket_bits) + 1
    obase = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return Tables(int(meta["ntab"]), lo, bits, bucket_bits, obase, ids, offsets)


def array_sizes(meta: dict) -> tuple[int, int]:
    """(ids, offsets) element counts of the tables a header describes."""
    m = len(meta["substring_bits"])
    return m * int(meta["ntab"]), int(sum((1 << b) + 1 for b in meta["bucket_bits"]))


def compact(tables: Tables, new_id: np.ndarray) -> Tables:
    """The tables after a removal: ``new_id[old]`` is the code's new id, or -1 where it
    was removed (removals renumber the rest down, keeping their order). One pass over
    the ids, which stay bucketed and in id order."""
    ntab = int((new_id[: tables.ntab] >= 0).sum())
    ids = np.empty(tables.m * ntab, np.uint32)
    offsets = np.empty_like(tables.offsets)
    _compact_kernel(tables.ids, tables.offsets, tables.ntab, tables.bucket_bits, tables.obase,
                    new_id, ntab, ids, offsets)  # fmt: skip
    return Tables(ntab, tables.lo, tables.bits, tables.bucket_bits, tables.obase, ids, offsets)


@intrinsic
def _ctz(typingctx, x):
    """The LLVM cttz intrinsic on a uint64 (one TZCNT instruction): Gosper's hack
    below shifts by it instead of dividing."""

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.cttz", [ir.IntType(64), ir.IntType(1)])
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])

    return types.uint64(types.uint64), codegen


@njit
def _code_bits(words_t, j, lo, nb):
    """Bits lo..lo+nb-1 of database code j (within one word, nb < 64), as an integer."""
    return (words_t[lo >> 6, j] >> np.uint64(lo & 63)) & (
        (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
    )


@njit
def _query_bits(q, qi, lo, nb):
    """Bits lo..lo+nb-1 of query qi (within one word, nb < 64), as an integer."""
    return (q[qi, lo >> 6] >> np.uint64(lo & 63)) & ((np.uint64(1) << np.uint64(nb)) - np.uint64(1))


@njit(cache=True)
def _build_kernel(words_t, ntab, lo, bucket_bits, obase, ids, offsets):
    """Per table, a counting sort of the ids by bucket key (stable: id order within)."""
    keys = np.empty(ntab, np.int64)
    for t in range(len(lo)):
        nb = 1 << bucket_bits[t]
        base = obase[t]
        counts = np.zeros(nb + 1, np.int64)
        for j in range(ntab):
            key = np.int64(_code_bits(words_t, j, lo[t], bucket_bits[t]))
            keys[j] = key
            counts[key + 1] += 1
        for key in range(nb):
            counts[key + 1] += counts[key]
        for key in range(nb + 1):
            offsets[base + key] = counts[key]
        for j in range(ntab):
            ids[t * ntab + counts[keys[j]]] = j
            counts[keys[j]] += 1


@njit(cache=True)
def _compact_kernel(ids, offsets, ntab, bucket_bits, obase, new_id, new_ntab, out_ids, out_off):
    for t in range(len(obase)):
        base = obase[t]
        w = 0
        for key in range(1 << bucket_bits[t]):
            out_off[base + key] = w
            for e in range(offsets[base + key], offsets[base + key + 1]):
                nid = new_id[ids[t * ntab + e]]
                if nid >= 0:
                    out_ids[t * new_ntab + w] = nid
                    w += 1
        out_off[base + (1 << bucket_bits[t])] = w


@njit
def _distance(q, qi, words_t, c):
    d = 0
    for w in range(words_t.shape[0]):
        d += popcount(q[qi, w] ^ words_t[w, c])
    return d


@njit
def _room(out_id, out_d, st):
    """Make room in full candidate buffers: drop those past the threshold st[1]; double
    the buffers if that frees less than half (rare: returns new arrays)."""
    kept = 0
    for e in range(st[0]):
        if out_d[e] <= st[1]:
            out_id[kept] = out_id[e]
            out_d[kept] = out_d[e]
            kept += 1
    st[0] = kept
    if kept > len(out_id) // 2:
        grown_id = np.empty(2 * len(out_id), np.int64)
        grown_d = np.empty(2 * len(out_id), np.int64)
        grown_id[:kept] = out_id[:kept]
        grown_d[:kept] = out_d[:kept]
        return grown_id, grown_d
    return out_id, out_d


@njit
def _push(c, d, k, out_id, out_d, cnt, st):
    """Keep candidate c at distance d (<= the threshold st[1]; the buffers have room);
    st = [kept, threshold, count at or below it]. The threshold falls to the smallest
    distance with k kept at or below it."""
    out_id[st[0]] = c
    out_d[st[0]] = d
    st[0] += 1
    cnt[d] += 1
    st[2] += 1
    while st[1] > 0 and st[2] - cnt[st[1]] >= k:
        st[2] -= cnt[st[1]]
        st[1] -= 1


@njit(nogil=True, cache=True)
def collect(q, qi, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k, max_d, budget):
    """Query qi's candidates: (ids, distances, work). They include every code at
    distance <= the k-th smallest distance (top-k) or <= ``max_d`` (range search:
    k past ntotal), unsorted, maybe with more beyond it. ``work`` counts bucket
    lookups plus codes read; past ``budget`` the search stops with work ABORTED.
    Codes ntab.. (appended since the tables were built) are all read directly."""
    n = words_t.shape[1]
    m = len(lo)
    nbits = 64 * words_t.shape[0]
    qkey = np.empty(m, np.uint64)
    for t in range(m):
        qkey[t] = _query_bits(q, qi, lo[t], bucket_bits[t])
    cnt = np.zeros(nbits + 1, np.int64)
    cap = 64 + 4 * min(k, 4096)
    out_id = np.empty(cap, np.int64)
    out_d = np.empty(cap, np.int64)
    st = np.array([0, min(max_d, nbits), 0], np.int64)
    for c in range(ntab, n):
        d = _distance(q, qi, words_t, c)
        if d <= st[1]:
            if st[0] == len(out_id):
                out_id, out_d = _room(out_id, out_d, st)
            _push(c, d, k, out_id, out_d, cnt, st)
    work = n - ntab
    if ntab == 0:
        return out_id[: st[0]], out_d[: st[0]], work
    one = np.uint64(1)
    r = 0
    while True:
        for t in range(m):
            b = bucket_bits[t]
            base = obase[t]
            # every key at distance exactly r from the query's: the r-bit masks of b bits
            # in increasing order (Gosper's hack)
            mask = (one << np.uint64(r)) - one
            end = one << np.uint64(b)
            while mask < end:
                key = np.int64(qkey[t] ^ mask)
                e0, e1 = np.int64(offsets[base + key]), np.int64(offsets[base + key + 1])
                work += 1 + e1 - e0
                for e in range(e0, e1):
                    c = np.int64(ids[t * ntab + e])
                    d = _distance(q, qi, words_t, c)
                    if d > st[1]:
                        continue
                    # seen before in a table searched earlier: key distance < r, or == r
                    # in a table before this one
                    seen = False
                    for u in range(m):
                        if u != t:
                            du = popcount(_code_bits(words_t, c, lo[u], bucket_bits[u]) ^ qkey[u])
                            if du < r or (du == r and u < t):
                                seen = True
                                break
                    if not seen:
                        if st[0] == len(out_id):
                            out_id, out_d = _room(out_id, out_d, st)
                        _push(c, d, k, out_id, out_d, cnt, st)
                if work > budget:
                    return out_id[:0], out_d[:0], ABORTED
                if r == 0:
                    break
                low = mask & (~mask + one)
                ripple = mask + low
                mask = (((ripple ^ mask) >> np.uint64(2)) >> _ctz(low)) | ripple
            # found: every code at distance <= m*r + t; all of them once a table is exhausted
            cover = m * r + t
            if r >= b or cover >= st[1] and st[2] >= min(k, n) or cover >= max_d:
                return out_id[: st[0]], out_d[: st[0]], work
        r += 1


@njit
def _shellsort(a):
    """Sort in place (Knuth's gaps). Not np.sort: its compiled quicksort costs seconds of
    compile time in every test run, for a few hundred keys."""
    n = len(a)
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap >= 1:
        for i in range(gap, n):
            x = a[i]
            j = i
            while j >= gap and a[j - gap] > x:
                a[j] = a[j - gap]
                j -= gap
            a[j] = x
        gap //= 3


@njit(nogil=True, cache=True)
def _topk_one(q, qi, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k, budget, oi, od):
    """Query qi's exact top-k into oi[qi], od[qi] (by distance, then id); its work."""
    cid, cd, work = collect(q, qi, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k,
                            64 * words_t.shape[0], budget)  # fmt: skip
    if work == ABORTED:
        return work
    key = cd * (np.int64(1) << 40) + cid
    _shellsort(key)
    for i in range(min(k, len(key))):
        oi[qi, i] = key[i] & ((np.int64(1) << 40) - 1)
        od[qi, i] = key[i] >> 40
    return work


@njit(parallel=True, cache=True)
def topk_parallel(q, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k, budget, oi, od, work):
    """Every query's exact top-k (threads over queries); work[qi] ABORTED where its
    search ran past ``budget`` (the caller scans those flat)."""
    for qi in prange(q.shape[0]):
        work[qi] = _topk_one(q, qi, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k,
                             budget, oi, od)  # fmt: skip


@njit(nogil=True, cache=True)
def topk_serial(q, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k, budget, oi, od, work):
    """:func:`topk_parallel` on the calling thread, the GIL released (shard threads)."""
    for qi in range(q.shape[0]):
        work[qi] = _topk_one(q, qi, words_t, ntab, lo, bucket_bits, obase, ids, offsets, k,
                             budget, oi, od)  # fmt: skip
