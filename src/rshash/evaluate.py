"""Evaluate one cell under one ranking and write the metrics JSON.

numpy and numba only (never imports torch). The metrics are computed from a
few statistics per query (rshash.scoring): under the ``hamming`` ranking a
compiled kernel ranks each query's database by counting and collects them,
without storing the ranking (31,500 queries against 31,500 items in 2.3 s
on one thread, see benchmarks/evaluate.py); rankings by a real-valued
distance (euclidean, category_weighted) are scored from the distance matrix
of a query block without sorting the items; coarse_to_fine is materialized
in query blocks and read by a compiled kernel. Queries go in blocks whose
arrays hold about ``BLOCK_ITEMS`` entries in all, so memory stays bounded
whatever the number of queries and database items; the metrics are per
query, so blocks only fill their rows.

The metrics JSON holds every metric of the registry (rshash.metrics) that
applies to the cell, the curves, and under ``not_applicable`` every
registry metric that does not, with the reason: nothing is left out
silently.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.codes import ROTATED_ROLE, ROTATIONS, Codes, read_codes, rotated_id
from rshash.data.splits import read_split
from rshash.digest import digest_of
from rshash.metrics import (
    CURVE_KS,
    KS,
    MAP_CUTOFFS,
    accuracy,
    average_precision_from_sum,
    cutoff_metrics,
    hamming_pr_from_counts,
    nmrr_cap,
    nmrr_from_ranks,
    per_class_mean,
    precision_recall_curves,
    retrieved_accuracy_at,
    rotation_top3,
)
from rshash.provenance import collect
from rshash.rankings import RANKINGS, Database, get_ranking, rotated_copy_ids
from rshash.scoring import score_hamming

ACC_KS = (20,)
BLOCK_ITEMS = 1 << 21  # entries per query-block array: 16 MiB as int64
COLUMNS = ("packed", "value", "class_prob", "predicted_label")


def map_cutoffs_of(protocol: dict | None) -> tuple[int, ...]:
    """The integer mAP cut-offs of a protocol (``all`` is map_all, always computed),
    with 20 always included (the registry's default)."""
    cutoffs = {20}
    for c in (protocol or {}).get("map_cutoffs", []):
        if c != "all":
            cutoffs.add(int(c))
    return tuple(sorted(cutoffs))


def _columns(x, ranking: str) -> dict:
    """A dict of codes columns; a bare array is the ranking's single needed column."""
    if isinstance(x, dict):
        return x
    needs = get_ranking(ranking).needs
    if len(needs) != 1:
        raise ValueError(f"ranking {ranking!r} reads {needs}: pass a dict of columns")
    return {needs[0]: x}


def _rows_of(columns: dict, rows) -> dict:
    return {k: (None if v is None else v[rows]) for k, v in columns.items()}


@dataclass
class Evaluation:
    """What :func:`evaluate_arrays` returns: the scalar registry metrics (``ev["map_all"]``
    reads one), the curves (with ``with_curves``), and every registry metric that does
    not apply, with the reason."""

    metrics: dict[str, float]
    curves: dict = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]


def evaluate_arrays(
    query,
    query_labels,
    database,
    db_labels,
    ranking: str = "hamming",
    *,
    ranking_params: dict | None = None,
    map_cutoffs=MAP_CUTOFFS,
    ks=KS,
    exclude: np.ndarray | None = None,
    block: int | None = None,
    bits: int | None = None,
    with_curves: bool = False,
    rotated: dict | None = None,
    threads: int | None = 1,
):
    """Registry metrics for queries against a database (in tie order).

    ``query`` / ``database`` are dicts of codes columns (``packed``,
    ``value``, ``class_prob``, ``predicted_label``; or a bare array, the
    ranking's single column). ``exclude`` (nq,) names a database index to
    leave out of each query's ranking (leave-one-out), -1 for none.
    ``query_ms`` times the ranking: the distances and the ordering, or, for
    the rankings scored without ordering the items (hamming, euclidean,
    category_weighted), the scoring kernel that takes the ordering's place.
    ``block`` queries are ranked at a time (default: see BLOCK_ITEMS); the
    results do not depend on it. ``threads``: the compiled passes' threads
    (None: all cores).
    ``rotated`` holds the columns of each query's 90/180/270-degree copies,
    shaped (nq, 3, ...): ``rotation_top3`` is computed from them (for the
    ``hamming`` and ``euclidean`` rankings).

    Returns an :class:`Evaluation`; its curves are computed with ``with_curves``.
    """
    query, database = _columns(query, ranking), _columns(database, ranking)
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    nq, ndb = len(query_labels), len(db_labels)
    if nq == 0 or ndb == 0:
        raise ValueError(f"need queries and a database, got {nq} queries and {ndb} items")
    exclude = np.full(nq, -1) if exclude is None else np.asarray(exclude, dtype=np.intp)
    has_exclude = exclude >= 0
    # relevant items per query in the whole database (minus a left-out copy of itself)
    labels, counts = np.unique(db_labels, return_counts=True)
    pos = np.searchsorted(labels, query_labels)
    found = (pos < len(labels)) & (labels[np.minimum(pos, len(labels) - 1)] == query_labels)
    n_relevant = np.where(found, counts[np.minimum(pos, len(labels) - 1)], 0)
    excl_rel = has_exclude & (db_labels[np.where(has_exclude, exclude, 0)] == query_labels)
    n_relevant = n_relevant - excl_rel
    gtm = int(n_relevant.max())
    k_cap = nmrr_cap(n_relevant, gtm)
    # curve cut-offs every query's ranking has (a left-out query ranks ndb - 1
    # items), so the curves of every block add up point by point
    shortest = ndb - int(has_exclude.any())
    curve_cutoffs = sorted({min(k, shortest) for k in CURVE_KS})
    # the ranks any cut-off metric reads
    width = min(ndb, max((*map_cutoffs, *ks, *ACC_KS, *(CURVE_KS if with_curves else ()))))

    spec = get_ranking(ranking)
    packed = query.get("packed") is not None and database.get("packed") is not None
    if packed and bits is None:
        bits = 8 * np.shape(database["packed"])[1]
    # real-valued columns in float64 and the codes in a binary index, once
    database = Database(database)
    if block is None:
        # entries a block holds per query: the first ranks, the Hamming histograms, and
        # a distance row and its sorted copy, or a ranking (none: scored by counting)
        per_query_items = (
            width
            + (2 * (bits + 1) if packed else 0)
            + (0 if spec.score is not None else 2 * ndb if spec.distances is not None else ndb)
        )
        block = max(1, BLOCK_ITEMS // per_query_items)
    predicted = (
        query.get("predicted_label") is not None and database.get("predicted_label") is not None
    )
    curve_ks = None
    values: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    seconds = 0.0

    def put(name, rows, v):
        values.setdefault(name, np.empty(nq))[rows] = v

    def add(name, v):
        sums[name] = sums.get(name, 0) + np.asarray(v, dtype=np.float64).sum(0)

    for start in range(0, nq, block):
        stop = min(start + block, nq)
        rows = slice(start, stop)
        q_block = _rows_of(query, rows)
        args = (query_labels[rows], db_labels, k_cap[rows], width, exclude[rows])
        tic = time.perf_counter()
        scores = spec.scores(q_block, database, *args, params=ranking_params, threads=threads)
        seconds += time.perf_counter() - tic
        put("map_all", rows, average_precision_from_sum(scores.ap_sum, n_relevant[rows]))
        put("anmrr", rows, nmrr_from_ranks(scores.rank_sum, scores.n_within, n_relevant[rows], gtm))
        for group, ranked in _by_length(scores.top, exclude[rows], ndb):
            g = start + group
            rel = db_labels[ranked] == query_labels[g, None]
            for name, v in cutoff_metrics(rel, n_relevant[g], map_cutoffs, ks).items():
                put(name, g, v)
            if with_curves:
                curve_ks, p_curve, r_curve = precision_recall_curves(
                    rel, n_relevant[g], curve_cutoffs
                )
                add("p_at_k", p_curve)
                add("r_at_k", r_curve)
            if predicted:
                for k in ACC_KS:
                    put(
                        f"acc_retrieved_at_{k}",
                        g,
                        retrieved_accuracy_at(
                            database["predicted_label"][ranked], db_labels[ranked], k
                        ),
                    )
        if rotated is not None and spec.rotation_top3 is not None:
            q_rot = {k: v[rows] for k, v in rotated.items() if v is not None}
            ranked = spec.rotation_top3(q_block, q_rot, database, threads=threads)
            put(
                "rotation_top3",
                np.arange(start, stop),
                rotation_top3(ranked, rotated_copy_ids(ndb, stop - start)),
            )
        if packed:
            if scores.counts is None:  # the Hamming histograms of a non-Hamming ranking
                scores = score_hamming(q_block["packed"], database.index, *args, threads=threads)
            precision, recall = hamming_pr_from_counts(scores.counts, scores.relevant)
            put("p_hamming_r2", rows, precision[:, min(2, bits)])
            if with_curves:
                add("pr_precision", precision)
                add("pr_recall", recall)

    metrics = {name: float(v.mean()) for name, v in values.items()}
    if predicted:
        metrics["acc_query"] = accuracy(query["predicted_label"], query_labels)
    metrics["query_ms"] = 1000.0 * seconds / nq
    curves = (
        {}
        if not with_curves
        else {
            "p_at_k": {"k": list(curve_ks), "precision": (sums["p_at_k"] / nq).tolist()},
            "r_at_k": {"k": list(curve_ks), "recall": (sums["r_at_k"] / nq).tolist()},
            "ap_per_class": {
                str(k): v for k, v in per_class_mean(values["map_all"], query_labels).items()
            },
        }
    )
    if packed and with_curves:
        curves["pr_hamming"] = {
            "radius": list(range(bits + 1)),
            "precision": (sums["pr_precision"] / nq).tolist(),
            "recall": (sums["pr_recall"] / nq).tolist(),
        }
    not_applicable = {}
    if not packed:
        for name in ("p_hamming_r2", "pr_hamming"):
            not_applicable[name] = "real-valued method: no binary codes"
    if not predicted:
        for name in ("acc_query", *(f"acc_retrieved_at_{k}" for k in ACC_KS)):
            not_applicable[name] = "method has no class head (no predicted_label)"
    if rotated is None:
        not_applicable["rotation_top3"] = "no rotated copies of the queries were encoded"
    elif spec.rotation_top3 is None:
        names = [r.name for r in RANKINGS.values() if r.rotation_top3 is not None]
        not_applicable["rotation_top3"] = f"computed for the {' and '.join(names)} rankings only"
    return Evaluation(metrics, curves, not_applicable)


def _by_length(top: np.ndarray, exclude: np.ndarray, ndb: int):
    """Yield (rows, ranked): the rows of ``top`` grouped by the length of their
    ranking (ndb, or ndb - 1 with a left-out item), cut to that length."""
    has = exclude >= 0
    for rows in (np.flatnonzero(~has), np.flatnonzero(has)):
        if len(rows):
            n = ndb - int(has[rows[0]])
            yield rows, top[rows, : min(n, top.shape[1])]


def evaluate_cell(
    codes_path: str | os.PathLike,
    split_path: str | os.PathLike,
    out_path: str | os.PathLike,
    ranking: str = "hamming",
    protocol: dict | None = None,
    ranking_params: dict | None = None,
    cell: dict | None = None,
    block: int | None = None,
    threads: int | None = 1,
) -> dict:
    """Evaluate a codes file under its split and write ``metrics/{cell}/{ranking}.json``.

    The database is put in the split's ``db_order`` (the tie rule); a query
    that is also in the database is left out of its own ranking
    (leave-one-out protocols). ``protocol`` gives the mAP cut-offs.
    ``n_database`` counts the whole database. The provenance's config hash is that
    of the cell, protocol and ranking parameters.
    """
    tic = time.perf_counter()
    spec = get_ranking(ranking)
    codes = read_codes(codes_path)
    for column in spec.needs:
        if getattr(codes, column) is None:
            raise RshashError(
                f"ranking {ranking!r} needs the '{column}' column, which {codes_path} does not have"
            )
    split = read_split(split_path)
    queries = split[split.role == "query"]
    database = split[split.role == "database"].sort_values("db_order", kind="stable")
    if len(queries) == 0 or len(database) == 0:
        raise RshashError(f"{split_path}: needs query and database rows")
    if not np.array_equal(database.db_order.to_numpy(), np.arange(len(database))):
        raise RshashError(
            f"{split_path}: db_order of the database rows is not a permutation "
            f"of 0..{len(database) - 1}"
        )
    q_rows = _rows(codes, queries.image_id.to_numpy(), "query", split_path)
    db_rows = _rows(codes, database.image_id.to_numpy(), "database", split_path)
    exclude = pd.Index(codes.image_id[db_rows]).get_indexer(codes.image_id[q_rows])
    columns = {c: getattr(codes, c) for c in COLUMNS}
    rotated = _rotated_columns(codes, q_rows, columns)
    ev = evaluate_arrays(
        _rows_of(columns, q_rows),
        codes.label[q_rows],
        _rows_of(columns, db_rows),
        codes.label[db_rows],
        ranking,
        ranking_params=ranking_params,
        map_cutoffs=map_cutoffs_of(protocol),
        exclude=exclude,
        block=block,
        bits=codes.bits or None,
        with_curves=True,
        rotated=rotated,
        threads=threads,
    )
    result = {
        "cell": cell or {},
        "ranking": ranking,
        "ranking_params": ranking_params or {},
        "protocol": protocol or {},
        "n_queries": int(len(q_rows)),
        "n_database": int(len(db_rows)),
        "leave_one_out": bool((exclude >= 0).any()),
        "metrics": ev.metrics,
        "not_applicable": ev.not_applicable,
        "curves": ev.curves,
        "provenance": {
            **collect(
                {
                    "cell": cell or {},
                    "protocol": protocol or {},
                    "ranking_params": ranking_params or {},
                },
                time.perf_counter() - tic,
            ),
            "inputs": {
                "codes": {"path": str(codes_path), "sha256": codes.sha256},
                "split": {"path": str(split_path), "sha256": digest_of(split_path)},
                "trained_from": codes.inputs,
            },
        },
    }
    atomic_write(out_path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    return result


def _rotated_columns(codes: Codes, q_rows: np.ndarray, columns: dict) -> dict | None:
    """Columns of the queries' rotated copies (role ``rotated``, ids ``{id}@rot{deg}``),
    shaped (nq, 3, ...); None when the codes file has none."""
    rot_rows = codes.select(ROTATED_ROLE)
    if len(rot_rows) == 0:
        return None
    index = {image_id: r for image_id, r in zip(codes.image_id[rot_rows], rot_rows)}
    try:
        rows = np.array(
            [[index[rotated_id(i, d)] for d in ROTATIONS] for i in codes.image_id[q_rows]]
        )
    except KeyError as err:
        raise RshashError(f"{codes.path}: rotated copies are missing for query {err}") from None
    return {k: None if v is None else v[rows] for k, v in columns.items()}


def _rows(codes: Codes, image_ids: np.ndarray, role: str, split_path) -> np.ndarray:
    """Rows of ``codes`` with ``role`` for ``image_ids``, in that order."""
    rows = codes.select(role)
    index = pd.Index(codes.image_id[rows])
    if not index.is_unique:
        raise RshashError(f"{codes.path}: an image_id appears twice among '{role}' rows")
    pos = index.get_indexer(image_ids)
    missing = image_ids[pos < 0]
    if len(missing):
        raise RshashError(
            f"{codes.path} lacks {len(missing)} '{role}' image(s) of split {split_path}, "
            f"e.g. {', '.join(map(str, missing[:3]))}"
        )
    return rows[pos]
