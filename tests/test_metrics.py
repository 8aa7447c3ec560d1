"""Retrieval metrics against a per-query loop, hand examples and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from rshash.metrics import (average_precision_all, average_precision_at, compute, per_query,
                            precision_at, recall_at)
from rshash.search import rank


def reference(rel_row, n_rel, k=None):
    """AP, precision and recall of one ranked list, written out plainly."""
    k = len(rel_row) if k is None else min(k, len(rel_row))
    hits, precisions = 0, []
    for position, is_rel in enumerate(rel_row[:k], start=1):
        if is_rel:
            hits += 1
            precisions.append(hits / position)
    ap_all = sum(precisions) / n_rel if n_rel else 0.0
    ap_at = sum(precisions) / hits if hits else 0.0
    return ap_all, ap_at, hits / k, (hits / n_rel if n_rel else 0.0)


def test_hand_example():
    rel = np.array([[1, 0, 1, 0, 0]], bool)
    n_rel = np.array([3])
    assert average_precision_all(rel, n_rel)[0] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert average_precision_at(rel, 3)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at(rel, 1)[0] == pytest.approx(1.0)
    assert precision_at(rel, 2)[0] == pytest.approx(0.5)
    assert recall_at(rel, n_rel, 2)[0] == pytest.approx(1 / 3)
    assert precision_at(rel, 50)[0] == pytest.approx(2 / 5)  # k clamped to ndb


def test_no_relevant_item_scores_zero():
    rel = np.zeros((2, 6), bool)
    rel[1, 4] = True
    n_rel = np.array([0, 2])
    np.testing.assert_array_equal(average_precision_all(rel, n_rel), [0.0, 0.2 / 2])
    np.testing.assert_array_equal(average_precision_at(rel, 3), [0.0, 0.0])
    np.testing.assert_array_equal(recall_at(rel, n_rel, 5), [0.0, 0.5])


@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference_with_ties(seed):
    """Labels ranked by tied integer distances; truncated rankings too."""
    rng = np.random.default_rng(seed)
    nq, ndb, n_classes = 30, 60, 4
    q_lab = rng.integers(0, n_classes + 1, nq)  # label n_classes is absent from the database
    db_lab = rng.integers(0, n_classes, ndb)
    d = rng.integers(0, 5, (nq, ndb))
    rel_full = db_lab[rank(d)] == q_lab[:, None]
    n_rel = (db_lab[None, :] == q_lab[:, None]).sum(1)
    assert (n_rel == 0).any()
    for width in (ndb, 25):
        rel = rel_full[:, :width]
        cutoffs, ks = (1, 7, 20, 100), (1, 5, 10, 20, 50, 100)
        got = per_query(rel, n_rel, map_cutoffs=cutoffs, ks=ks)
        for i in range(nq):
            assert got["map_all"][i] == pytest.approx(reference(rel[i], n_rel[i])[0])
            for k in cutoffs:
                assert got[f"map_at_{k}"][i] == pytest.approx(reference(rel[i], n_rel[i], k)[1])
            for k in ks:
                _, _, p, r = reference(rel[i], n_rel[i], k)
                assert got[f"p_at_{k}"][i] == pytest.approx(p)
                assert got[f"r_at_{k}"][i] == pytest.approx(r)
        means = compute(rel, n_rel, map_cutoffs=cutoffs, ks=ks)
        assert means.keys() == got.keys()
        for name, value in means.items():
            assert value == pytest.approx(float(np.mean(got[name])))


def test_compute_default_names():
    rel = np.random.default_rng(0).random((4, 120)) < 0.3
    names = set(compute(rel, rel.sum(1)))
    assert names == {"map_all", "map_at_20"} | {
        f"{m}_at_{k}" for m in "pr" for k in (5, 10, 20, 50, 100)}


@pytest.mark.parametrize("seed", range(3))
def test_map_all_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    nq, ndb = 10, 80
    q_lab, db_lab = rng.integers(0, 3, nq), rng.integers(0, 3, ndb)
    d = rng.random((nq, ndb))  # continuous: no ties
    rel = db_lab[rank(d)] == q_lab[:, None]
    expected = [average_precision_score(db_lab == q_lab[i], -d[i]) for i in range(nq)]
    np.testing.assert_allclose(average_precision_all(rel, rel.sum(1)), expected, rtol=1e-12)
