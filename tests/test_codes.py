import numpy as np
import pytest

from rshash import RshashError
from rshash.codes import pack_bits, read_codes, unpack_bits, write_codes


@pytest.mark.parametrize("bits", range(8, 257, 8))
def test_packing_round_trip_and_numpy_bit_order(bits):
    rng = np.random.default_rng(bits)
    b = rng.integers(0, 2, size=(7, bits), dtype=np.uint8)
    packed = pack_bits(b)
    assert packed.shape == (7, bits // 8)
    np.testing.assert_array_equal(unpack_bits(packed, bits), b)
    # first bit is the most significant bit of the first byte (np.packbits order)
    assert packed[0, 0] >> 7 == b[0, 0]


@pytest.mark.parametrize("bits", [8, 24, 64, 256])
def test_parquet_round_trip(tmp_path, bits):
    rng = np.random.default_rng(0)
    n = 11
    b = rng.integers(0, 2, size=(n, bits), dtype=np.uint8)
    value = rng.normal(size=(n, bits)).astype(np.float32)
    prob = rng.random((n, 4)).astype(np.float32)
    ids = [f"c/{i}" for i in range(n)]
    roles = ["train"] * 5 + ["query"] * 6
    path = tmp_path / "codes.parquet"
    write_codes(
        path,
        ids,
        np.arange(n) % 3,
        roles,
        pack_bits(b),
        value,
        bits,
        class_prob=prob,
        predicted_label=np.arange(n) % 4,
    )
    c = read_codes(path)
    assert c.bits == bits and len(c) == n
    np.testing.assert_array_equal(unpack_bits(c.packed, bits), b)
    np.testing.assert_array_equal(c.value, value)
    np.testing.assert_array_equal(c.class_prob, prob)
    np.testing.assert_array_equal(c.predicted_label, np.arange(n) % 4)
    assert c.image_id.tolist() == ids and c.select("query").tolist() == list(range(5, 11))
    assert not list(tmp_path.glob(".*tmp*"))


def test_code_column_is_fixed_size_binary(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    write_codes(
        path, ["a"], [0], ["query"], np.array([[0xAB, 0x01]], np.uint8), np.zeros((1, 16)), 16
    )
    table = pq.read_table(path)
    assert table.schema.field("code").type == pa.binary(2)
    assert table.column("code")[0].as_py() == bytes([0xAB, 0x01])


def test_bad_bits_and_missing_file(tmp_path):
    with pytest.raises(RshashError, match="multiple of 8"):
        pack_bits(np.zeros((2, 12)))
    with pytest.raises(RshashError, match="not found"):
        read_codes(tmp_path / "nope.parquet")
