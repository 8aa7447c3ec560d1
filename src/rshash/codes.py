"""Hash codes: bit packing and the codes Parquet contract.

``codes/{cell}.parquet`` holds one row per (image, role) of the split, so
an image that is both ``train`` and ``database`` appears twice with the
same code. Columns: image_id, label, role, ``code`` fixed_size_binary(bits/8)
in numpy ``packbits`` order (most significant bit first, readable straight
into a FAISS binary index), ``value`` list<float32> (the pre-binarization
output), and optionally ``class_prob`` list<float32> and ``predicted_label``.
The bit count is stored in the schema metadata. numpy + pyarrow only.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa

from rshash import RshashError
from rshash.digest import digest_of, read_parquet, write_parquet

# The rotated copies of the queries (for rotation_top3): their angles, as extracted
# (rshash.features, kind ``rot``) and encoded (role ``rotated``), and their image ids.
ROTATIONS = (90, 180, 270)
ROTATED_ROLE = "rotated"


def rotated_id(image_id: str, degrees: int) -> str:
    """The image id of a query's rotated copy in a codes file: ``{id}@rot{degrees}``."""
    return f"{image_id}@rot{degrees}"


def check_bits(bits: int, allow_zero: bool = False) -> int:
    """``bits`` as an int; a positive multiple of 8 (0 too for real-valued methods)."""
    if allow_zero and isinstance(bits, (int, np.integer)) and bits == 0:
        return 0
    if not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
        raise RshashError(f"bits must be a positive multiple of 8, got {bits!r}")
    return int(bits)


def pack_bits(bits01: np.ndarray) -> np.ndarray:
    """(n, bits) array of 0/1 (or bool) -> (n, bits/8) uint8, packbits order."""
    b = np.asarray(bits01)
    if b.ndim != 2:
        raise ValueError(f"expected a 2-d bit matrix, got shape {b.shape}")
    check_bits(b.shape[1])
    return np.packbits(b.astype(bool), axis=1)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """(n, bits/8) uint8 -> (n, bits) uint8 of 0/1."""
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=check_bits(bits))


def write_codes(
    path: str | os.PathLike,
    image_id,
    label,
    role,
    packed: np.ndarray,
    value: np.ndarray,
    bits: int,
    class_prob: np.ndarray | None = None,
    predicted_label: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write the codes table atomically (temporary file, then rename).

    ``bits`` = 0 marks a real-valued method (``raw``): no ``code`` column.
    """
    bits = check_bits(bits, allow_zero=True)
    n = len(image_id)
    value = np.asarray(value, dtype=np.float32)
    columns = {
        "image_id": pa.array(list(map(str, image_id)), pa.string()),
        "label": pa.array(np.asarray(label, dtype=np.int64)),
        "role": pa.array(list(map(str, role)), pa.string()),
    }
    if bits:
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        if packed.shape != (n, bits // 8):
            raise ValueError(f"packed codes have shape {packed.shape}, expected {(n, bits // 8)}")
        columns["code"] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(bits // 8), n, [None, pa.py_buffer(packed.tobytes())]
        )
    columns["value"] = _list_column(value)
    if class_prob is not None:
        columns["class_prob"] = _list_column(np.asarray(class_prob, dtype=np.float32))
    if predicted_label is not None:
        columns["predicted_label"] = pa.array(np.asarray(predicted_label, dtype=np.int64))
    meta = {"rshash.bits": str(bits), **(metadata or {})}
    table = pa.table(columns).replace_schema_metadata({k: str(v) for k, v in meta.items()})
    write_parquet(path, table)


def _list_column(matrix: np.ndarray) -> pa.Array:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


class Codes:
    """A codes file in memory, column by column as numpy arrays."""

    def __init__(self, table: pa.Table, path: str = "<memory>"):
        self.path = path
        self.sha256 = ""  # the file's content digest, set by read_codes
        meta = table.schema.metadata or {}
        if b"rshash.bits" not in meta:
            raise RshashError(f"{path}: not an rshash codes file (no rshash.bits metadata)")
        self.bits = int(meta[b"rshash.bits"])
        self.metadata = {k.decode(): v.decode() for k, v in meta.items()}
        self.image_id = np.asarray(table.column("image_id").to_pylist(), dtype=object)
        self.label = table.column("label").to_numpy()
        self.role = np.asarray(table.column("role").to_pylist(), dtype=object)
        self.packed = None  # real-valued methods (bits = 0) have no codes
        if self.bits:
            code = table.column("code").combine_chunks()
            nbytes = self.bits // 8
            self.packed = np.frombuffer(code.buffers()[1], dtype=np.uint8)[
                code.offset * nbytes : (code.offset + len(code)) * nbytes
            ].reshape(len(code), nbytes)
        self.value = _matrix(table.column("value"))
        names = table.column_names
        self.class_prob = _matrix(table.column("class_prob")) if "class_prob" in names else None
        self.predicted_label = (
            table.column("predicted_label").to_numpy() if "predicted_label" in names else None
        )

    def __len__(self) -> int:
        return len(self.image_id)

    @property
    def inputs(self) -> dict:
        """The digests of the files the codes were trained from (name -> sha256)."""
        return json.loads(self.metadata.get("rshash.inputs", "{}"))

    def select(self, role: str) -> np.ndarray:
        """Row indices of one role, in file order."""
        return np.flatnonzero(self.role == role)


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(arr), -1)


def read_codes(path: str | os.PathLike) -> Codes:
    table = read_parquet(path, "codes file")
    try:
        codes = Codes(table, str(path))
    except (KeyError, ValueError) as exc:
        raise RshashError(f"{path}: not an rshash codes file ({exc})") from None
    codes.sha256 = digest_of(path)
    return codes
