"""Evaluate one cell: rank the database for every query and write the metrics JSON.

numpy only (never imports torch). Queries are ranked in blocks, so memory
is ``block * n_database`` per intermediate array, whatever the query count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rshash import RshashError
from rshash.codes import Codes, atomic_write, read_codes
from rshash.data.splits import read_split
from rshash.metrics import KS, MAP_CUTOFFS, per_query
from rshash.provenance import collect
from rshash.search import order, ranking_input


def evaluate_arrays(query_codes: np.ndarray, query_labels: np.ndarray, db_codes: np.ndarray,
                    db_labels: np.ndarray, ranking: str = "hamming", map_cutoffs=MAP_CUTOFFS,
                    ks=KS, exclude: np.ndarray | None = None, block: int = 256) -> dict[str, float]:
    """Mean registry metrics and ``query_ms`` for queries against a database.

    ``query_codes`` / ``db_codes`` are what the ranking reads (packed codes
    for ``hamming``, real vectors for ``euclidean``); the database is in tie
    order. ``exclude`` (nq,) names a database index to leave out of each
    query's ranking (leave-one-out), -1 for none. ``query_ms`` times the
    ranking only (distances and ordering), not the metrics.
    """
    query_labels = np.asarray(query_labels)
    db_labels = np.asarray(db_labels)
    nq, ndb = len(query_labels), len(db_labels)
    if nq == 0 or ndb == 0:
        raise ValueError(f"need queries and a database, got {nq} queries and {ndb} items")
    exclude = np.full(nq, -1) if exclude is None else np.asarray(exclude, dtype=np.intp)
    values: dict[str, np.ndarray] = {}
    seconds = 0.0
    for start in range(0, nq, block):
        stop = min(start + block, nq)
        tic = time.perf_counter()
        ranked = order(ranking, query_codes[start:stop], db_codes)
        seconds += time.perf_counter() - tic
        for rows, ranked_rows in _leave_out(ranked, exclude[start:stop]):
            rel = db_labels[ranked_rows] == query_labels[start + rows, None]
            for name, v in per_query(rel, rel.sum(1), map_cutoffs, ks).items():
                values.setdefault(name, np.empty(nq))[start + rows] = v
    metrics = {name: float(v.mean()) for name, v in values.items()}
    metrics["query_ms"] = 1000.0 * seconds / nq
    return metrics


def _leave_out(ranked: np.ndarray, exclude: np.ndarray):
    """Yield (rows, ranking) groups: rows to keep whole, rows with their excluded item removed."""
    has = exclude >= 0
    if not has.all():
        yield np.flatnonzero(~has), ranked[~has]
    if has.any():
        sub = ranked[has]
        kept = sub[sub != exclude[has, None]].reshape(len(sub), sub.shape[1] - 1)
        yield np.flatnonzero(has), kept


def evaluate_cell(codes_path: str | os.PathLike, split_path: str | os.PathLike,
                  out_path: str | os.PathLike, ranking: str = "hamming",
                  map_cutoffs=MAP_CUTOFFS, ks=KS, cell: dict | None = None,
                  config: dict | None = None, block: int = 256) -> dict:
    """Evaluate a codes file under its split and write ``metrics/{cell}/{ranking}.json``.

    The database is put in the split's ``db_order`` (the tie rule); a query
    that is also in the database is left out of its own ranking
    (leave-one-out protocols). ``n_database`` counts the whole database.
    """
    tic = time.perf_counter()
    column = ranking_input(ranking)
    codes = read_codes(codes_path)
    split = read_split(split_path)
    queries = split[split.role == "query"]
    database = split[split.role == "database"].sort_values("db_order", kind="stable")
    if len(queries) == 0 or len(database) == 0:
        raise RshashError(f"{split_path}: needs query and database rows")
    if not np.array_equal(database.db_order.to_numpy(), np.arange(len(database))):
        raise RshashError(f"{split_path}: db_order of the database rows is not a permutation "
                          f"of 0..{len(database) - 1}")
    q_rows = _rows(codes, queries.image_id.to_numpy(), "query", split_path)
    db_rows = _rows(codes, database.image_id.to_numpy(), "database", split_path)
    exclude = pd.Index(codes.image_id[db_rows]).get_indexer(codes.image_id[q_rows])
    data = getattr(codes, column)
    metrics = evaluate_arrays(data[q_rows], codes.label[q_rows], data[db_rows],
                              codes.label[db_rows], ranking, map_cutoffs, ks, exclude, block)
    result = {
        "cell": cell or {},
        "ranking": ranking,
        "n_queries": int(len(q_rows)),
        "n_database": int(len(db_rows)),
        "metrics": metrics,
        "provenance": collect(config, time.perf_counter() - tic),
    }
    atomic_write(out_path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    return result


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
            f"e.g. {', '.join(map(str, missing[:3]))}")
    return rows[pos]
