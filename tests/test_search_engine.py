"""The compiled packed-Hamming engine against plain-Python references."""

import numpy as np
import pytest

from rshash import RshashError
from rshash.codes import pack_bits
from rshash.hamming import hamming_distances, hamming_rank, hamming_topk
from rshash.hamming.kernels import CHUNK, QUERY_BLOCK, SPAN


def tied_codes(rng, n, bits, distinct):
    """n codes drawn from ``distinct`` random ones, so distances tie heavily."""
    pool = rng.integers(0, 2, size=(distinct, bits))
    return pack_bits(pool[rng.integers(0, distinct, size=n)])


def reference(q, db):
    """Distances by counting differing bits; rankings by sorting (distance, index) pairs."""
    qb, dbb = np.unpackbits(q, axis=1), np.unpackbits(db, axis=1)
    d = (qb[:, None, :] != dbb[None, :, :]).sum(-1)
    ranked = np.array([sorted(range(len(row)), key=lambda j: (row[j], j)) for row in d])
    return d, ranked


@pytest.mark.parametrize("bits", range(8, 257, 8))
def test_every_width_matches_the_reference(bits):
    rng = np.random.default_rng(bits)
    q, db = tied_codes(rng, 19, bits, 5), tied_codes(rng, 61, bits, 5)
    d, ranked = reference(q, db)
    np.testing.assert_array_equal(hamming_distances(q, db), d)
    idx, dist = hamming_rank(q, db)
    np.testing.assert_array_equal(idx, ranked)
    np.testing.assert_array_equal(dist, np.take_along_axis(d, ranked, 1))
    for k in (1, 2, 7, 60, 61, 100):
        idx, dist = hamming_topk(q, db, k)
        assert idx.shape == (19, min(k, 61))
        np.testing.assert_array_equal(idx, ranked[:, :k])
        np.testing.assert_array_equal(dist, np.take_along_axis(d, ranked[:, :k], 1))


@pytest.mark.parametrize("bits,distinct", [(64, 3), (64, 40), (256, 6), (96, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_top_k_across_chunks_and_query_blocks(bits, distinct, threads):
    """Databases spanning several chunks and query blocks, with the threshold
    dropping repeatedly as closer codes arrive late in the database."""
    rng = np.random.default_rng(bits + distinct)
    nq, ndb = 2 * QUERY_BLOCK + 3, CHUNK + 3 * SPAN + 5
    q, db = tied_codes(rng, nq, bits, distinct), tied_codes(rng, ndb, bits, distinct)
    db[-40:] = q[0]  # exact matches at the very end must still win
    d, _ = reference(q, db)
    expected = np.argsort(d, axis=1, kind="stable")  # stable: ties by database index
    for k in (1, 50, 333):
        idx, dist = hamming_topk(q, db, k, threads=threads)
        np.testing.assert_array_equal(idx, expected[:, :k])
        np.testing.assert_array_equal(dist, np.take_along_axis(d, expected[:, :k], 1))
    assert (hamming_topk(q[:1], db, 40)[1] == 0).all()
    idx, dist = hamming_rank(q, db, threads=threads)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(hamming_distances(q, db, threads=threads), d)


def test_hand_case():
    """Bits differ in 0, 1, 1 and 8 places: ties keep database order."""
    q = np.array([[0b00000000]], np.uint8)
    db = np.array([[0b11111111], [0b00000100], [0], [0b10000000]], np.uint8)
    idx, dist = hamming_topk(q, db, 3)
    assert idx.tolist() == [[2, 1, 3]] and dist.tolist() == [[0, 1, 1]]
    assert hamming_rank(q, db)[0].tolist() == [[2, 1, 3, 0]]


def test_bad_arguments():
    codes = np.zeros((3, 8), np.uint8)
    with pytest.raises(RshashError, match="threads"):
        hamming_topk(codes, codes, 2, threads=0)
    with pytest.raises(ValueError, match="k must be positive"):
        hamming_topk(codes, codes, 0)
    with pytest.raises(ValueError, match="must be packed codes of shape"):
        hamming_rank(codes, codes[:, :4])
