"""Retrieval metrics against a per-query loop, hand examples and scikit-learn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score

from rshash.dense import rank
from rshash.metrics import (
    CURVE_KS,
    accuracy,
    average_precision_all,
    average_precision_at,
    compute,
    hamming_pr,
    nmrr,
    per_class_mean,
    per_query,
    precision_at,
    precision_recall_curves,
    recall_at,
    retrieved_accuracy_at,
    rotation_top3,
)


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
        f"{m}_at_{k}" for m in "pr" for k in (5, 10, 20, 50, 100)
    }


@pytest.mark.parametrize("seed", range(3))
def test_map_all_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    nq, ndb = 10, 80
    q_lab, db_lab = rng.integers(0, 3, nq), rng.integers(0, 3, ndb)
    d = rng.random((nq, ndb))  # continuous: no ties
    rel = db_lab[rank(d)] == q_lab[:, None]
    expected = [average_precision_score(db_lab == q_lab[i], -d[i]) for i in range(nq)]
    np.testing.assert_allclose(average_precision_all(rel, rel.sum(1)), expected, rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_map_all_matches_sklearn_on_truncated_rankings(seed):
    """Tie-free; the ranking keeps only the top 30, the missing relevant items count as misses."""
    rng = np.random.default_rng(100 + seed)
    nq, ndb, width = 8, 70, 30
    q_lab, db_lab = rng.integers(0, 3, nq), rng.integers(0, 3, ndb)
    d = rng.random((nq, ndb))
    order = rank(d)
    rel = (db_lab[order] == q_lab[:, None])[:, :width]
    n_rel = (db_lab[None, :] == q_lab[:, None]).sum(1)
    # sklearn on the truncated list, rescaled from "relevant retrieved" to "all relevant"
    expected = [
        average_precision_score(rel[i], -d[i, order[i, :width]]) * rel[i].sum() / n_rel[i]
        if rel[i].any()
        else 0.0
        for i in range(nq)
    ]
    assert (rel.sum(1) < n_rel).any()
    np.testing.assert_allclose(average_precision_all(rel, n_rel), expected, rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 40))),
    st.integers(0, 5),
    st.integers(1, 45),
)
def test_map_property_matches_loop_reference(rel, extra, k):
    """For any relevance matrix, AP@all (with extra unseen relevant items) and AP@k equal
    the loop."""
    n_rel = rel.sum(1) + extra
    got_all = average_precision_all(rel, n_rel)
    got_at = average_precision_at(rel, k)
    for i in range(len(rel)):
        ap_at = reference(rel[i], n_rel[i], k)[1]
        assert got_all[i] == pytest.approx(reference(rel[i], n_rel[i])[0], abs=1e-12)
        assert got_at[i] == pytest.approx(ap_at, abs=1e-12)
    assert np.mean(got_all) == pytest.approx(
        np.mean([reference(r, n)[0] for r, n in zip(rel, n_rel)]), abs=1e-12
    )


# ---------------------------------------------------------------- ANMRR


def nmrr_reference(rel_row, ng, gtm):
    """MPEG-7 NMRR of one ranked list, written out plainly."""
    if ng == 0:
        return 1.0
    k_cap = min(4 * ng, 2 * gtm)
    ranks = [n for n, r in enumerate(rel_row, start=1) if r]
    ranks += [np.inf] * (ng - len(ranks))  # relevant items beyond the ranked columns
    avr = sum(r if r <= k_cap else 1.25 * k_cap for r in ranks) / ng
    return (avr - 0.5 - ng / 2) / (1.25 * k_cap - 0.5 - ng / 2)


def test_nmrr_hand_example_with_item_beyond_k_and_empty_query():
    rel = np.zeros((3, 10), bool)
    rel[0, [0, 5]] = True  # query 0: ranks 1 and 6
    rel[1, 2] = True  # query 1: rank 3
    n_rel = np.array([2, 1, 0])
    # gtm = 2 -> query 0: K = min(4*2, 2*2) = 4; rank 6 > 4 -> 1.25*4 = 5
    #   AVR = (1 + 5) / 2 = 3; MRR = 3 - 0.5 - 2/2 = 1.5; NMRR = 1.5 / (5 - 0.5 - 1) = 3/7
    #   (without the 2*gtm cap: K = 8, AVR = 3.5, NMRR = 2 / 8.5 = 4/17)
    # query 1: K = min(4, 4) = 4; AVR = 3; MRR = 3 - 0.5 - 0.5 = 2; NMRR = 2 / (5 - 1) = 0.5
    # query 2: no relevant item -> 1.0 by convention
    got = nmrr(rel, n_rel, gtm=2)
    np.testing.assert_allclose(got, [3 / 7, 0.5, 1.0], rtol=1e-12)
    assert got.mean() == pytest.approx((3 / 7 + 0.5 + 1.0) / 3)


def test_nmrr_hand_example_truncated_ranking_and_block_gtm():
    # Only 3 ranked columns; NG = 2, the second relevant item is not in the ranking.
    rel = np.array([[0, 1, 0]], bool)
    # gtm = 5 (largest NG over the whole evaluation, not this block): K = min(8, 10) = 8
    #   Rank = 2 and (unseen) 1.25*8 = 10; AVR = 12 / 2 = 6; MRR = 6 - 0.5 - 1 = 4.5
    #   NMRR = 4.5 / (10 - 0.5 - 1) = 9/17
    assert nmrr(rel, np.array([2]), gtm=5)[0] == pytest.approx(9 / 17)
    # gtm = 3: K = min(8, 6) = 6; AVR = (2 + 7.5) / 2 = 4.75; MRR = 3.25; NMRR = 3.25 / 6
    assert nmrr(rel, np.array([2]), gtm=3)[0] == pytest.approx(3.25 / 6)


def test_nmrr_perfect_and_worst_rankings():
    ndb, ng = 200, np.array([1, 5, 20])
    gtm = int(ng.max())
    perfect = np.arange(ndb)[None, :] < ng[:, None]
    np.testing.assert_allclose(nmrr(perfect, ng, gtm), 0.0, atol=1e-12)
    worst = perfect[:, ::-1]  # relevant items last
    got = nmrr(worst, ng, gtm)
    assert (got > 0.99).all() and (got <= 1.0).all()
    # partially good rankings lie strictly between
    mid = np.roll(perfect, 1, axis=1)
    assert ((nmrr(mid, ng, gtm) > 0) & (nmrr(mid, ng, gtm) < 1)).all()


@pytest.mark.parametrize("seed", range(3))
def test_nmrr_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    nq, ndb = 25, 80
    q_lab = rng.integers(0, 6, nq)
    db_lab = rng.choice(5, ndb, p=[0.5, 0.2, 0.15, 0.1, 0.05])  # label 5 absent: NG = 0
    rel_full = db_lab[rank(rng.integers(0, 6, (nq, ndb)))] == q_lab[:, None]
    n_rel = (db_lab[None, :] == q_lab[:, None]).sum(1)
    gtm = int(n_rel.max())
    for width in (ndb, 15):
        rel = rel_full[:, :width]
        got = nmrr(rel, n_rel, gtm)
        expected = [nmrr_reference(rel[i], n_rel[i], gtm) for i in range(nq)]
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        # evaluating in query blocks with the global gtm gives the same values
        np.testing.assert_allclose(
            np.concatenate([nmrr(rel[:10], n_rel[:10], gtm), nmrr(rel[10:], n_rel[10:], gtm)]), got
        )
    with pytest.raises(ValueError):
        nmrr(rel_full, n_rel, gtm - 1)


# ---------------------------------------------------------------- Hamming radius


def hamming_pr_reference(d, same, bits):
    nq = len(d)
    p, r = np.zeros((nq, bits + 1)), np.zeros((nq, bits + 1))
    for i in range(nq):
        for radius in range(bits + 1):
            retrieved = relevant = 0
            for j in range(d.shape[1]):
                if d[i, j] <= radius:
                    retrieved += 1
                    relevant += bool(same[i, j])
            total = int(same[i].sum())
            p[i, radius] = relevant / retrieved if retrieved else 0.0
            r[i, radius] = relevant / total if total else 0.0
    return p, r


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_hamming_pr_matches_loop_reference(bits):
    rng = np.random.default_rng(bits)
    nq, ndb = 12, 50
    # heavy ties: few distinct small distances, many items at the same distance
    d = rng.choice([0, 1, 2, 3, bits // 2, bits], (nq, ndb)).astype(np.uint16)
    same = rng.random((nq, ndb)) < 0.3
    same[0] = False  # a query with no relevant item
    d[1] = bits  # a query with nothing retrieved below the maximum radius
    p, r = hamming_pr(d, same, bits)
    assert p.shape == r.shape == (nq, bits + 1)
    ep, er = hamming_pr_reference(d, same, bits)
    np.testing.assert_allclose(p, ep, rtol=1e-12)
    np.testing.assert_allclose(r, er, rtol=1e-12)
    # small blocks give the same answer
    p2, r2 = hamming_pr(d, same, bits, block_elements=7)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(r, r2)


def test_hamming_pr_hand_example_radius_2():
    d = np.array([[0, 2, 2, 3, 1, 4], [3, 3, 4, 4, 3, 4]])
    same = np.array([[1, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]], bool)
    p, r = hamming_pr(d, same, bits=4)
    # query 0, radius 2: retrieved = distances 0, 2, 2, 1 -> 4 items, 2 relevant -> p 0.5
    #   recall = 2 of 3 relevant; radius 1: items at 0 and 1 -> p 0.5, r 1/3
    assert p[0, 2] == pytest.approx(0.5)
    assert r[0, 2] == pytest.approx(2 / 3)
    assert p[0, 1] == pytest.approx(0.5) and r[0, 1] == pytest.approx(1 / 3)
    assert p[0, 0] == pytest.approx(1.0)
    # query 1: nothing within radius 2 -> precision 0, recall 0; radius 3: 1 of 3
    assert p[1, 2] == 0.0 and r[1, 2] == 0.0
    assert p[1, 3] == pytest.approx(1 / 3) and r[1, 3] == pytest.approx(1.0)
    np.testing.assert_allclose(p[:, 4], same.mean(1))
    with pytest.raises(ValueError):
        hamming_pr(d, same, bits=3)  # distance 4 does not fit 3 bits


# ---------------------------------------------------------------- P@k / R@k curves


def test_precision_recall_curves_match_pointwise_functions():
    rng = np.random.default_rng(5)
    rel = rng.random((9, 240)) < 0.2
    n_rel = rel.sum(1) + rng.integers(0, 3, 9)
    n_rel[0], rel[0] = 0, False
    ks, p, r = precision_recall_curves(rel, n_rel)
    # clamped to ndb = 240 and deduplicated: 300..1000 collapse into a single 240
    assert ks == [k for k in CURVE_KS if k < 240] + [240]
    assert p.shape == r.shape == (9, len(ks))
    for j, k in enumerate(ks):
        np.testing.assert_allclose(p[:, j], precision_at(rel, k))
        np.testing.assert_allclose(r[:, j], recall_at(rel, n_rel, k))
        for i in range(9):
            _, _, ep, er = reference(rel[i], n_rel[i], k)
            assert p[i, j] == pytest.approx(ep) and r[i, j] == pytest.approx(er)
    ks2, p2, _ = precision_recall_curves(rel, n_rel, ks=(10, 3, 10, 5000))
    assert ks2 == [3, 10, 240]
    np.testing.assert_allclose(p2[:, 0], rel[:, :3].mean(1))


# ---------------------------------------------------------------- labels, classes, rotation


def test_retrieved_accuracy_and_accuracy_hand_example():
    ranked_true = np.array([[0, 0, 1, 2], [3, 3, 3, 3]])
    ranked_pred = np.array([[0, 1, 1, 0], [3, 3, 0, 0]])
    # top 3: query 0 -> matches at 1st and 3rd = 2/3; query 1 -> 2/3
    np.testing.assert_allclose(retrieved_accuracy_at(ranked_pred, ranked_true, 3), [2 / 3, 2 / 3])
    np.testing.assert_allclose(retrieved_accuracy_at(ranked_pred, ranked_true, 1), [1.0, 1.0])
    np.testing.assert_allclose(retrieved_accuracy_at(ranked_pred, ranked_true, 99), [0.5, 0.5])
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 0, 3, 0])) == pytest.approx(0.5)
    assert isinstance(accuracy(np.array([1]), np.array([1])), float)
    with pytest.raises(ValueError):
        accuracy(np.array([1, 2]), np.array([1]))


def test_per_class_mean_hand_example():
    values = np.array([1.0, 0.0, 0.5, 0.25, 0.75])
    labels = np.array([2, 0, 2, 7, 7])
    got = per_class_mean(values, labels)
    assert got == {0: 0.0, 2: 0.75, 7: 0.5}
    assert all(type(k) is int and type(v) is float for k, v in got.items())


def test_rotation_top3_hand_example():
    ranked = np.array(
        [
            [10, 11, 12, 0, 1],  # all three copies first
            [10, 5, 12, 11, 0],  # 11 only 4th
            [1, 2, 3, 10, 11],  # none
            [12, 0, 2, 1, 3],
        ]
    )  # one
    rotated = np.array([[10, 11, 12], [10, 11, 12], [10, 11, 12], [10, 11, 12]])
    np.testing.assert_allclose(rotation_top3(ranked, rotated), [1, 2 / 3, 0, 1 / 3])
    with pytest.raises(ValueError):
        rotation_top3(ranked[:, :2], rotated)
