"""The one query path of an archive: ``rshash search``, the Python API and
``rshash serve`` all rank here, and every ranking merges its segments' answers
through the one exact merge of the Hamming engine (:func:`rshash.hamming.merge_topk`,
ties by global row).

A search returns one :class:`Page` per query code: results ``offset .. offset+k``
by Hamming distance, or by the relevance-feedback score when images are marked
relevant or not relevant; optionally only images of one class and at most
``max_distance`` from the query. Exact, whatever the filters: a plain query is a
top-k search of each segment, a threshold a range search, and a class filter or
feedback one pass over the codes per query or marked code.

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
on the demo.

Numpy and numba only (no torch): encoding query images is the caller's
(:class:`rshash.archive.encoder.Encoder`, or :func:`search_images`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.archive.encoder import Encoder
from rshash.archive.store import Index, day_number
from rshash.hamming import merge_topk

ALPHA, BETA, GAMMA = 1.0, 0.75, 0.15


class NotInIndex(RshashError):
    """An image id the index does not hold (the server answers 404)."""


@dataclass
class Page:
    """One page of a ranking: global rows, their Hamming distance to the query, their
    score (the distance, or the feedback score), how many images qualify in all, and
    the rank of the first row minus one (the page's offset)."""

    rows: np.ndarray
    distance: np.ndarray
    score: np.ndarray
    total: int
    offset: int = 0


@dataclass
class Result:
    """The page of one query (an image file, an image id or a code) of a search."""

    query: str
    predicted_label: int | None
    page: Page
    info: dict = field(default_factory=dict)


def row_of(index: Index, image_id: str, what: str = "image") -> int:
    """The global row of an indexed image id; NotInIndex when absent."""
    row = index.find(image_id)
    if row < 0:
        raise NotInIndex(f"no {what} with id {image_id!r} in the index")
    return row


def codes_of(index: Index, ids, what: str = "image") -> np.ndarray:
    """The packed codes (m, bits/8) of indexed images, each id once."""
    codes = [index.code_of(row_of(index, i, what)) for i in dict.fromkeys(ids)]
    return np.concatenate(codes) if codes else np.zeros((0, index.bits // 8), np.uint8)


def label_of_class(index: Index, class_name: str | None) -> int | None:
    """The label of a class name of the index (None: no class filter)."""
    if class_name is None:
        return None
    names = index.header.get("class_names") or []
    if class_name not in names:
        raise RshashError(f"no class {class_name!r} in the index")
    return names.index(class_name)


@dataclass(frozen=True)
class Place:
    """A filter on chips of geo-referenced scenes: a box (west, south, east, north) in
    EPSG:4326 that a chip's footprint must intersect, and a date range (ISO days, both
    ends included). Checked once, with one line naming the parameter at fault."""

    bbox: tuple[float, float, float, float] | None = None
    date_from: str | None = None
    date_to: str | None = None

    @classmethod
    def of(cls, bbox=None, date_from=None, date_to=None) -> Place | None:
        if bbox is None and date_from is None and date_to is None:
            return None
        if bbox is not None:
            if isinstance(bbox, str):
                bbox = bbox.split(",")
            try:
                bbox = tuple(float(v) for v in bbox)
            except (TypeError, ValueError):
                raise RshashError(
                    f"bbox must be four numbers west,south,east,north (got {bbox!r})"
                ) from None
            if len(bbox) != 4 or not all(np.isfinite(bbox)):
                raise RshashError(f"bbox must be four numbers west,south,east,north (got {bbox!r})")
            w, s, e, n = bbox
            if w > e or s > n:
                raise RshashError(
                    f"bbox {w:g},{s:g},{e:g},{n:g}: min > max (west must not exceed east, "
                    "south not north)"
                )
            if not (-180 <= w and e <= 180 and -90 <= s and n <= 90):
                raise RshashError(
                    f"bbox {w:g},{s:g},{e:g},{n:g}: outside lon -180..180, lat -90..90"
                )
        days = []
        for name, value in (("date_from", date_from), ("date_to", date_to)):
            if value is None:
                days.append(None)
                continue
            try:
                days.append(np.datetime64(str(value)[:10], "D"))
            except ValueError:
                raise RshashError(f"{name} must be a date YYYY-MM-DD (got {value!r})") from None
        if days[0] is not None and days[1] is not None and days[0] > days[1]:
            raise RshashError(f"date_from {date_from} is after date_to {date_to}")
        return cls(bbox, date_from, date_to)

    def mask(self, seg) -> np.ndarray:
        """Which rows of a segment qualify."""
        if seg.geo is None:
            raise RshashError("a place or date filter needs an index of geo-referenced scenes")
        keep = np.ones(seg.n, bool)
        if self.bbox is not None:
            w, s, e, n = self.bbox
            b = seg.geo["lonlat_bounds"]
            keep &= (b[:, 0] <= e) & (b[:, 2] >= w) & (b[:, 1] <= n) & (b[:, 3] >= s)
        if self.date_from is not None:
            keep &= seg.geo["date"] >= day_number(self.date_from)
        if self.date_to is not None:
            keep &= seg.geo["date"] <= day_number(self.date_to)
        return keep


def feedback_score(dist: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """Rocchio's score from the distances of the query (row 0), the relevant codes
    (next ``n_pos`` rows) and the rejected ones (the last ``n_neg``) to every code."""
    score = ALPHA * dist[0].astype(np.float64)
    if n_pos:
        score += BETA * dist[1 : 1 + n_pos].mean(0)
    if n_neg:
        score -= GAMMA * dist[1 + n_pos :].mean(0)
    return score


def search(
    index: Index,
    queries,
    k: int = 20,
    offset: int = 0,
    *,
    class_name: str | None = None,
    max_distance: int | None = None,
    relevant=(),
    not_relevant=(),
    place: Place | None = None,
    threads: int | None = 1,
) -> list[Page]:
    """One :class:`Page` per packed query code ((nq, bits/8) uint8): its results
    ``offset .. offset+k``, filtered by class, distance and place (a box and dates, on
    chips of scenes), ranked by distance or by the feedback score of the images marked
    ``relevant`` / ``not_relevant`` (ids)."""
    queries = np.atleast_2d(np.asarray(queries, np.uint8))
    if queries.shape[1:] != (index.bits // 8,):
        raise RshashError(
            f"query codes of {8 * queries.shape[-1]} bits; the index holds {index.bits}-bit codes"
        )
    if k < 1 or offset < 0:
        raise RshashError(f"k must be at least 1 and offset at least 0 (got {k}, {offset})")
    if max_distance is not None and not 0 <= max_distance <= index.bits:
        raise RshashError(
            f"max_distance must be at least 0 and at most {index.bits} (the code length)"
        )
    label = label_of_class(index, class_name)
    positive = codes_of(index, relevant, "relevant image")
    negative = codes_of(index, not_relevant, "rejected image")
    want = offset + k
    if place is not None and not index.header.get("geo"):
        raise RshashError("a place or date filter needs an index of geo-referenced scenes")
    plain = label is None and place is None and not len(positive) and not len(negative)
    if plain and max_distance is None:
        dist, rows = index.search(queries, want, threads)
        pages = []
        for d, r in zip(dist, rows):
            keep = r[offset:] >= 0
            d, r = d[offset:][keep].astype(np.int64), r[offset:][keep]
            pages.append(Page(r, d, d.astype(np.float64), len(index), offset))
        return pages
    return [
        _filtered(
            index, q[None], want, offset, label, max_distance, positive, negative, place, threads
        )
        for q in queries
    ]


def _filtered(index, query, want, offset, label, max_distance, positive, negative, place, threads):
    """A page of one query with a threshold, a class or place filter or feedback: each
    segment's best ``want`` candidates, then the one merge."""
    full_pass = label is not None or place is not None or len(positive) or len(negative)
    parts, bases, total = [], [], 0
    candidates, candidate_dist = [], []  # full pass: each candidate's distance to the query
    for start, seg in zip(index.starts, index.segments):
        if not seg.n:
            continue
        if not full_pass:
            lims, d, i = seg.codes.range_search(query, max_distance + 1, threads)
            total += int(lims[1])
            parts.append((d[None, :want].astype(np.int64), i[None, :want]))
        else:
            dist = seg.codes.distances(np.concatenate([query, positive, negative]), threads)
            score = feedback_score(dist, len(positive), len(negative))
            mask = np.ones(seg.n, bool)
            if label is not None:
                mask &= np.asarray(seg.label) == label
            if place is not None:
                mask &= place.mask(seg)
            if max_distance is not None:
                mask &= dist[0] <= max_distance
            r = np.flatnonzero(mask)
            total += len(r)
            if len(r) > want:  # the best ``want`` (ties at the cut by row, in the merge)
                kth = np.partition(score[r], want - 1)[want - 1]
                r = r[score[r] <= kth]
            parts.append((score[None, r], r[None]))
            candidates.append(r + start)
            candidate_dist.append(dist[0, r])
        bases.append(start)
    score, rows = merge_topk(parts, bases, want, nq=1)
    keep = rows[0, offset:] >= 0
    rows, score = rows[0, offset:][keep], score[0, offset:][keep]
    if full_pass:  # candidates are in row order (segments, then rows within each)
        at = np.searchsorted(np.concatenate(candidates), rows)
        dist = np.concatenate(candidate_dist)[at].astype(np.int64)
    else:
        dist = score.astype(np.int64)
    score = score.astype(np.float64)
    return Page(rows, dist, score, total, offset)


def search_images(
    index: Index,
    images: list[str],
    top: int = 20,
    model_path=None,
    backbone: str | None = None,
    threads: int = 1,
    **filters,
) -> list[Result]:
    """The ``top`` nearest index images to each query image (``filters``: those of
    :func:`search`). The model (the index's own unless given) and backbone are
    loaded once for all queries; a model other than the one the index was built
    with is an error."""
    recorded = index.header.get("model")
    if model_path is None and recorded is None:
        raise RshashError("the index records no model (built from codes): pass --model")
    model_path = Path(model_path or recorded)
    if not model_path.is_file():
        raise RshashError(f"model file not found: {model_path}")
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise RshashError(f"query image(s) not found: {', '.join(missing[:5])}")
    encoder = Encoder(model_path, backbone, threads).check(index)
    packed, predicted = encoder(images)
    pages = search(index, packed, top, threads=threads, **filters)
    return [
        Result(query, None if predicted is None else int(predicted[q]), page)
        for q, (query, page) in enumerate(zip(images, pages))
    ]


def search_ids(index: Index, ids: list[str], top: int = 20, threads: int = 1, **filters):
    """:func:`search_images` for indexed images named by id (no model needed)."""
    rows = [row_of(index, i) for i in ids]
    codes = np.concatenate([index.code_of(r) for r in rows])
    pages = search(index, codes, top, threads=threads, **filters)
    return [Result(i, index.predicted_of(r), p) for i, r, p in zip(ids, rows, pages)]
