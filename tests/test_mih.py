"""Multi-index hashing returns exactly the flat scan's answer (ids, distances, ties by
id): every code length to 256 bits, k past ntotal, appended and removed codes,
saved and memory-mapped tables, shards, range search; and the auto engine's choice."""

import json

import numpy as np
import pytest

from rshash import RshashError
from rshash.hamming import BinaryIndex, ShardedIndex, read_binary_index, write_shards
from rshash.hamming.index import _INDEX_HEADER, INDEX_MAGIC, MIH_MIN_CODES


def make(rng, n, bits, clustered, centres=4):
    """Uniform random codes, or codes around a few centres with 0 to 3 bits flipped (many
    exact ties)."""
    nbytes = bits // 8
    if not clustered:
        return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    codes = rng.integers(0, 256, (centres, nbytes), dtype=np.uint8)[rng.integers(0, centres, n)]
    for _ in range(3):
        flip = rng.random(n) < 0.4
        byte, bit = rng.integers(0, nbytes, n), rng.integers(0, 8, n)
        codes[flip, byte[flip]] ^= (1 << bit[flip]).astype(np.uint8)
    return codes


def same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bits", range(8, 257, 8))
def test_mih_is_the_flat_scan_at_every_width(bits):
    rng = np.random.default_rng(bits)
    for clustered in (False, True):
        db, q = make(rng, 260, bits, clustered), make(rng, 9, bits, clustered)
        q[0] = db[5]  # an exact match
        flat = BinaryIndex(bits, engine="flat").add(db)
        mih = BinaryIndex(bits, engine="mih").add(db[:200])
        mih.search(q[:1], 1)  # tables of the first 200; the rest are appended after
        mih.add(db[200:])
        for k in (1, 2, 17, 259, 260, 300):
            same(mih.search(q, k), flat.search(q, k))
        assert mih.stats["last"]["mih"] == 9 and mih.stats["tables"]["appended"] == 60
        for radius in (0, 1, bits // 4, bits + 1):
            same(mih.range_search(q, radius), flat.range_search(q, radius))


@pytest.mark.parametrize("clustered", [False, True])
def test_removed_ids_renumber_and_keep_the_tables_exact(clustered):
    rng = np.random.default_rng(7)
    db, q = make(rng, 3000, 64, clustered), make(rng, 12, 64, clustered)
    index = BinaryIndex(64, engine="mih").add(db)
    index.search(q, 5)
    gone = [0, 7, 7, 2999, 1500, 4000, -1]  # repeats and unknown ids are ignored
    assert index.remove_ids(gone) == 4
    rest = np.delete(db, [0, 7, 1500, 2999], axis=0)
    fresh = BinaryIndex(64, engine="flat").add(rest)
    assert index.ntotal == 2996 and np.array_equal(index.reconstruct_n(), rest)
    assert index.stats["tables"]["indexed"] == 2996  # compacted, not rebuilt later
    for k in (1, 30, 3000):
        same(index.search(q, k), fresh.search(q, k))
    same(index.range_search(q, 20), fresh.range_search(q, 20))
    more = np.concatenate([db, db])
    index.add(more)  # past the rebuild threshold (4096 appended): new tables, same answers
    fresh.add(more)
    same(index.search(q, 50), fresh.search(q, 50))
    assert index.stats["tables"]["indexed"] == index.ntotal
    assert index.remove_ids([]) == 0


@pytest.mark.parametrize("mmap", [True, False])
def test_tables_are_saved_and_memory_mapped(tmp_path, mmap):
    rng = np.random.default_rng(3)
    db, q = make(rng, 2000, 128, True), make(rng, 10, 128, True)
    index = BinaryIndex(128, engine="mih").add(db)
    index.search(q, 3)
    index.add(db[:40])  # saved as appended codes, read directly after loading
    index.write(tmp_path / "i.rbi")
    back = read_binary_index(tmp_path / "i.rbi", mmap=mmap)
    back.engine = "mih"
    assert isinstance(back._tables.ids, np.memmap) == mmap
    assert back.stats["tables"] == index.stats["tables"]
    flat = BinaryIndex(128, engine="flat").add(index.reconstruct_n())
    for k in (1, 9, 2100):
        same(back.search(q, k), flat.search(q, k))
    assert back.remove_ids(np.arange(0, 2040, 3)) == 680  # works on read-only tables
    flat = BinaryIndex(128, engine="flat").add(back.reconstruct_n())
    same(back.search(q, 20), flat.search(q, 20))


def test_format_1_files_load_and_newer_formats_are_refused(tmp_path):
    """A file of the format before the tables (no "format" key) loads, tables built on
    first use; a file of a newer format gets a clear error."""
    from rshash.digest import PLACEHOLDER, write_sealed

    rng = np.random.default_rng(4)
    db = make(rng, 500, 64, False)
    words = np.ascontiguousarray(BinaryIndex(64).add(db).words_t, dtype="<u8")

    def old_file(path, meta):
        head = INDEX_MAGIC + json.dumps(meta).encode() + b"\n" + PLACEHOLDER.encode()

        def write(tmp):
            with open(tmp, "wb") as fh:
                fh.write(head.ljust(_INDEX_HEADER, b"\0") + words.tobytes())

        write_sealed(path, write)

    meta = {"d": 64, "ntotal": 500, "words": 1, "byteorder": "little"}
    old_file(tmp_path / "v1.rbi", meta)
    index = read_binary_index(tmp_path / "v1.rbi")
    index.engine = "mih"
    assert index.stats["tables"] is None
    same(index.search(db[:4], 6), BinaryIndex(64).add(db).search(db[:4], 6))
    old_file(tmp_path / "v9.rbi", {**meta, "format": 9})
    with pytest.raises(RshashError, match="format 9 is newer"):
        read_binary_index(tmp_path / "v9.rbi")


def test_shards_merge_exactly(tmp_path):
    rng = np.random.default_rng(5)
    db, q = make(rng, 1000, 64, True), make(rng, 15, 64, True)
    full = BinaryIndex(64, engine="flat").add(db)
    paths = write_shards(full, [tmp_path / f"s{i}.rbi" for i in range(3)])
    shards = ShardedIndex(paths)
    shards.shards[1].engine = "mih"  # engines may differ per shard
    assert shards.ntotal == 1000 and shards.d == 64
    for k in (1, 10, 333, 1000, 1200):
        same(shards.search(q, k, threads=2), full.search(q, k))
    same(ShardedIndex([full]).search(q, 4), full.search(q, 4))
    with pytest.raises(RshashError, match="different code lengths"):
        ShardedIndex([full, BinaryIndex(32)])


def test_auto_engine_choice():
    """Auto: flat below MIH_MIN_CODES; above, MIH gives up within its budget on uniform
    random codes (the flat scan answers), and answers clustered codes itself."""
    rng = np.random.default_rng(6)
    small = BinaryIndex(64).add(make(rng, 1000, 64, True))
    small.search(make(rng, 3, 64, True), 5)
    assert small.stats["last"]["flat"] == 3 and small.stats["tables"] is None
    for clustered in (False, True):
        db = make(rng, MIH_MIN_CODES, 64, clustered, centres=MIH_MIN_CODES // 100)
        q = db[:20].copy()
        q[:, 0] ^= 1  # one bit from a database code
        index = BinaryIndex(64).add(db)
        got = index.search(q, 10)
        last = index.stats["last"]
        if clustered:
            assert last["mih"] == 20 and last["gave_up"] == 0
        else:
            assert last["flat"] == 20 and last["gave_up"] == 16  # the probe, then flat
        same(got, BinaryIndex(64, engine="flat").add(db).search(q, 10))
        assert index.search(q, 10000)[0].shape == (20, 10000)
        assert index.stats["last"]["flat"] == 20  # k past ntotal/64: flat
    with pytest.raises(RshashError, match="unknown search engine"):
        BinaryIndex(64, engine="fast")
