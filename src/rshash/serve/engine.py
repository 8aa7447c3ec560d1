"""Ranking for ``rshash serve`` (numpy and numba, no torch): one page of results of
a query code, with a class filter, a distance threshold and relevance feedback,
over an index's segments; and the live index a server searches.

Relevance feedback is Rocchio's rule on the codes as vectors of +1/-1: the new
query is ``ALPHA q + BETA mean(relevant) - GAMMA mean(not relevant)`` and an image
``x`` is ranked by its distance to it, which is the same as ranking by the score

    ALPHA d(q, x) + BETA mean_r d(r, x) - GAMMA mean_n d(n, x)

(``d``: Hamming distance; each d(a, x) is (bits - <a, x>) / 2 on +-1 vectors, so
the two differ by a constant and a factor). So the rule is also a weighted vote of
the Hamming distances to the marked codes, and it is exact: the distances come
from the compiled kernels, one pass per marked code, no reranking of a shortlist.
The weights are the SMART system's classic ones (1, 0.75, 0.15): a relevant mark
counts for much more than a rejection. benchmarks/feedback.py measures one round
on the demo. Ties go to the lower index row, as everywhere.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.index import Index, read_index

ALPHA, BETA, GAMMA = 1.0, 0.75, 0.15


@dataclass
class Page:
    """One page of a ranking: global rows, their Hamming distance to the query, their
    score (the distance, or the feedback score) and how many images qualify in all."""

    rows: np.ndarray
    distance: np.ndarray
    score: np.ndarray
    total: int


def feedback_score(dist: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """Rocchio's score from the distances of the query (row 0), the relevant codes
    (next ``n_pos`` rows) and the rejected ones (the last ``n_neg``) to every code."""
    score = ALPHA * dist[0].astype(np.float64)
    if n_pos:
        score += BETA * dist[1 : 1 + n_pos].mean(0)
    if n_neg:
        score -= GAMMA * dist[1 + n_pos :].mean(0)
    return score


def rank_page(
    index: Index,
    query: np.ndarray,
    k: int,
    offset: int = 0,
    label: int | None = None,
    max_distance: int | None = None,
    positive: np.ndarray | None = None,
    negative: np.ndarray | None = None,
    threads: int | None = 1,
) -> Page:
    """Results ``offset .. offset+k`` of the packed query code (1, bits/8): by Hamming
    distance, or by the feedback score when codes are marked ``positive`` or
    ``negative`` ((m, bits/8) each); only images of class ``label`` and at distance
    <= ``max_distance`` from the query when given. Exact, whatever the filters: a
    plain query is a top-k search and a threshold a range search per segment; a class
    filter or feedback takes one pass over the codes per query or marked code."""
    nbytes = index.bits // 8
    positive = np.zeros((0, nbytes), np.uint8) if positive is None else positive
    negative = np.zeros((0, nbytes), np.uint8) if negative is None else negative
    want = offset + k
    full_pass = label is not None or len(positive) or len(negative)
    rows, dists, scores, total = [], [], [], 0
    for start, seg in zip(index.starts, index.segments):
        if not seg.n:
            continue
        if not full_pass and max_distance is None:
            d, i = seg.codes.search(query, min(want, seg.n), threads)
            r, d, s = i[0], d[0].astype(np.int64), d[0].astype(np.float64)
            total += seg.n
        elif not full_pass:
            lims, d, i = seg.codes.range_search(query, max_distance + 1, threads)
            total += int(lims[1])
            r, d = i[: min(want, len(i))], d[: min(want, len(i))].astype(np.int64)
            s = d.astype(np.float64)
        else:
            codes = np.concatenate([query, positive, negative])
            dist = seg.codes.distances(codes, threads)
            score = feedback_score(dist, len(positive), len(negative))
            mask = np.ones(seg.n, bool)
            if label is not None:
                mask &= np.asarray(seg.label) == label
            if max_distance is not None:
                mask &= dist[0] <= max_distance
            r = np.flatnonzero(mask)
            total += len(r)
            if len(r) > want:  # the best ``want`` (ties at the cut by row, below)
                kth = np.partition(score[r], want - 1)[want - 1]
                r = r[score[r] <= kth]
            d, s = dist[0, r].astype(np.int64), score[r]
        rows.append(r + start)
        dists.append(d)
        scores.append(s)
    if not rows:
        empty = np.zeros(0, np.int64)
        return Page(empty, empty, np.zeros(0), 0)
    r, d, s = np.concatenate(rows), np.concatenate(dists), np.concatenate(scores)
    order = np.lexsort((r, s))[offset:want]
    return Page(r[order], d[order], s[order], total)


class LiveIndex:
    """The index a server searches, reopened when its manifest is replaced (by
    ``rshash index --append`` or ``--remove``): a thread checks the manifest file
    every ``poll`` seconds and swaps the new generation in with one assignment, so a
    request (which reads :attr:`current` once) sees one generation throughout. A new
    generation that cannot be opened is reported on stderr and the old one kept."""

    def __init__(self, location, poll: float = 1.0):
        self.location, self.poll = Path(location), poll
        self._stamp = self._stat()
        self.current: Index = read_index(self.location)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stat(self):
        try:
            st = os.stat(self.location)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self) -> bool:
        """Reopen the index if its manifest changed; whether it did."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            index = read_index(self.location)
        except RshashError as err:
            print(
                f"rshash serve: keeping generation {self.current.generation}: {err}",
                file=sys.stderr,
            )
            return False
        self._stamp, self.current = stamp, index
        print(
            f"rshash serve: {self.location} generation {index.generation}, {len(index)} images",
            file=sys.stderr,
        )
        return True

    def start(self) -> LiveIndex:
        def loop():
            while not self._stop.wait(self.poll):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="rshash-index-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
