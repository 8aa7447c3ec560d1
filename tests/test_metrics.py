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


# --- every registry metric against a plain-Python reference ------------------------


def _registry_case(seed=11, nq=9, ndb=30, bits=8):
    """Codes from a pool of four (heavy ties), three classes, class heads, a left-out
    item for some queries and three rotated copies per query."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, (4, bits))
    qb, db = pool[rng.integers(0, 4, nq)], pool[rng.integers(0, 4, ndb)]
    qb[::2, 0] ^= 1  # half the queries one bit away from the pool
    # copies: the query's own code (distance 0) or a code of the pool
    rot = np.where(rng.random((nq, 3, 1)) < 0.5, qb[:, None, :], pool[rng.integers(0, 4, (nq, 3))])
    ql, dl = rng.integers(0, 3, nq), rng.integers(0, 3, ndb)
    ql[0] = 7  # a query with no relevant item
    qp = np.where(rng.random(nq) < 0.6, ql, (ql + 1) % 3)
    dp = np.where(rng.random(ndb) < 0.6, dl, (dl + 1) % 3)
    exclude = np.where(rng.random(nq) < 0.5, rng.integers(0, ndb, nq), -1)
    return qb, db, rot, ql, dl, qp, dp, exclude, bits


def _plain_queries(case):
    """Per query, written out plainly: the ranking (database indices by (Hamming
    distance, index), the left-out item skipped), its relevance, the number of relevant
    items, the distances and the rotated copies' distances."""
    qb, db, rot, ql, dl, qp, dp, exclude, bits = case
    out = []
    for i in range(len(ql)):
        dist = {j: int((qb[i] != db[j]).sum()) for j in range(len(dl)) if j != exclude[i]}
        ranked = sorted(dist, key=lambda j: (dist[j], j))
        rel = [dl[j] == ql[i] for j in ranked]
        copies = [int((qb[i] != rot[i, c]).sum()) for c in range(3)]
        out.append(dict(ranked=ranked, rel=rel, n_rel=sum(rel), dist=dist, copies=copies))
    return out


def _ap(rel, k, by):
    hits, total = 0, 0.0
    for n, r in enumerate(rel[:k], start=1):
        if r:
            hits += 1
            total += hits / n
    den = by if by is not None else hits
    return total / den if den else 0.0


def _nmrr(rel, n_rel, gtm):
    if n_rel == 0:
        return 1.0
    cap = min(4 * n_rel, 2 * gtm)
    ranks = [n for n, r in enumerate(rel, start=1) if r]
    avr = sum(n if n <= cap else 1.25 * cap for n in ranks) / n_rel
    return (avr - 0.5 - n_rel / 2) / (1.25 * cap - 0.5 - n_rel / 2)


def _radius(q, dl, label, r):
    within = [j for j, d in q["dist"].items() if d <= r]
    hits = sum(dl[j] == label for j in within)
    return (hits / len(within) if within else 0.0), (hits / q["n_rel"] if q["n_rel"] else 0.0)


def _rotation(q):
    """Database then copies (ids ndb..ndb+2), by (distance, id): copies in the first 3."""
    ndb = len(q["dist"]) + 10  # any id above the database's: copies come after it
    items = [(d, j) for j, d in q["dist"].items()] + [
        (d, ndb + c) for c, d in enumerate(q["copies"])
    ]
    return sum(j >= ndb for _, j in sorted(items)[:3]) / 3


def _curve_ks(ndb, exclude):
    shortest = ndb - int((exclude >= 0).any())
    return sorted({min(k, shortest) for k in CURVE_KS})


# The plain reference of every registry entry, by its registry name: (case, per-query
# plain values, k) -> the value in the metrics JSON. query_ms is a time: None.
REFERENCES = {
    "map_all": lambda c, qs, k: np.mean([_ap(q["rel"], None, q["n_rel"]) for q in qs]),
    "anmrr": lambda c, qs, k: np.mean(
        [_nmrr(q["rel"], q["n_rel"], max(x["n_rel"] for x in qs)) for q in qs]
    ),
    "map_at_{k}": lambda c, qs, k: np.mean([_ap(q["rel"], k, None) for q in qs]),
    "p_at_{k}": lambda c, qs, k: np.mean([sum(q["rel"][:k]) / min(k, len(q["rel"])) for q in qs]),
    "r_at_{k}": lambda c, qs, k: np.mean(
        [sum(q["rel"][:k]) / q["n_rel"] if q["n_rel"] else 0.0 for q in qs]
    ),
    "acc_retrieved_at_{k}": lambda c, qs, k: np.mean(
        [np.mean([c[6][j] == c[4][j] for j in q["ranked"][:k]]) for q in qs]
    ),
    "rotation_top3": lambda c, qs, k: np.mean([_rotation(q) for q in qs]),
    "p_hamming_r2": lambda c, qs, k: np.mean(
        [_radius(q, c[4], c[3][i], 2)[0] for i, q in enumerate(qs)]
    ),
    "acc_query": lambda c, qs, k: np.mean(c[5] == c[3]),
    "query_ms": None,
    "p_at_k": lambda c, qs, k: {
        "k": _curve_ks(len(c[4]), c[7]),
        "precision": [
            np.mean([sum(q["rel"][:n]) / n for q in qs]) for n in _curve_ks(len(c[4]), c[7])
        ],
    },
    "r_at_k": lambda c, qs, k: {
        "k": _curve_ks(len(c[4]), c[7]),
        "recall": [
            np.mean([sum(q["rel"][:n]) / q["n_rel"] if q["n_rel"] else 0.0 for q in qs])
            for n in _curve_ks(len(c[4]), c[7])
        ],
    },
    "ap_per_class": lambda c, qs, k: {
        str(label): np.mean(
            [_ap(q["rel"], None, q["n_rel"]) for q, y in zip(qs, c[3]) if y == label]
        )
        for label in sorted(set(c[3].tolist()))
    },
    "pr_hamming": lambda c, qs, k: {
        "radius": list(range(c[8] + 1)),
        "precision": [
            np.mean([_radius(q, c[4], c[3][i], r)[0] for i, q in enumerate(qs)])
            for r in range(c[8] + 1)
        ],
        "recall": [
            np.mean([_radius(q, c[4], c[3][i], r)[1] for i, q in enumerate(qs)])
            for r in range(c[8] + 1)
        ],
    },
}


@pytest.mark.parametrize("block", [None, 2])
def test_every_registry_metric_matches_its_plain_reference(block):
    """Every metric of the registry (scalars and curves, the list read from the registry)
    applies to a Hamming case with class heads, rotated copies and left-out items, and
    equals its plain-Python reference. A new metric fails here until it has one."""
    from rshash.codes import pack_bits
    from rshash.evaluate import evaluate_arrays
    from rshash.metrics import METRICS

    case = _registry_case()
    qb, db, rot, ql, dl, qp, dp, exclude, bits = case
    lists = {"map_cutoffs": (3, 20, 50), "ks": (1, 5, 20, 40)}
    ev = evaluate_arrays(
        {"packed": pack_bits(qb), "predicted_label": qp},
        ql,
        {"packed": pack_bits(db), "predicted_label": dp},
        dl,
        exclude=exclude,
        block=block,
        with_curves=True,
        rotated={"packed": pack_bits(rot.reshape(-1, bits)).reshape(len(ql), 3, -1)},
        **lists,
    )
    assert ev.not_applicable == {}
    qs = _plain_queries(case)
    seen = set()
    for metric in METRICS.values():
        assert metric.name in REFERENCES, f"metric {metric.name!r}: add its plain reference"
        for name, k in metric.names(lists):
            seen.add(name)
            got = (ev.curves if metric.curve else ev.metrics)[name]
            if REFERENCES[metric.name] is None:  # a time
                assert np.isfinite(got) and got >= 0, name
                continue
            expected = REFERENCES[metric.name](case, qs, k)
            if isinstance(expected, dict):
                assert got.keys() == expected.keys(), name
                for key in expected:
                    assert np.asarray(got[key]) == pytest.approx(np.asarray(expected[key])), name
            else:
                assert got == pytest.approx(expected), name
    # nothing comes out that the registry does not name
    assert set(ev.metrics) | set(ev.curves) == seen
