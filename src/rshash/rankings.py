"""The rankings: each one's order of the database and its scoring path, declared once.

A ranking orders the database for each query, ascending, ties to the lower
database index (callers put the database in the split's ``db_order`` first,
so the index is the seeded tie rank). A :class:`Ranking` registration says
what it needs from a method (the codes columns it reads, ``needs``; one that
reads a class head's columns is for methods with a class head), its parameters
(a :class:`rshash.params.Params` dataclass, ``params``: names, types,
defaults and ranges, resolved by the config check and by every call), and
either a distance (``distances``: its order is the ascending order of that
matrix, scored by :func:`rshash.scoring.score_distances` without sorting the
items) or an explicit order (``order``, scored by
:func:`rshash.scoring.score_ranked`); a ranking may bring its own faster
scoring path (``score``: Hamming ranks by counting, the ranking never
stored) and its own ``rotation_top3`` path. Adding a ranking is one entry in
:data:`RANKINGS` (and its parameters' class); evaluation, plots and the config
check (its names and ``ranking_params``) read it from here.

The database side is a :class:`Database`: its columns in tie order, the
real-valued ones in float64 once, the packed codes in a
:class:`rshash.hamming.BinaryIndex` built once (not once per query block).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rshash import RshashError
from rshash.params import Params, param

if TYPE_CHECKING:
    from rshash.scoring import Scores

# The declarations (names, needs, parameters) are read at workflow parse time by the
# config check, so the compiled kernels (numba) are imported only when a ranking runs.

REAL_COLUMNS = ("value", "class_prob")
# What a method's class head writes (rshash.methods.base.HashMethod.outputs).
HEAD_COLUMNS = ("class_prob", "predicted_label")


class Database:
    """A ranking's database: codes columns (``packed``, ``value``, ``class_prob``,
    ``predicted_label``; None where the method has none) in tie order."""

    def __init__(self, columns: dict[str, np.ndarray | None]):
        from rshash.hamming import as_index

        self.columns = {
            k: (np.asarray(v, dtype=np.float64) if k in REAL_COLUMNS and v is not None else v)
            for k, v in columns.items()
        }
        packed = self.columns.get("packed")
        self.index = None if packed is None else as_index(packed)

    def get(self, column: str):
        return self.columns.get(column)

    def __getitem__(self, column: str):
        return self.columns[column]


def _as_database(database) -> Database:
    return database if isinstance(database, Database) else Database(database)


@dataclass(frozen=True)
class Ranking:
    """A named ranking (see the module docstring). Each callable takes
    ``(query, database, **params)``: query a dict of codes columns, database a
    :class:`Database`; ``score`` and ``rotation_top3`` also take the scoring
    arguments / the rotated copies and ``threads``."""

    name: str
    needs: tuple[str, ...]
    params: type[Params] = Params
    distances: Callable[..., np.ndarray] | None = None
    order: Callable[..., np.ndarray] | None = None
    score: Callable[..., Scores] | None = None
    rotation_top3: Callable[..., np.ndarray] | None = None

    def __post_init__(self):
        if self.order is None and self.distances is None:
            raise ValueError(f"ranking {self.name!r} needs an order or distances")

    @property
    def class_head(self) -> bool:
        """Whether it reads what only a class head writes (:data:`HEAD_COLUMNS`), so
        that a method's parameters that remove its head remove this ranking too."""
        return any(c in HEAD_COLUMNS for c in self.needs)

    def resolve(self, params: dict | None, where: str | None = None) -> Params:
        """Its parameters for the ``params`` given (the others at their defaults);
        an unknown name, a wrong type or a value out of range is one line naming
        the key, prefixed by ``where`` (default ``ranking NAME: params``)."""
        return self.params.resolve(params, where or f"ranking {self.name!r}: params")

    def _args(self, query: dict, database: Database, params: dict | None) -> dict:
        params = self.resolve(params).as_dict()
        missing = [c for c in self.needs if query.get(c) is None or database.get(c) is None]
        if missing:
            raise RshashError(f"ranking {self.name!r} needs the codes column(s) {missing}")
        return params

    def ranked(self, query: dict, database, params: dict | None = None) -> np.ndarray:
        """(nq, ndb) database indices, nearest first."""
        from rshash.dense import rank

        database = _as_database(database)
        params = self._args(query, database, params)
        if self.order is not None:
            return self.order(query, database, **params)
        return rank(self.distances(query, database, **params))

    def distance_matrix(self, query: dict, database, params: dict | None = None) -> np.ndarray:
        """(nq, ndb) distances whose ascending order, ties by index, is the ranking."""
        if self.distances is None:
            raise RshashError(f"ranking {self.name!r} is not an order of distances")
        database = _as_database(database)
        return self.distances(query, database, **self._args(query, database, params))

    def scores(self, query: dict, database, *args, params=None, threads=1) -> Scores:
        """The per-query statistics every metric reads (rshash.scoring), by the
        ranking's own path: its ``score``, else from its distances, else its order.
        ``args``: the scoring arguments, (q_labels, db_labels, k_cap, width[, exclude])."""
        from rshash.scoring import score_distances, score_ranked

        database = _as_database(database)
        params = self._args(query, database, params)
        if self.score is not None:
            return self.score(query, database, *args, threads=threads, **params)
        if self.distances is not None:
            return score_distances(
                self.distances(query, database, **params), *args, threads=threads
            )
        return score_ranked(self.order(query, database, **params), *args, threads=threads)


# --- the registered rankings ----------------------------------------------------------


def _hamming_distances(query, database):
    return database.index.distances(query["packed"])


def _hamming_order(query, database):
    return database.index.rank(query["packed"])[1]


def _hamming_score(query, database, *args, threads=1):
    from rshash.scoring import score_hamming

    return score_hamming(query["packed"], database.index, *args, threads=threads)


def rotated_copy_ids(n_db: int, nq: int) -> np.ndarray:
    """(nq, 3): the ids a query's three rotated copies get in a ``rotation_top3`` path's
    ranking, appended after the database."""
    return np.broadcast_to(np.arange(n_db, n_db + 3), (nq, 3))


def _hamming_rotation_top3(query, rotated, database, threads=1):
    """The top 3 of database + a query's own copies lies among the database's top 3
    and the copies; a stable sort by distance keeps the database first on ties."""
    q, rot = query["packed"], rotated["packed"]
    near_dist, nearest = database.index.search(q, 3, threads)
    keep = min(3, database.index.ntotal)
    to_copies = np.unpackbits(q[:, None, :] ^ rot, axis=-1).sum(-1)
    copies = rotated_copy_ids(database.index.ntotal, len(q))
    ids = np.concatenate([nearest[:, :keep], copies], axis=1)
    dist = np.concatenate([near_dist[:, :keep], to_copies], axis=1)
    return np.take_along_axis(ids, np.argsort(dist, axis=1, kind="stable")[:, :3], axis=1)


def _euclidean_distances(query, database):
    from rshash.dense import euclidean_distances

    return euclidean_distances(query["value"], database["value"])


def _euclidean_rotation_top3(query, rotated, database, threads=1):
    from rshash.dense import euclidean_distances, topk

    q, rot, db = query["value"], rotated["value"], database["value"]
    to_db = euclidean_distances(q, db)
    to_copies = np.stack([euclidean_distances(q[i : i + 1], rot[i])[0] for i in range(len(q))])
    return topk(np.concatenate([to_db, to_copies], axis=1), 3)


def rank_coarse_to_fine(
    q_packed: np.ndarray, db_packed, q_value: np.ndarray, db_value: np.ndarray, top_m: int
) -> np.ndarray:
    """DMCH+: the top ``top_m`` by Hamming distance re-ranked by the Euclidean
    distance of the pre-binarization values; the rest keep their Hamming order.

    Ties in the Euclidean stage keep the Hamming order (itself tied by index).
    ``db_packed``: packed codes or a BinaryIndex of them.
    """
    from rshash.hamming import as_index

    if top_m < 1:
        raise RshashError(f"coarse_to_fine: top_m must be positive, got {top_m}")
    db_packed = as_index(db_packed)
    coarse = db_packed.rank(q_packed)[1]
    m = min(int(top_m), coarse.shape[1])
    head = coarse[:, :m]
    q_value = np.asarray(q_value, dtype=np.float64)
    diff = np.asarray(db_value, dtype=np.float64)[head] - q_value[:, None, :]
    fine = np.einsum("qmk,qmk->qm", diff, diff)
    head = np.take_along_axis(head, np.argsort(fine, axis=1, kind="stable"), axis=1)
    return np.concatenate([head, coarse[:, m:]], axis=1)


def category_weighted_distances(
    q_packed: np.ndarray, db_packed, q_prob: np.ndarray, db_prob: np.ndarray
) -> np.ndarray:
    """DAH: Hamming distance x exp(1 - p_i(c_q)), where c_q is the query's predicted
    class (argmax of its class probabilities) and p_i(c_q) the database item's
    probability of that class. ``db_packed``: packed codes or a BinaryIndex of them."""
    from rshash.hamming import as_index

    db_packed = as_index(db_packed)
    predicted = np.argmax(np.asarray(q_prob), axis=1)
    p = np.asarray(db_prob, dtype=np.float64)[:, predicted].T  # (nq, ndb)
    return db_packed.distances(q_packed) * np.exp(1.0 - p)


@dataclass(frozen=True, kw_only=True)
class CoarseToFineParams(Params):
    """DMCH+ re-ranks the top ``top_m`` by Hamming distance (the paper's M)."""

    top_m: int = param(100, min=1)


RANKINGS: dict[str, Ranking] = {
    r.name: r
    for r in (
        Ranking(
            "hamming",
            ("packed",),
            distances=_hamming_distances,
            order=_hamming_order,
            score=_hamming_score,
            rotation_top3=_hamming_rotation_top3,
        ),
        Ranking(
            "coarse_to_fine",
            ("packed", "value"),
            CoarseToFineParams,
            order=lambda q, db, top_m: rank_coarse_to_fine(
                q["packed"], db.index, q["value"], db["value"], top_m
            ),
        ),
        Ranking(
            "euclidean",
            ("value",),
            distances=_euclidean_distances,
            rotation_top3=_euclidean_rotation_top3,
        ),
        Ranking(
            "category_weighted",
            ("packed", "class_prob"),
            distances=lambda q, db: category_weighted_distances(
                q["packed"], db.index, q["class_prob"], db["class_prob"]
            ),
        ),
    )
}


def supported(columns) -> tuple[str, ...]:
    """The rankings whose needs a method's codes columns meet (registry order)."""
    return tuple(r.name for r in RANKINGS.values() if set(r.needs) <= set(columns))


def get_ranking(name: str) -> Ranking:
    try:
        return RANKINGS[name]
    except KeyError:
        raise RshashError(f"unknown ranking {name!r}; known: {', '.join(RANKINGS)}") from None


def order(name: str, query: dict, database, params: dict | None = None) -> np.ndarray:
    """(nq, ndb) database indices ranked for each query by the named ranking.

    ``query`` and ``database`` map the ranking's needed columns to arrays (or
    database is a :class:`Database`); the database is in tie order."""
    return get_ranking(name).ranked(query, database, params)


def distances(name: str, query: dict, database, params: dict | None = None) -> np.ndarray:
    """(nq, ndb) distances whose ascending order, ties by index, is the named ranking
    (an error for a ranking that is not such an order, e.g. coarse_to_fine)."""
    return get_ranking(name).distance_matrix(query, database, params)
