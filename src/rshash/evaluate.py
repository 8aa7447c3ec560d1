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

Evaluation is one loop over the metric registry (rshash.metrics.METRICS):
each block of queries is scored once (the ranking's Scores) and the other
shared inputs a metric needs (the relevance of the first ranks, the Hamming
histograms, the rotated copies' ranks) are computed on first use, once per
block; every metric is then a function of them. The metrics JSON holds
every registry metric that applies to the cell, the curves, and under
``not_applicable`` every registry metric that does not, with the reason
(the shared input it needs that the cell cannot have): nothing is left out
silently.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
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
    METRICS,
    hamming_pr_from_counts,
    nmrr_cap,
)
from rshash.provenance import collect
from rshash.rankings import RANKINGS, Database, get_ranking, rotated_copy_ids
from rshash.scoring import Scores, score_hamming

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

    spec = get_ranking(ranking)
    packed = query.get("packed") is not None and database.get("packed") is not None
    if packed and bits is None:
        bits = 8 * np.shape(database["packed"])[1]
    predicted = (
        query.get("predicted_label") is not None and database.get("predicted_label") is not None
    )
    # the registry metrics this evaluation computes, and why each other one does not apply
    lists = {"map_cutoffs": tuple(map_cutoffs), "ks": tuple(ks)}
    missing = _missing_inputs(packed, predicted, rotated, spec)
    active, not_applicable = [], []
    for metric in METRICS.values():
        lacking = [i for i, n in enumerate(missing) if n in metric.needs]
        if lacking:
            reason = list(missing.values())[lacking[0]]
            not_applicable += [(lacking[0], name, reason) for name, _ in metric.names(lists)]
        elif with_curves or not metric.curve:
            active.append(metric)
    # grouped by the missing input (a stable sort: registry order within a group)
    not_applicable = {name: why for _, name, why in sorted(not_applicable, key=lambda t: t[0])}
    # the ranks any metric reads (those that do not apply too, so the blocks stay the same)
    width = min(
        ndb,
        max(
            (
                k
                for m in METRICS.values()
                if m.reads_ranks and (with_curves or not m.curve)
                for k in m.ks(lists)
            ),
            default=0,
        ),
    )
    # curve cut-offs every query's ranking has (a left-out query ranks ndb - 1
    # items), so the curves of every block add up point by point
    shortest = ndb - int(has_exclude.any())
    shared = _Shared(
        database=Database(database),  # real-valued columns in float64, codes indexed, once
        db_labels=db_labels,
        ndb=ndb,
        gtm=gtm,
        bits=bits,
        curve_ks=sorted({min(k, shortest) for k in CURVE_KS}),
        spec=spec,
        rotated=rotated,
        threads=threads,
    )
    if block is None:
        # entries a block holds per query: the first ranks, the Hamming histograms, and
        # a distance row and its sorted copy, or a ranking (none: scored by counting)
        per_query_items = (
            width
            + (2 * (bits + 1) if packed else 0)
            + (0 if spec.score is not None else 2 * ndb if spec.distances is not None else ndb)
        )
        block = max(1, BLOCK_ITEMS // per_query_items)
    per_query = [m for m in active if m.per_query is not None]
    values: dict[str, np.ndarray] = {}
    sums: dict[str, dict[str, np.ndarray]] = {}
    seconds = 0.0

    for start in range(0, nq, block):
        stop = min(start + block, nq)
        rows = slice(start, stop)
        q_block = _rows_of(query, rows)
        args = (query_labels[rows], db_labels, k_cap[rows], width, exclude[rows])
        tic = time.perf_counter()
        scores = spec.scores(
            q_block, shared.database, *args, params=ranking_params, threads=threads
        )
        seconds += time.perf_counter() - tic
        inputs = _Block(shared, rows, q_block, args, scores, n_relevant[rows])
        for metric in per_query:
            for q in inputs.by_length() if metric.reads_ranks else (inputs,):
                if metric.curve:
                    total = sums.setdefault(metric.name, {})
                    for key, v in metric.per_query(q).items():
                        total[key] = total.get(key, 0) + np.asarray(v, dtype=np.float64).sum(0)
                    continue
                for name, k in metric.names(lists):
                    v = metric.per_query(q) if k is None else metric.per_query(q, k)
                    values.setdefault(name, np.empty(nq))[q.rows] = v

    whole = _Whole(
        nq=nq,
        labels=query_labels,
        query_predicted=query["predicted_label"] if predicted else None,
        seconds=seconds,
        values=values,
        bits=bits,
        curve_ks=shared.curve_ks,
    )
    metrics, curves = {}, {}
    for metric in active:
        if metric.summary is not None:
            means = (
                {key: v / nq for key, v in sums[metric.name].items()}
                if metric.per_query is not None
                else None
            )
            (curves if metric.curve else metrics)[metric.name] = metric.summary(whole, means)
        else:
            metrics.update((name, float(values[name].mean())) for name, _ in metric.names(lists))
    return Evaluation(metrics, curves, not_applicable)


def _missing_inputs(packed: bool, predicted: bool, rotated, spec) -> dict[str, str]:
    """The shared inputs (rshash.metrics.INPUTS) this evaluation cannot have, with why:
    a metric that needs one of them is listed under ``not_applicable`` with the reason."""
    missing = {}
    if not packed:
        missing["hamming_pr"] = "real-valued method: no binary codes"
    if not predicted:
        for name in ("query_predicted", "ranked_predicted"):
            missing[name] = "method has no class head (no predicted_label)"
    if rotated is None:
        missing["rotation"] = "no rotated copies of the queries were encoded"
    elif spec.rotation_top3 is None:
        names = [r.name for r in RANKINGS.values() if r.rotation_top3 is not None]
        missing["rotation"] = f"computed for the {' and '.join(names)} rankings only"
    return missing


@dataclass
class _Shared:
    """What every block of an evaluation shares."""

    database: Database
    db_labels: np.ndarray
    ndb: int
    gtm: int
    bits: int | None
    curve_ks: list[int]
    spec: object
    rotated: dict | None
    threads: int | None


@dataclass
class _Whole:
    """The inputs of the metrics' ``summary`` (rshash.metrics.INPUTS, ``e``)."""

    nq: int
    labels: np.ndarray
    query_predicted: np.ndarray | None
    seconds: float
    values: dict
    bits: int | None
    curve_ks: list[int]


class _Block:
    """The shared inputs of a block of queries (rshash.metrics.INPUTS, ``q``), each
    computed on first use, once."""

    def __init__(self, shared: _Shared, rows: slice, query: dict, args, scores: Scores, n_rel):
        self._shared, self._query, self._args = shared, query, args
        self.rows = np.arange(rows.start, rows.stop)
        self.labels, self.scores, self.n_relevant = args[0], scores, n_rel
        self.gtm, self.bits, self.curve_ks = shared.gtm, shared.bits, shared.curve_ks

    @cached_property
    def hamming_pr(self):
        scores, s = self.scores, self._shared
        if scores.counts is None:  # the Hamming histograms of a non-Hamming ranking
            scores = score_hamming(
                self._query["packed"], s.database.index, *self._args, threads=s.threads
            )
        return hamming_pr_from_counts(scores.counts, scores.relevant)

    @cached_property
    def rotation(self):
        s = self._shared
        q_rot = {k: v[self.rows] for k, v in s.rotated.items() if v is not None}
        ranked = s.spec.rotation_top3(self._query, q_rot, s.database, threads=s.threads)
        return ranked, rotated_copy_ids(s.ndb, len(self.rows))

    def by_length(self) -> list[_Ranks]:
        """The block's queries grouped by the length of their ranking, with their first
        ranks cut to that length."""
        if "_groups" not in self.__dict__:
            exclude = self._args[4]
            self._groups = [
                _Ranks(self, group, ranked)
                for group, ranked in _by_length(self.scores.top, exclude, self._shared.ndb)
            ]
        return self._groups


class _Ranks:
    """The inputs of queries of a block whose rankings have one length, and their
    first ranks (rshash.metrics.RANK_INPUTS)."""

    def __init__(self, block: _Block, group: np.ndarray, ranked: np.ndarray):
        self._shared = block._shared
        self.rows = block.rows[group]
        self.ranked = ranked
        self.labels, self.n_relevant = block.labels[group], block.n_relevant[group]
        self.gtm, self.bits, self.curve_ks = block.gtm, block.bits, block.curve_ks

    @cached_property
    def ranked_labels(self):
        return self._shared.db_labels[self.ranked]

    @cached_property
    def rel(self):
        return self.ranked_labels == self.labels[:, None]

    @cached_property
    def ranked_predicted(self):
        return self._shared.database["predicted_label"][self.ranked]


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
