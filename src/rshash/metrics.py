"""Retrieval metrics (numpy only).

Inputs
------
``rel`` is (nq, ndb) bool: ``rel[i, j]`` says the j-th ranked database item
shares query i's label. ``n_relevant`` (nq,) counts the relevant items in
the whole database for each query (it may exceed ``rel[i].sum()`` when the
ranking is truncated). Per-query functions return float64 (nq,) arrays; a
cut-off ``k`` larger than ``ndb`` is clamped to ``ndb``. Ranks are 1-based.

Definitions
-----------
* Hit precision at rank n: (relevant items in ranks 1..n) / n, taken only at
  the ranks n that hold a relevant item.
* ``map_all`` (AP@all): sum of the hit precisions over the whole ranking,
  divided by ALL relevant items in the database (``n_relevant``), so
  relevant items missing from a truncated ranking count as misses.
* ``map_at_{k}`` (AP@k, MiLaN code): sum of the hit precisions in the top k,
  divided by the relevant items RETRIEVED in the top k (not by k, not by
  ``n_relevant``).
* A query with no relevant item (``n_relevant`` 0, or none in the top k for
  AP@k) has AP 0. Recall with no relevant item is 0.
* ``p_at_{k}`` = relevant in top k / k; ``r_at_{k}`` = relevant in top k /
  ``n_relevant``.
* ``anmrr`` (MPEG-7): for a query with NG = ``n_relevant`` relevant items,
  K = min(4 NG, 2 GTM) with GTM the largest NG over ALL queries of the
  evaluation; Rank(k) is the rank of the k-th relevant item when <= K, else
  1.25 K (also for relevant items beyond the supplied ranking);
  AVR = sum_k Rank(k) / NG; MRR = AVR - 0.5 - NG/2;
  NMRR = MRR / (1.25 K - 0.5 - NG/2), in [0, 1]; ANMRR is the mean NMRR,
  lower is better. A query with NG = 0 gets NMRR 1.0 (the worst value).
* ``pr_hamming`` / ``p_hamming_r2``: at Hamming radius r, the retrieved set
  is every database item with distance <= r (unranked, ties all included).
  Precision = relevant retrieved / retrieved, 0 when nothing is retrieved;
  recall = relevant retrieved / all relevant, 0 when there is no relevant
  item. ``p_hamming_r2`` is the precision at radius min(2, bits).
* ``acc_query``: share of queries whose predicted label equals the true one;
  ``acc_retrieved_at_{k}``: per query, share of its top-k retrieved items
  whose predicted label equals their own true label (DHCNN).
* ``rotation_top3``: per query, share of its three rotated copies (90, 180,
  270 degrees, appended to the database) found in its top 3.

The registry
------------
:data:`METRICS` holds one :class:`Metric` per metric of the metrics JSON (the
scalars and the curves): its name (``map_at_{k}`` names one metric per
cut-off), the shared inputs it ``needs`` (:data:`INPUTS`; evaluation computes
each once per block of queries and leaves a metric out, under
``not_applicable`` with the reason, when one of its inputs cannot exist for
the cell), and a function from those inputs to its values. Evaluation
(``rshash.evaluate``) is one loop over the registry. Adding a metric is one
entry here plus its test (CONTRIBUTING.md, "Add a metric").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

KS = (5, 10, 20, 50, 100)
MAP_CUTOFFS = (20,)
CURVE_KS = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 300, 400, 500, 750, 1000)


def _check_k(k: int, rel: np.ndarray) -> int:
    if k < 1:
        raise ValueError(f"cut-off k must be positive, got {k}")
    return min(int(k), rel.shape[1])


def _hit_precision(rel: np.ndarray) -> np.ndarray:
    """Precision at each rank where a relevant item sits, 0 elsewhere."""
    hits = np.cumsum(rel, axis=1, dtype=np.int64)
    return np.where(rel, hits / np.arange(1, rel.shape[1] + 1), 0.0)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)


def average_precision_all(rel: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP over the whole ranking, divided by all relevant items in the database."""
    rel = np.asarray(rel, dtype=bool)
    return average_precision_from_sum(_hit_precision(rel).sum(1), n_relevant)


def average_precision_from_sum(hit_precision_sum: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP@all from each query's sum of hit precisions over its whole ranking."""
    return _safe_divide(np.asarray(hit_precision_sum, dtype=np.float64), n_relevant)


def average_precision_at(rel: np.ndarray, k: int) -> np.ndarray:
    """AP of the top k, divided by the relevant items retrieved in the top k (MiLaN code)."""
    rel = np.asarray(rel, dtype=bool)[:, : _check_k(k, rel)]
    return _safe_divide(_hit_precision(rel).sum(1), rel.sum(1))


def precision_at(rel: np.ndarray, k: int) -> np.ndarray:
    """Share of relevant items in the top k."""
    k = _check_k(k, rel)
    return np.asarray(rel, dtype=bool)[:, :k].sum(1) / k


def recall_at(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k over all relevant items (0 when there are none)."""
    k = _check_k(k, rel)
    return _safe_divide(np.asarray(rel, dtype=bool)[:, :k].sum(1), n_relevant)


def per_query(
    rel: np.ndarray, n_relevant: np.ndarray, map_cutoffs=MAP_CUTOFFS, ks=KS
) -> dict[str, np.ndarray]:
    """Every registry metric, one value per query."""
    return {
        "map_all": average_precision_all(rel, n_relevant),
        **cutoff_metrics(rel, n_relevant, map_cutoffs, ks),
    }


def cutoff_metrics(
    rel: np.ndarray, n_relevant: np.ndarray, map_cutoffs=MAP_CUTOFFS, ks=KS
) -> dict[str, np.ndarray]:
    """``map_at_{k}``, ``p_at_{k}``, ``r_at_{k}`` per query. They read only the
    first max(k) columns of ``rel``, so a ranking truncated there (with every
    query's full ``n_relevant``) gives the same values as the whole one."""
    out = {}
    for k in map_cutoffs:
        out[f"map_at_{k}"] = average_precision_at(rel, k)
    for k in ks:
        out[f"p_at_{k}"] = precision_at(rel, k)
    for k in ks:
        out[f"r_at_{k}"] = recall_at(rel, n_relevant, k)
    return out


def compute(
    rel: np.ndarray, n_relevant: np.ndarray, map_cutoffs=MAP_CUTOFFS, ks=KS
) -> dict[str, float]:
    """Means over queries: ``map_all``, ``map_at_{k}``, ``p_at_{k}``, ``r_at_{k}``."""
    values = per_query(rel, n_relevant, map_cutoffs, ks)
    return {name: float(v.mean()) for name, v in values.items()}


def precision_recall_curves(
    rel: np.ndarray, n_relevant: np.ndarray, ks=CURVE_KS
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """P@k and R@k curves: ``(ks_used, precision, recall)``.

    Each k is clamped to ``ndb`` and duplicates are dropped (so every k above
    ``ndb`` collapses to a single ``ndb`` point); ``ks_used`` is ascending.
    ``precision`` and ``recall`` are (nq, len(ks_used)) with the same values
    as :func:`precision_at` / :func:`recall_at`.
    """
    rel = np.asarray(rel, dtype=bool)
    used = sorted({_check_k(k, rel) for k in ks})
    if not used:
        raise ValueError("no cut-off given")
    idx = np.asarray(used) - 1
    hits = np.cumsum(rel[:, : used[-1]], axis=1, dtype=np.int64)[:, idx]
    precision = hits / np.asarray(used, dtype=np.float64)
    recall = _safe_divide(
        hits, np.broadcast_to(np.asarray(n_relevant, dtype=np.float64)[:, None], hits.shape)
    )
    return used, precision, recall


def nmrr_cap(n_relevant: np.ndarray, gtm: int) -> np.ndarray:
    """Per query, K = min(4 NG, 2 GTM): the last rank at which ANMRR counts a relevant item."""
    return np.minimum(4 * np.asarray(n_relevant, dtype=np.int64), 2 * int(gtm))


def nmrr(rel: np.ndarray, n_relevant: np.ndarray, gtm: int) -> np.ndarray:
    """Per-query normalized modified retrieval rank (MPEG-7), lower is better.

    ``gtm`` is the largest ``n_relevant`` over all queries of the evaluation
    (passed in because evaluation runs in query blocks). Relevant items not
    within the first K ranks, including those beyond ``rel``'s columns,
    get rank 1.25 K. A query with no relevant item gets 1.0 (worst).
    """
    rel = np.asarray(rel, dtype=bool)
    ng = np.asarray(n_relevant, dtype=np.int64)
    if ng.shape != (rel.shape[0],):
        raise ValueError(f"n_relevant shape {ng.shape} does not match {rel.shape[0]} queries")
    k_cap = nmrr_cap(ng, gtm)
    width = min(rel.shape[1], int(k_cap.max(initial=0)))
    positions = np.arange(1, width + 1)
    within = rel[:, :width] & (positions <= k_cap[:, None])
    return nmrr_from_ranks((within * positions).sum(1), within.sum(1), ng, gtm)


def nmrr_from_ranks(
    rank_sum: np.ndarray, n_within: np.ndarray, n_relevant: np.ndarray, gtm: int
) -> np.ndarray:
    """NMRR per query from the sum of the (1-based) ranks of its relevant items
    within rank K (see :func:`nmrr_cap`) and their number; the other relevant
    items count as rank 1.25 K."""
    ng = np.asarray(n_relevant, dtype=np.int64)
    n_within = np.asarray(n_within, dtype=np.int64)
    if ng.size and ng.max() > gtm:
        raise ValueError(f"gtm {gtm} is below the largest n_relevant {ng.max()}")
    if (n_within > ng).any():
        raise ValueError("rel holds more relevant items than n_relevant")
    k_cap = nmrr_cap(ng, gtm)
    rank_sum = np.asarray(rank_sum, dtype=np.float64) + (ng - n_within) * 1.25 * k_cap
    out = np.ones(len(ng))
    ok = ng > 0
    avr = rank_sum[ok] / ng[ok]
    mrr = avr - 0.5 - ng[ok] / 2
    out[ok] = mrr / (1.25 * k_cap[ok] - 0.5 - ng[ok] / 2)
    return out


def hamming_pr(
    distances: np.ndarray, same_label: np.ndarray, bits: int, block_elements: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each Hamming radius r = 0..bits, per query.

    ``distances`` (nq, ndb) integer Hamming distances in any order and
    ``same_label`` (nq, ndb) bool aligned with them. Items with distance
    <= r are retrieved. Returns ``(precision, recall)``, each (nq, bits + 1);
    precision is 0 when nothing is retrieved, recall 0 when nothing is
    relevant. Counts per (query, distance) with ``np.bincount``, about
    ``block_elements`` entries at a time.
    """
    distances = np.asarray(distances)
    same_label = np.asarray(same_label, dtype=bool)
    if distances.shape != same_label.shape or distances.ndim != 2:
        raise ValueError(f"shapes differ: {distances.shape} vs {same_label.shape}")
    nq, ndb = distances.shape
    nb = int(bits) + 1
    if distances.size and (distances.min() < 0 or distances.max() > bits):
        raise ValueError(f"distances must lie in 0..{bits}")
    counts = np.zeros((nq, nb), dtype=np.int64)
    relevant = np.zeros((nq, nb), dtype=np.int64)
    step = max(1, block_elements // max(ndb, 1))
    for start in range(0, nq, step):
        d = distances[start : start + step].astype(np.int64)
        m = len(d)
        flat = (np.arange(m)[:, None] * nb + d).ravel()
        counts[start : start + m] = np.bincount(flat, minlength=m * nb).reshape(m, nb)
        relevant[start : start + m] = np.bincount(
            flat[same_label[start : start + m].ravel()], minlength=m * nb
        ).reshape(m, nb)
    return hamming_pr_from_counts(counts, relevant)


def hamming_pr_from_counts(
    counts: np.ndarray, relevant: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hamming_pr` from per-query histograms: ``counts[i, d]`` database items
    at distance d from query i, ``relevant[i, d]`` the relevant ones among them."""
    retrieved = np.cumsum(counts, axis=1)
    hits = np.cumsum(relevant, axis=1)
    precision = _safe_divide(hits, retrieved)
    recall = _safe_divide(hits, np.broadcast_to(hits[:, -1:], hits.shape))
    return precision, recall


def retrieved_accuracy_at(
    ranked_predicted: np.ndarray, ranked_true: np.ndarray, k: int
) -> np.ndarray:
    """Per query, share of the top k retrieved items whose predicted label is their true label.

    Both inputs are (nq, ndb) labels of the database items in ranked order.
    """
    ranked_predicted = np.asarray(ranked_predicted)
    ranked_true = np.asarray(ranked_true)
    if ranked_predicted.shape != ranked_true.shape or ranked_true.ndim != 2:
        raise ValueError(f"shapes differ: {ranked_predicted.shape} vs {ranked_true.shape}")
    k = _check_k(k, ranked_true)
    return (ranked_predicted[:, :k] == ranked_true[:, :k]).mean(1)


def accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of predicted labels equal to the true ones."""
    predicted, true = np.asarray(predicted), np.asarray(true)
    if predicted.shape != true.shape or true.size == 0:
        raise ValueError(f"need two equal, non-empty shapes, got {predicted.shape}, {true.shape}")
    return float((predicted == true).mean())


def per_class_mean(values: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Mean of a per-query metric over the queries of each class, keyed by class label."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    if values.shape != labels.shape or values.ndim != 1:
        raise ValueError(f"need two equal 1-d shapes, got {values.shape}, {labels.shape}")
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(classes))
    sizes = np.bincount(inverse, minlength=len(classes))
    return {int(c): float(s / n) for c, s, n in zip(classes, sums, sizes)}


def rotation_top3(ranked_ids: np.ndarray, rotated_ids: np.ndarray) -> np.ndarray:
    """Per query, share of its three rotated copies among its first 3 ranked items.

    ``ranked_ids`` (nq, >= 3) database indices in ranked order (database
    augmented with the copies); ``rotated_ids`` (nq, 3) the indices of the
    query's 90/180/270-degree copies. Values in {0, 1/3, 2/3, 1}.
    """
    ranked_ids = np.asarray(ranked_ids)
    rotated_ids = np.asarray(rotated_ids)
    if ranked_ids.ndim != 2 or ranked_ids.shape[1] < 3:
        raise ValueError(f"ranked_ids must be (nq, >= 3), got {ranked_ids.shape}")
    if rotated_ids.shape != (ranked_ids.shape[0], 3):
        raise ValueError(f"rotated_ids must be ({ranked_ids.shape[0]}, 3), got {rotated_ids.shape}")
    found = (ranked_ids[:, :3, None] == rotated_ids[:, None, :]).any(axis=1)
    return found.mean(1)


# --- the registry ---------------------------------------------------------------------

ACC_KS = (20,)

# The shared inputs a metric may read, by name. ``q`` (per query) is a set of queries:
# a block of them, or, for a metric that reads the first ranks (RANK_INPUTS), the
# queries of a block whose rankings have the same length (ndb, or ndb - 1 with a
# left-out item), so that a cut-off k above the length is clamped to it. ``e`` (the
# whole evaluation) is what a metric's ``summary`` reads.
INPUTS: dict[str, str] = {
    # q: every query
    "labels": "q/e: (n,) the queries' labels",
    "n_relevant": "q: (n,) relevant items in the database (a left-out query's copy aside)",
    "gtm": "q: the largest n_relevant over all queries of the evaluation",
    "bits": "q/e: the code length (binary codes)",
    "scores": "q: the ranking's statistics (rshash.scoring.Scores: ap_sum, rank_sum, n_within)",
    "hamming_pr": "q: (precision, recall), each (n, bits + 1): at each Hamming radius",
    "rotation": "q: (ranked, copies), each (n, 3): the first 3 ranked ids of the database "
    "plus the query's rotated copies, and the copies' ids",
    # q: the first ranks (served per ranking length)
    "ranked": "q: (n, w) the first ranked database indices",
    "rel": "q: (n, w) bool, the first ranked items share the query's label",
    "ranked_labels": "q: (n, w) the true labels of the first ranked items",
    "ranked_predicted": "q: (n, w) the predicted labels of the first ranked items",
    "curve_ks": "q/e: the curve cut-offs every query's ranking reaches (CURVE_KS clamped)",
    # e: the whole evaluation
    "nq": "e: the number of queries",
    "query_predicted": "e: (nq,) the queries' predicted labels",
    "seconds": "e: the ranking's time over all queries",
    "values": "e: the per-query values of the scalar metrics, by name",
}
RANK_INPUTS = frozenset({"ranked", "rel", "ranked_labels", "ranked_predicted"})


@dataclass(frozen=True)
class Metric:
    """A registry entry.

    ``name``: the metric's name in the metrics JSON; with ``{k}`` in it, one metric
    per cut-off of ``cutoffs`` (a tuple, or the name of the evaluation's list:
    ``"map_cutoffs"`` or ``"ks"``). A metric reading the first ranks reads the first
    max(cutoffs) of them. ``needs``: the shared inputs it reads (:data:`INPUTS`).
    ``per_query(q[, k])``: its value for each query of ``q``, (n,) (the scalar is
    the mean over all queries); for a curve, a dict of (n, m) arrays, summed over
    all queries. ``summary(e, means)``: the value from the whole evaluation (``means``:
    a curve's per-query arrays averaged over the queries, else None). ``curve``:
    stored under ``curves`` (computed when curves are asked for) instead of ``metrics``.
    """

    name: str
    needs: tuple[str, ...]
    per_query: Callable | None = None
    summary: Callable | None = None
    cutoffs: str | tuple[int, ...] = ()
    curve: bool = False

    def __post_init__(self):
        unknown = [n for n in self.needs if n not in INPUTS]
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown input(s) {unknown}")
        if self.per_query is None and self.summary is None:
            raise ValueError(f"metric {self.name!r} needs a per_query or a summary function")
        if "{k}" in self.name and not self.cutoffs:
            raise ValueError(f"metric {self.name!r}: a {{k}} in the name needs cutoffs")
        if "{k}" in self.name and self.per_query is None:
            raise ValueError(f"metric {self.name!r}: a family of cut-offs is per query")

    @property
    def reads_ranks(self) -> bool:
        return not RANK_INPUTS.isdisjoint(self.needs)

    def ks(self, lists: dict) -> tuple[int, ...]:
        """Its cut-offs; ``lists`` maps ``map_cutoffs`` and ``ks`` to the evaluation's."""
        return tuple(lists[self.cutoffs] if isinstance(self.cutoffs, str) else self.cutoffs)

    def names(self, lists: dict) -> list[tuple[str, int | None]]:
        """(name, k) of each metric it gives (k None without a cut-off)."""
        if "{k}" not in self.name:
            return [(self.name, None)]
        return [(self.name.format(k=k), k) for k in self.ks(lists)]

    def pattern(self) -> str:
        """A regular expression matching its names."""
        return re.escape(self.name).replace(re.escape("{k}"), "[1-9][0-9]*")


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (after the others: the metrics JSON keeps the
    registry's order); a second metric of the same name is an error."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    METRICS[metric.name] = metric
    return metric


def is_metric(name: str) -> bool:
    """Whether ``name`` is a scalar registry metric (``map_at_15`` included)."""
    return any(re.fullmatch(m.pattern(), name) for m in METRICS.values() if not m.curve)


def _curve(field: str, column: int):
    def per_query(q):
        return {field: precision_recall_curves(q.rel, q.n_relevant, q.curve_ks)[column]}

    def summary(e, means):
        return {"k": list(e.curve_ks), field: means[field].tolist()}

    return per_query, summary


for _metric in (
    Metric(
        "map_all",
        ("scores", "n_relevant"),
        lambda q: average_precision_from_sum(q.scores.ap_sum, q.n_relevant),
    ),
    Metric(
        "anmrr",
        ("scores", "n_relevant", "gtm"),
        lambda q: nmrr_from_ranks(q.scores.rank_sum, q.scores.n_within, q.n_relevant, q.gtm),
    ),
    Metric(
        "map_at_{k}",
        ("rel",),
        lambda q, k: average_precision_at(q.rel, k),
        cutoffs="map_cutoffs",
    ),
    Metric("p_at_{k}", ("rel",), lambda q, k: precision_at(q.rel, k), cutoffs="ks"),
    Metric(
        "r_at_{k}",
        ("rel", "n_relevant"),
        lambda q, k: recall_at(q.rel, q.n_relevant, k),
        cutoffs="ks",
    ),
    Metric(
        "acc_retrieved_at_{k}",
        ("ranked_predicted", "ranked_labels"),
        lambda q, k: retrieved_accuracy_at(q.ranked_predicted, q.ranked_labels, k),
        cutoffs=ACC_KS,
    ),
    Metric("rotation_top3", ("rotation",), lambda q: rotation_top3(*q.rotation)),
    Metric("p_hamming_r2", ("hamming_pr", "bits"), lambda q: q.hamming_pr[0][:, min(2, q.bits)]),
    Metric(
        "acc_query",
        ("query_predicted", "labels"),
        summary=lambda e, _: accuracy(e.query_predicted, e.labels),
    ),
    Metric("query_ms", ("seconds", "nq"), summary=lambda e, _: 1000.0 * e.seconds / e.nq),
    Metric(
        "p_at_k",
        ("rel", "n_relevant", "curve_ks"),
        *_curve("precision", 1),
        cutoffs=CURVE_KS,
        curve=True,
    ),
    Metric(
        "r_at_k",
        ("rel", "n_relevant", "curve_ks"),
        *_curve("recall", 2),
        cutoffs=CURVE_KS,
        curve=True,
    ),
    Metric(
        "ap_per_class",
        ("values", "labels"),
        summary=lambda e, _: {
            str(c): v for c, v in per_class_mean(e.values["map_all"], e.labels).items()
        },
        curve=True,
    ),
    Metric(
        "pr_hamming",
        ("hamming_pr", "bits"),
        lambda q: dict(zip(("precision", "recall"), q.hamming_pr)),
        lambda e, m: {
            "radius": list(range(e.bits + 1)),
            "precision": m["precision"].tolist(),
            "recall": m["recall"].tolist(),
        },
        curve=True,
    ),
):
    register_metric(_metric)
