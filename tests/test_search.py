"""Hamming/Euclidean distances and the stable tie rule of rankings."""

import numpy as np
import pytest

from rshash import RshashError
from rshash.codes import pack_bits
from rshash.search import (RANKINGS, euclidean_distances, hamming_distances, order, rank,
                           ranking_input, topk)


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
    for block in (1, 3, 1024):
        got = hamming_distances(q, db, block=block)
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
    np.testing.assert_array_equal(order("hamming", q, db), reference_rank(hamming_distances(q, db)))
    x, y = rng.normal(size=(3, 5)), rng.normal(size=(8, 5))
    np.testing.assert_array_equal(order("euclidean", x, y),
                                  reference_rank(euclidean_distances(x, y)))
    assert {ranking_input(name) for name in RANKINGS} <= {"packed", "value"}
    with pytest.raises(RshashError, match="nosuch"):
        order("nosuch", q, db)
