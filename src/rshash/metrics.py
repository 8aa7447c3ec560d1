"""Retrieval metrics from a ranked relevance matrix (numpy only).

``rel`` is (nq, ndb) bool: ``rel[i, j]`` says the j-th ranked database item
shares query i's label. ``n_relevant`` (nq,) counts the relevant items in
the whole database for each query (it may exceed ``rel[i].sum()`` when the
ranking is truncated). Per-query functions return float64 (nq,) arrays; a
cut-off ``k`` larger than ``ndb`` is clamped to ``ndb``.
"""

from __future__ import annotations

import numpy as np

KS = (5, 10, 20, 50, 100)
MAP_CUTOFFS = (20,)


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
    return _safe_divide(_hit_precision(rel).sum(1), n_relevant)


def average_precision_at(rel: np.ndarray, k: int) -> np.ndarray:
    """AP of the top k, divided by the relevant items retrieved in the top k (MiLaN code)."""
    rel = np.asarray(rel, dtype=bool)[:, :_check_k(k, rel)]
    return _safe_divide(_hit_precision(rel).sum(1), rel.sum(1))


def precision_at(rel: np.ndarray, k: int) -> np.ndarray:
    """Share of relevant items in the top k."""
    k = _check_k(k, rel)
    return np.asarray(rel, dtype=bool)[:, :k].sum(1) / k


def recall_at(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k over all relevant items (0 when there are none)."""
    k = _check_k(k, rel)
    return _safe_divide(np.asarray(rel, dtype=bool)[:, :k].sum(1), n_relevant)


def per_query(rel: np.ndarray, n_relevant: np.ndarray, map_cutoffs=MAP_CUTOFFS,
              ks=KS) -> dict[str, np.ndarray]:
    """Every registry metric, one value per query."""
    out = {"map_all": average_precision_all(rel, n_relevant)}
    for k in map_cutoffs:
        out[f"map_at_{k}"] = average_precision_at(rel, k)
    for k in ks:
        out[f"p_at_{k}"] = precision_at(rel, k)
    for k in ks:
        out[f"r_at_{k}"] = recall_at(rel, n_relevant, k)
    return out


def compute(rel: np.ndarray, n_relevant: np.ndarray, map_cutoffs=MAP_CUTOFFS,
            ks=KS) -> dict[str, float]:
    """Means over queries: ``map_all``, ``map_at_{k}``, ``p_at_{k}``, ``r_at_{k}``."""
    values = per_query(rel, n_relevant, map_cutoffs, ks)
    return {name: float(v.mean()) for name, v in values.items()}
