"""What the retrieval metrics need from a ranking, collected by compiled kernels (numba).

The metric definitions stay in :mod:`rshash.metrics` (numpy, the
reference). Evaluating from a materialized ranking costs several numpy
passes over an (nq, ndb) array, about 20 s for NWPU-RESISC45 (31,500
queries against 31,500 items); every metric, though, reduces to a few
statistics per query that a pass over the database collects:

* ``ap_sum``: the sum, over the relevant items, of (relevant items up to
  and including it) / (its rank): map_all = ap_sum / n_relevant;
* ``top``: the first ``width`` ranked database indices: every cut-off metric
  (map_at_k, P@k, R@k, their curves, the retrieved accuracy) reads only
  these (-1 pads a ranking shorter than ``width``);
* ``rank_sum``, ``n_within``: the sum of the ranks of the relevant items at
  rank <= k_cap, and their number (ANMRR, see ``metrics.nmrr_from_ranks``);
* for Hamming codes, ``counts`` / ``relevant`` (nq, bits + 1): database
  items, and relevant ones, at each distance (the Hamming-radius curves).

:func:`score_hamming` never builds the ranking. Distances are integers
0..bits, so the rank of the item at distance d and database index j is
(items nearer than d) + (items at d before j) + 1: a histogram, its prefix
sums and a second pass in database order give every rank, ties by database
order, exactly as :func:`rshash.hamming.hamming_rank`.
:func:`score_distances` does the same for real-valued distances (euclidean,
category_weighted) from a block's distance matrix: sorting the values alone
gives how many items lie nearer than each relevant one. :func:`score_ranked`
reads any ranking given as indices (coarse_to_fine).

``exclude[i] >= 0`` is a database index left out of query i's ranking and
counts (leave-one-out protocols). Ranks are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from rshash.hamming import as_index
from rshash.hamming.kernels import all_distances, run_parallel

QUERIES_PER_TASK = 8  # queries a thread takes at a time (one set of scratch arrays)


@dataclass
class Scores:
    """The per-query statistics listed in the module docstring."""

    ap_sum: np.ndarray  # (nq,) float64
    top: np.ndarray  # (nq, width) int64, -1 past a short ranking
    rank_sum: np.ndarray  # (nq,) int64
    n_within: np.ndarray  # (nq,) int64
    counts: np.ndarray | None = None  # (nq, bits + 1) int64, Hamming only
    relevant: np.ndarray | None = None

    def outputs(self) -> tuple[np.ndarray, ...]:
        """The arrays every scoring kernel fills, in its argument order."""
        return self.ap_sum, self.top, self.rank_sum, self.n_within


@njit(cache=True, inline="always")
def _add_relevant(rank, hit, cap, ap, total, within):
    """A relevant item at ``rank``, the ``hit``-th relevant one: its hit precision
    joins the AP sum and, within rank ``cap``, its rank the ANMRR rank sum."""
    if rank <= cap:
        return ap + hit / rank, total + rank, within + 1
    return ap + hit / rank, total, within


@njit(parallel=True, cache=True)
def _hamming_kernel(
    q,
    db_t,
    q_labels,
    db_labels,
    exclude,
    k_cap,
    nbits,
    ap_sum,
    top,
    rank_sum,
    n_within,
    counts,
    relevant,
):
    nq = q.shape[0]
    ndb = db_t.shape[1]
    width = top.shape[1]
    ntasks = (nq + QUERIES_PER_TASK - 1) // QUERIES_PER_TASK
    for task in prange(ntasks):
        dist = np.empty(ndb, np.int32)
        next_rank = np.empty(nbits + 1, np.int64)
        next_hit = np.empty(nbits + 1, np.int64)
        for qi in range(task * QUERIES_PER_TASK, min((task + 1) * QUERIES_PER_TASK, nq)):
            all_distances(q, qi, db_t, dist)
            label = q_labels[qi]
            ex = exclude[qi]
            for j in range(ndb):
                d = dist[j]
                counts[qi, d] += 1
                if db_labels[j] == label:
                    relevant[qi, d] += 1
            if ex >= 0:
                d = dist[ex]
                counts[qi, d] -= 1
                if db_labels[ex] == label:
                    relevant[qi, d] -= 1
            # rank (and relevant count) the next item at each distance will have
            rank = 1
            hit = 1
            for d in range(nbits + 1):
                next_rank[d] = rank
                next_hit[d] = hit
                rank += counts[qi, d]
                hit += relevant[qi, d]
            ap = 0.0
            total = 0
            within = 0
            cap = k_cap[qi]
            for j in range(ndb):
                if j == ex:
                    continue
                d = dist[j]
                rank = next_rank[d]
                next_rank[d] = rank + 1
                if rank <= width:
                    top[qi, rank - 1] = j
                if db_labels[j] == label:
                    hit = next_hit[d]
                    next_hit[d] = hit + 1
                    ap, total, within = _add_relevant(rank, hit, cap, ap, total, within)
            ap_sum[qi] = ap
            rank_sum[qi] = total
            n_within[qi] = within


@njit(parallel=True, cache=True)
def _ranked_kernel(ranked, q_labels, db_labels, exclude, k_cap, ap_sum, top, rank_sum, n_within):
    nq, n = ranked.shape
    width = top.shape[1]
    for qi in prange(nq):
        label, ex, cap = q_labels[qi], exclude[qi], k_cap[qi]
        rank = 0
        hit = 0
        ap = 0.0
        total = 0
        within = 0
        for p in range(n):
            j = ranked[qi, p]
            if j == ex:
                continue
            rank += 1
            if rank <= width:
                top[qi, rank - 1] = j
            if db_labels[j] == label:
                hit += 1
                ap, total, within = _add_relevant(rank, hit, cap, ap, total, within)
        ap_sum[qi] = ap
        rank_sum[qi] = total
        n_within[qi] = within


@njit(parallel=True, cache=True)
def _distances_kernel(
    dist, ordered, q_labels, db_labels, exclude, k_cap, ap_sum, top, rank_sum, n_within
):
    """``ordered[i]``: row i of ``dist`` sorted, its left-out item at +inf (last)."""
    nq, ndb = dist.shape
    width = top.shape[1]
    for qi in prange(nq):
        row = dist[qi]
        label, ex, cap = q_labels[qi], exclude[qi], k_cap[qi]
        n = ndb - 1 if ex >= 0 else ndb
        values = ordered[qi, :n]
        n_rel = 0
        for j in range(ndb):
            if j != ex and db_labels[j] == label:
                n_rel += 1
        # relevant items in index order, then in (distance, index) order (stable sort)
        rel = np.empty(n_rel, np.int64)
        k = 0
        for j in range(ndb):
            if j != ex and db_labels[j] == label:
                rel[k] = j
                k += 1
        rel = rel[np.argsort(row[rel], kind="mergesort")]
        # items nearer than each relevant one; the distances shared by several items
        nearer = np.empty(n_rel, np.int64)
        shared = np.empty(n_rel, np.float64)
        n_shared = 0
        for h in range(n_rel):
            d = row[rel[h]]
            nearer[h] = np.searchsorted(values, d)
            if np.searchsorted(values, d, side="right") - nearer[h] > 1 and (
                n_shared == 0 or shared[n_shared - 1] != d
            ):
                shared[n_shared] = d
                n_shared += 1
        # items at a shared distance before each relevant one there (ties go to
        # index order): one pass in index order counting, per shared distance,
        # the items seen so far
        before = np.zeros(n_rel, np.int64)
        if n_shared:
            shared = shared[:n_shared]
            seen = np.zeros(n_shared, np.int64)
            by_index = np.argsort(rel)
            nxt = 0
            for j in range(ndb):
                if j == ex:
                    continue
                h = -1
                if nxt < n_rel and rel[by_index[nxt]] == j:
                    h = by_index[nxt]
                    nxt += 1
                d = row[j]
                if d < shared[0] or d > shared[n_shared - 1]:
                    continue
                slot = np.searchsorted(shared, d)
                if shared[slot] == d:
                    if h >= 0:
                        before[h] = seen[slot]
                    seen[slot] += 1
        ap = 0.0
        total = 0
        within = 0
        for h in range(n_rel):
            ap, total, within = _add_relevant(
                nearer[h] + before[h] + 1, h + 1, cap, ap, total, within
            )
        ap_sum[qi] = ap
        rank_sum[qi] = total
        n_within[qi] = within
        # the first ranks: everything below the w-th distance, then items at it in
        # index order, ordered by (distance, index)
        w = min(width, n)
        if w == 0:
            continue
        edge = values[w - 1]
        chosen = np.empty(w, np.int64)
        k = 0
        for j in range(ndb):
            if j != ex and row[j] < edge:
                chosen[k] = j
                k += 1
        for j in range(ndb):
            if k == w:
                break
            if j != ex and row[j] == edge:
                chosen[k] = j
                k += 1
        chosen = chosen[np.argsort(row[chosen], kind="mergesort")]
        for r in range(w):
            top[qi, r] = chosen[r]


def _prepare(nq: int, q_labels, db_labels, exclude, k_cap, width: int):
    """The kernels' label arguments (q_labels, db_labels, exclude, k_cap) as int64
    arrays, checked, and the empty Scores they fill."""
    q_labels = np.ascontiguousarray(q_labels, dtype=np.int64)
    db_labels = np.ascontiguousarray(db_labels, dtype=np.int64)
    exclude = (
        np.full(nq, -1, np.int64)
        if exclude is None
        else np.ascontiguousarray(exclude, dtype=np.int64)
    )
    k_cap = np.ascontiguousarray(k_cap, dtype=np.int64)
    for name, a in (("q_labels", q_labels), ("exclude", exclude), ("k_cap", k_cap)):
        if a.shape != (nq,):
            raise ValueError(f"{name} has shape {a.shape}, expected ({nq},)")
    if exclude.size and exclude.max() >= len(db_labels):
        raise ValueError(
            f"exclude holds index {exclude.max()} past the database ({len(db_labels)} items)"
        )
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    scores = Scores(
        np.zeros(nq),
        np.full((nq, width), -1, np.int64),
        np.zeros(nq, np.int64),
        np.zeros(nq, np.int64),
    )
    return (q_labels, db_labels, exclude, k_cap), scores


def score_hamming(
    q_packed, database, q_labels, db_labels, k_cap, width: int, exclude=None, threads=1
) -> Scores:
    """The statistics of the Hamming ranking (ties by database index) of packed
    codes, with the per-distance histograms; the ranking itself is never stored.
    ``database``: a :class:`rshash.hamming.BinaryIndex` (or its packed codes)."""
    database = as_index(database)
    q = database.query_words(q_packed)
    db_t = database.words_t
    labels, scores = _prepare(len(q), q_labels, db_labels, exclude, k_cap, width)
    db_labels = labels[1]
    if len(db_labels) != db_t.shape[1]:
        raise ValueError(f"{len(db_labels)} database labels for {db_t.shape[1]} codes")
    nbits = 64 * q.shape[1]  # padding words are zero on both sides: distance unchanged
    bins = database.d + 1
    counts = np.zeros((len(q), nbits + 1), np.int64)
    relevant = np.zeros((len(q), nbits + 1), np.int64)
    run_parallel(
        threads, _hamming_kernel, q, db_t, *labels, nbits, *scores.outputs(), counts, relevant
    )
    scores.counts, scores.relevant = counts[:, :bins], relevant[:, :bins]
    return scores


def score_ranked(ranked, q_labels, db_labels, k_cap, width: int, exclude=None, threads=1) -> Scores:
    """The statistics of a given ranking: ``ranked`` (nq, ndb) database indices per query."""
    ranked = np.ascontiguousarray(ranked, dtype=np.int64)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be (nq, ndb), got shape {ranked.shape}")
    labels, scores = _prepare(len(ranked), q_labels, db_labels, exclude, k_cap, width)
    db_labels = labels[1]
    if ranked.size and (ranked.min() < 0 or ranked.max() >= len(db_labels)):
        raise ValueError(f"ranked holds indices outside 0..{len(db_labels) - 1}")
    run_parallel(threads, _ranked_kernel, ranked, *labels, *scores.outputs())
    return scores


def score_distances(
    distances, q_labels, db_labels, k_cap, width: int, exclude=None, threads=1
) -> Scores:
    """The statistics of ranking by a distance matrix, ascending, ties by database
    index (``rank`` of rshash.dense), without sorting the items: sorting the
    distance values (numpy's SIMD sort, much faster than an index sort) gives how
    many items lie nearer than each relevant one, a pass in index order the ties,
    and a selection the first ``width`` ranks. Distances must be finite."""
    distances = np.ascontiguousarray(distances, dtype=np.float64)
    if distances.ndim != 2:
        raise ValueError(f"distances must be (nq, ndb), got shape {distances.shape}")
    if not np.isfinite(distances).all():
        raise ValueError("distances hold NaN or infinity: a ranking needs finite values")
    labels, scores = _prepare(len(distances), q_labels, db_labels, exclude, k_cap, width)
    db_labels, exclude = labels[1], labels[2]
    if len(db_labels) != distances.shape[1]:
        raise ValueError(f"{len(db_labels)} database labels for {distances.shape[1]} columns")
    left_out = np.flatnonzero(exclude >= 0)
    ordered = distances.copy()
    ordered[left_out, exclude[left_out]] = np.inf
    ordered.sort(axis=1)
    run_parallel(threads, _distances_kernel, distances, ordered, *labels, *scores.outputs())
    return scores
