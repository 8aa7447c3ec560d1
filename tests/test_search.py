"""Hamming/Euclidean distances and the stable tie rule of rankings."""

import numpy as np
import pytest

from rshash import RshashError
from rshash.codes import pack_bits
from rshash.dense import euclidean_distances, rank, topk
from rshash.hamming import hamming_distances
from rshash.rankings import RANKINGS, order


def tied_codes(rng, n, bits, distinct=4):
    """Random codes drawn from a few distinct ones, so distances tie heavily."""
    pool = rng.integers(0, 2, size=(distinct, bits))
    return pack_bits(pool[rng.integers(0, distinct, size=n)])


def reference_rank(d):
    return np.array([sorted(range(len(row)), key=lambda j: (row[j], j)) for row in d])


@pytest.mark.parametrize("bits", range(8, 257, 8))
def test_hamming_matches_bit_count(bits):
    rng = np.random.default_rng(bits)
    q, db = tied_codes(rng, 7, bits), tied_codes(rng, 23, bits)
    qb, dbb = np.unpackbits(q, axis=1), np.unpackbits(db, axis=1)
    expected = (qb[:, None, :] != dbb[None, :, :]).sum(-1)
    for threads in (1, 2):
        got = hamming_distances(q, db, threads=threads)
        assert got.shape == (7, 23)
        np.testing.assert_array_equal(got, expected)


def test_hamming_extremes_and_width_check():
    zeros, ones = np.zeros((1, 32), np.uint8), np.full((1, 32), 255, np.uint8)
    assert hamming_distances(zeros, ones)[0, 0] == 256
    with pytest.raises(ValueError):
        hamming_distances(zeros, ones[:, :16])


def test_euclidean_matches_brute_force():
    rng = np.random.default_rng(0)
    q, db = rng.normal(size=(5, 9)), rng.normal(size=(11, 9))
    expected = np.linalg.norm(q[:, None] - db[None], axis=-1)
    got = euclidean_distances(q, db)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.all(euclidean_distances(db, db).diagonal() < 1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_rank_breaks_ties_by_index(seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 3, size=(6, 40)).astype(np.uint16)
    np.testing.assert_array_equal(rank(d), reference_rank(d))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 2, 5, 13, 39, 40, 41])
def test_topk_equals_full_rank_prefix(seed, k):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 4, size=(8, 40)).astype(np.uint16)
    expected = reference_rank(d)[:, :k]
    np.testing.assert_array_equal(topk(d, k), expected)


def test_order_registry():
    rng = np.random.default_rng(1)
    q, db = tied_codes(rng, 4, 64), tied_codes(rng, 30, 64)
    np.testing.assert_array_equal(
        order("hamming", {"packed": q}, {"packed": db}), reference_rank(hamming_distances(q, db))
    )
    x, y = rng.normal(size=(3, 5)), rng.normal(size=(8, 5))
    np.testing.assert_array_equal(
        order("euclidean", {"value": x}, {"value": y}), reference_rank(euclidean_distances(x, y))
    )
    # DESIGN.md's rankings are registered (a new one is one more entry, tested below)
    assert {"hamming", "euclidean", "coarse_to_fine", "category_weighted"} <= set(RANKINGS)
    with pytest.raises(RshashError, match="nosuch"):
        order("nosuch", {"packed": q}, {"packed": db})
    with pytest.raises(RshashError, match="class_prob"):
        order("category_weighted", {"packed": q}, {"packed": db})
    with pytest.raises(RshashError, match="top_n"):
        order("coarse_to_fine", {"packed": q, "value": x}, {"packed": db, "value": y}, {"top_n": 3})


def reference_coarse_to_fine(bits_q, bits_db, vq, vdb, m):
    """Plain Python: sort by (Hamming, index); re-sort the first m by (Euclidean, that rank)."""
    out = []
    for i in range(len(bits_q)):
        ham = [int((bits_q[i] != bits_db[j]).sum()) for j in range(len(bits_db))]
        coarse = sorted(range(len(bits_db)), key=lambda j: (ham[j], j))
        head = coarse[:m]
        head = sorted(head, key=lambda j: (float(((vq[i] - vdb[j]) ** 2).sum()), head.index(j)))
        out.append(head + coarse[m:])
    return np.array(out)


@pytest.mark.parametrize("m", [1, 5, 12, 40])
def test_coarse_to_fine_matches_reference(m):
    rng = np.random.default_rng(m)
    pool = rng.integers(0, 2, size=(3, 16))
    bq, bdb = pool[rng.integers(0, 3, 6)], pool[rng.integers(0, 3, 25)]
    vq, vdb = rng.normal(size=(6, 16)), rng.normal(size=(25, 16))
    vdb[3] = vdb[7]  # an exact Euclidean tie
    got = order(
        "coarse_to_fine",
        {"packed": pack_bits(bq), "value": vq},
        {"packed": pack_bits(bdb), "value": vdb},
        {"top_m": m},
    )
    np.testing.assert_array_equal(got, reference_coarse_to_fine(bq, bdb, vq, vdb, m))


def test_category_weighted_matches_the_dah_formula():
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 2, size=(4, 24))
    bq, bdb = pool[rng.integers(0, 4, 5)], pool[rng.integers(0, 4, 20)]
    pq, pdb = rng.dirichlet(np.ones(3), 5), rng.dirichlet(np.ones(3), 20)
    got = order(
        "category_weighted",
        {"packed": pack_bits(bq), "class_prob": pq},
        {"packed": pack_bits(bdb), "class_prob": pdb},
    )
    for i in range(5):
        c = int(np.argmax(pq[i]))
        d = [int((bq[i] != bdb[j]).sum()) * np.exp(1 - pdb[j, c]) for j in range(20)]
        assert list(got[i]) == sorted(range(20), key=lambda j: (d[j], j))
    # hand case: equal Hamming distance 1; the item more confident in the query's
    # predicted class (0.9 vs 0.2) ranks first: 1 * e^0.1 < 1 * e^0.8
    q = pack_bits(np.array([[0] * 8]))
    db = pack_bits(np.array([[1] + [0] * 7, [0] * 7 + [1]]))
    got = order(
        "category_weighted",
        {"packed": q, "class_prob": np.array([[0.7, 0.3]])},
        {"packed": db, "class_prob": np.array([[0.2, 0.8], [0.9, 0.1]])},
    )
    assert list(got[0]) == [1, 0]


@pytest.mark.parametrize("name", list(RANKINGS))
def test_every_ranking_is_scored_as_its_order(name):
    """A ranking's scoring path (its own kernel, its distances, or its order) gives the
    statistics of the order it defines, with heavy ties and a left-out item, and a
    distance ranking's order is its distance matrix sorted with ties by index."""
    from rshash.scoring import score_ranked

    rng = np.random.default_rng(3)
    nq, ndb, bits, classes = 6, 40, 16, 3
    ql, dl = rng.integers(0, classes, nq), rng.integers(0, classes, ndb)
    q = {
        "packed": tied_codes(rng, nq, bits),
        "value": rng.integers(0, 3, (nq, 4)) * 1.0,
        "class_prob": rng.dirichlet(np.ones(classes), nq),
    }
    db = {
        "packed": tied_codes(rng, ndb, bits),
        "value": rng.integers(0, 3, (ndb, 4)) * 1.0,
        "class_prob": rng.dirichlet(np.ones(classes), ndb),
    }
    spec = RANKINGS[name]
    ranked = spec.ranked(q, db)
    assert sorted(ranked[0]) == list(range(ndb))
    if spec.distances is not None:
        np.testing.assert_array_equal(ranked, reference_rank(spec.distance_matrix(q, db)))
    exclude = np.array([-1, 3, -1, 0, -1, 39])
    k_cap, width = np.full(nq, 10), 15
    got = spec.scores(q, db, ql, dl, k_cap, width, exclude)
    want = score_ranked(ranked, ql, dl, k_cap, width, exclude)
    for field in ("ap_sum", "top", "rank_sum", "n_within"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), err_msg=field)
