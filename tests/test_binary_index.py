"""The public binary index: faiss's shapes and order, a plain reference, save/load."""

import numpy as np
import pytest

from rshash import RshashError
from rshash.codes import pack_bits
from rshash.hamming import BinaryIndex, read_binary_index


def codes(rng, n, bits, distinct=6):
    """Codes drawn from a few distinct ones, so distances tie heavily."""
    pool = rng.integers(0, 2, size=(distinct, bits))
    return pack_bits(pool[rng.integers(0, distinct, size=n)] ^ (rng.random((n, bits)) < 0.05))


def reference_distances(q, db):
    return np.unpackbits(q[:, None, :] ^ db[None, :, :], axis=-1).sum(-1)


def reference_order(d):
    return np.array([sorted(range(len(row)), key=lambda j: (row[j], j)) for row in d])


@pytest.mark.parametrize("bits", [8, 24, 64, 72, 256])
def test_search_is_the_reference_top_k_with_ties_by_id(bits):
    rng = np.random.default_rng(bits)
    db, q = codes(rng, 300, bits), codes(rng, 17, bits)
    index = BinaryIndex(bits)
    index.add(db[:100]).add(db[100:])  # added in two parts: ids follow add order
    assert index.ntotal == 300 and np.array_equal(index.reconstruct_n(), db)
    d = reference_distances(q, db)
    order = reference_order(d)
    D, I = index.search(q, 25)
    assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (17, 25)
    assert np.array_equal(I, order[:, :25])
    assert np.array_equal(D, np.take_along_axis(d, order[:, :25], axis=1))
    D_all, I_all = index.rank(q)
    assert np.array_equal(I_all, order) and np.array_equal(index.distances(q), d)


def test_search_past_ntotal_pads_as_faiss_does():
    rng = np.random.default_rng(0)
    db = codes(rng, 4, 16)
    D, I = BinaryIndex(16).add(db).search(db[:2], 6)
    assert (I[:, 4:] == -1).all() and (D[:, 4:] == np.iinfo(np.int32).max).all()
    assert sorted(I[0, :4]) == [0, 1, 2, 3]


@pytest.mark.parametrize("radius", [0, 1, 3, 9, 33])
def test_range_search_returns_every_code_below_the_radius(radius):
    rng = np.random.default_rng(radius)
    db, q = codes(rng, 200, 32), codes(rng, 9, 32)
    lims, D, I = BinaryIndex(32).add(db).range_search(q, radius)
    d = reference_distances(q, db)
    assert lims.shape == (10,) and lims[0] == 0 and lims[-1] == len(D) == len(I)
    for i in range(len(q)):
        want = [j for j in reference_order(d[i : i + 1])[0] if d[i, j] < radius]
        assert I[lims[i] : lims[i + 1]].tolist() == want
        assert D[lims[i] : lims[i + 1]].tolist() == [d[i, j] for j in want]


def test_same_answers_as_faiss():
    """faiss's IndexBinaryFlat gives the same distances, the same neighbour sets by
    distance, and the same range-search sets (its order within a tie is its own)."""
    import faiss  # a test dependency (pyproject: test extra)

    rng = np.random.default_rng(5)
    db, q = codes(rng, 500, 64, distinct=50), codes(rng, 20, 64, distinct=50)
    ours = BinaryIndex(64).add(db)
    theirs = faiss.IndexBinaryFlat(64)
    theirs.add(db)
    D, I = ours.search(q, 10)
    fD, fI = theirs.search(q, 10)
    assert np.array_equal(D, fD)
    d = reference_distances(q, db)
    assert np.array_equal(np.take_along_axis(d, fI, axis=1), D)
    lims, RD, RI = ours.range_search(q, 20)
    flims, fRD, fRI = theirs.range_search(q, 20)
    assert np.array_equal(lims, flims)
    for i in range(len(q)):
        a, b = slice(lims[i], lims[i + 1]), slice(flims[i], flims[i + 1])
        assert sorted(zip(RI[a], RD[a])) == sorted(zip(fRI[b], fRD[b]))


@pytest.mark.parametrize("mmap", [True, False])
def test_write_and_read_back(tmp_path, mmap):
    rng = np.random.default_rng(1)
    db, q = codes(rng, 1000, 48), codes(rng, 5, 48)
    index = BinaryIndex(48).add(db)
    index.write(tmp_path / "codes.rbi")
    back = read_binary_index(tmp_path / "codes.rbi", mmap=mmap)
    assert back.d == 48 and back.ntotal == 1000
    assert isinstance(back.words_t, np.memmap) == mmap
    for a, b in zip(index.search(q, 7), back.search(q, 7)):
        assert np.array_equal(a, b)


def test_a_damaged_index_file_is_refused(tmp_path):
    path = tmp_path / "codes.rbi"
    BinaryIndex(16).add(codes(np.random.default_rng(2), 50, 16)).write(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(RshashError, match="codes.rbi: content digest mismatch"):
        read_binary_index(path)


def test_bad_arguments():
    index = BinaryIndex(16).add(np.zeros((3, 2), np.uint8))
    with pytest.raises(RshashError, match="multiple of 8"):
        BinaryIndex(12)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        index.add(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 2), np.uint8), 0)
    with pytest.raises(ValueError, match="radius"):
        index.range_search(np.zeros((1, 2), np.uint8), -1)
