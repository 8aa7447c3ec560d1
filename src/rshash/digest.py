"""Content digests of cached artefacts: sealed when written, checked before parsing.

Every cached artefact (features ``.h5``, codes, split and manifest ``.parquet``,
model and index ``.npz``) carries the sha256 of its own bytes inside itself,
in a slot the file format leaves free for the writer:

* HDF5: the user block (the first 512 bytes, which HDF5 skips);
* Parquet: a key-value entry of the footer (``rshash.sha256``);
* npz (zip): the archive comment at the very end;
* rshash's own formats: right after the magic line (:func:`write_arrays`), after the
  magic and JSON lines (the binary index of ``rshash.hamming``), or as the first
  field, ``digest`` (a sealed JSON document, the index manifest of ``rshash.archive``).

The slot holds ``rshash-sha256:`` and 64 hex digits; the digest covers the
whole file with those 64 digits read as ``0``. :func:`seal` fills the slot of
a file just written (before it is renamed into place); :func:`verify` checks
it on the raw bytes, before h5py, pyarrow or zipfile parse anything, since a
corrupted file can crash a parser or, worse, parse into different numbers
(Parquet page checksums cover neither page headers nor the footer; HDF5's
Fletcher-32 filter covers only chunked data).

The slot is found where the format puts it (:func:`_slot`), never by searching
the bytes for the marker: a file holds bytes its users choose (an image named
``rshash-sha256:<64 hex>.png`` is a string in a Parquet data page and in the
footer's column statistics), and a search would take those for the slot. The
Parquet footer is walked field by field (Thrift compact protocol, the few lines
of :func:`_parquet_slot`) to the value of the ``rshash.sha256`` key-value entry,
since no library reports where in the file a value lies. Files written by
earlier versions verify: their slot was already where the format puts it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rshash import RshashError

MARKER = b"rshash-sha256:"
_HEX = 64
_ZEROS = b"0" * _HEX
PLACEHOLDER = (MARKER + _ZEROS).decode()  # what writers put in the slot
SLOT = len(MARKER) + _HEX
HDF5_USERBLOCK = 512  # the smallest HDF5 user block
_HEAD = HDF5_USERBLOCK  # where a slot at the start of a file can lie
_CHUNK = 1 << 22


ARRAYS_MAGIC = b"RSHASH-ARRAYS\n"  # write_arrays: magic line, then the slot
BINARY_INDEX_MAGIC = b"RSHASH-BINARY-INDEX\n"  # rshash.hamming: magic, JSON line, slot
JSON_HEAD = b'{\n "digest": "'  # a sealed JSON document: its first field is the digest
_PARQUET = b"PAR1"
_ZIP_END = b"PK\x05\x06"  # the end of central directory record (22 bytes + comment)
_PARQUET_KEY = b"rshash.sha256"


def _slot(fh, size: int) -> int | None:
    """Offset of the 64 hex digits of the file's digest slot, at the place its format
    puts it (the file's first bytes tell the format), or None."""
    fh.seek(0)
    head = fh.read(min(size, _HEAD))
    if head.startswith(MARKER):  # HDF5: the user block
        at = 0
    elif head.startswith(ARRAYS_MAGIC):
        at = len(ARRAYS_MAGIC)
    elif head.startswith(JSON_HEAD):
        at = len(JSON_HEAD)
    elif head.startswith(BINARY_INDEX_MAGIC):
        at = head.find(b"\n", len(BINARY_INDEX_MAGIC)) + 1  # after the JSON line
        if at == 0:
            return None
    elif head.startswith(_PARQUET):
        return _parquet_slot(fh, size)
    elif head.startswith(b"PK"):
        return _zip_slot(fh, size)
    else:
        return None
    return at + len(MARKER) if head[at : at + SLOT].startswith(MARKER) else None


def _zip_slot(fh, size: int) -> int | None:
    """A zip (npz) file's slot: its comment, the last bytes of the file, after the
    22-byte end of central directory record that gives the comment's length."""
    end = size - 22 - SLOT
    if end < 0:
        return None
    fh.seek(end)
    record = fh.read(22 + len(MARKER))
    if (
        record[:4] != _ZIP_END
        or int.from_bytes(record[20:22], "little") != SLOT
        or record[22:] != MARKER
    ):
        return None
    return end + 22 + len(MARKER)


def _parquet_slot(fh, size: int) -> int | None:
    """A Parquet file's slot: the value of its footer's ``rshash.sha256`` key-value
    entry (FileMetaData field 5, a list of KeyValue structs of key 1 and value 2).
    The footer's length is in the 4 bytes before the closing magic."""
    if size < 12:
        return None
    fh.seek(size - 8)
    tail = fh.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != _PARQUET or not 0 < length <= size - 12:
        return None
    start = size - 8 - length
    fh.seek(start)
    try:
        at = _thrift_key_value(fh.read(length), 5, _PARQUET_KEY)
    except (IndexError, ValueError):
        return None
    if at is None:
        return None
    return start + at + len(MARKER)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _skip(buf: bytes, i: int, kind: int, depth: int = 0) -> int:
    """The offset after a Thrift compact value of type ``kind`` at ``i``."""
    if depth > 64:
        raise ValueError("nested too deep")
    if kind in (1, 2):  # bool: in the field header (a list element is one byte)
        return i
    if kind == 3:
        return i + 1
    if kind in (4, 5, 6):
        return _varint(buf, i)[1]
    if kind == 7:
        return i + 8
    if kind == 8:
        n, i = _varint(buf, i)
        return i + n
    if kind in (9, 10):
        head = buf[i]
        i += 1
        n, elem = head >> 4, head & 0x0F
        if n == 15:
            n, i = _varint(buf, i)
        for _ in range(n):
            i = i + 1 if elem in (1, 2) else _skip(buf, i, elem, depth + 1)
        return i
    if kind == 11:
        n, i = _varint(buf, i)
        if n:
            types = buf[i]
            i += 1
            for _ in range(n):
                i = _skip(buf, i, types >> 4, depth + 1)
                i = _skip(buf, i, types & 0x0F, depth + 1)
        return i
    if kind == 12:
        field = 0
        while True:
            field, ftype, i = _field(buf, i, field)
            if ftype == 0:
                return i
            i = _skip(buf, i, ftype, depth + 1)
    raise ValueError(f"unknown thrift type {kind}")


def _field(buf: bytes, i: int, last: int) -> tuple[int, int, int]:
    """(field id, type, offset of the value) of the field header at ``i`` (type 0: stop)."""
    head = buf[i]
    i += 1
    if head == 0:
        return 0, 0, i
    delta, ftype = head >> 4, head & 0x0F
    if delta:
        return last + delta, ftype, i
    zigzag, i = _varint(buf, i)
    return (zigzag >> 1) ^ -(zigzag & 1), ftype, i


def _thrift_key_value(buf: bytes, list_field: int, key: bytes) -> int | None:
    """Offset in ``buf`` (a Thrift compact struct) of the value of entry ``key`` in the
    list of KeyValue structs that is field ``list_field``; None when absent or twice."""
    found, i, field = [], 0, 0
    while True:
        field, ftype, i = _field(buf, i, field)
        if ftype == 0:
            break
        if field != list_field or ftype != 9:
            i = _skip(buf, i, ftype)
            continue
        head = buf[i]
        i += 1
        n, elem = head >> 4, head & 0x0F
        if n == 15:
            n, i = _varint(buf, i)
        if elem != 12:
            raise ValueError("key-value metadata is not a list of structs")
        for _ in range(n):
            k = v = None
            kv_field = 0
            while True:
                kv_field, ktype, i = _field(buf, i, kv_field)
                if ktype == 0:
                    break
                if ktype == 8 and kv_field in (1, 2):
                    length, j = _varint(buf, i)
                    if kv_field == 1:
                        k = buf[j : j + length]
                    else:
                        v = (j, length)
                    i = j + length
                else:
                    i = _skip(buf, i, ktype)
            if k == key and v is not None:
                found.append(v)
    if len(found) != 1 or found[0][1] != SLOT:
        return None
    at = found[0][0]
    return at if buf[at : at + len(MARKER)] == MARKER else None


def _hash(fh, size: int, slot: int) -> str:
    """sha256 of the file with the 64 digits at ``slot`` read as zeros."""
    h = hashlib.sha256()
    fh.seek(0)
    pos = 0
    while pos < size:
        block = fh.read(min(_CHUNK, size - pos))
        if not block:
            break
        lo, hi = max(slot - pos, 0), min(slot + _HEX - pos, len(block))
        if lo < hi:
            block = block[:lo] + b"0" * (hi - lo) + block[hi:]
        h.update(block)
        pos += len(block)
    return h.hexdigest()


def seal(path: str | os.PathLike) -> str:
    """Write the digest of ``path`` into its slot (which must hold the placeholder)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        slot = _slot(fh, size)
        if slot is None:
            raise RuntimeError(f"{path}: no digest slot to seal (writer bug)")
        digest = _hash(fh, size, slot)
        fh.seek(slot)
        fh.write(digest.encode())
        fh.flush()
        os.fsync(fh.fileno())
    return digest


def verify(path: str | os.PathLike, what: str = "file") -> str:
    """The sha256 of ``path`` after checking it against the digest the file carries.

    Raises RshashError naming the file when it is missing, carries no digest
    or does not match it.
    """
    path = Path(path)
    if not path.is_file():
        raise RshashError(f"{what} not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        slot = _slot(fh, size)
        if slot is None:
            raise RshashError(
                f"{path}: no rshash content digest (damaged, not written by rshash, or written "
                "by a version before digests); delete it and rerun to rebuild it"
            )
        fh.seek(slot)
        stored = fh.read(_HEX).decode("ascii", errors="replace")
        actual = _hash(fh, size, slot)
    if stored != actual:
        raise RshashError(
            f"{path}: content digest mismatch (the file was corrupted or changed "
            "after it was written); delete it and rerun to rebuild it"
        )
    return actual


def digest_of(path: str | os.PathLike) -> str:
    """The digest a sealed file carries, without checking it (cheap: for provenance
    of files already verified in this process)."""
    path = Path(path)
    with open(path, "rb") as fh:
        slot = _slot(fh, path.stat().st_size)
        if slot is None:
            raise RshashError(f"{path}: no rshash content digest")
        fh.seek(slot)
        return fh.read(_HEX).decode("ascii", errors="replace")


def write_sealed(path: str | os.PathLike, write) -> None:
    """``atomic_write`` whose temporary file is sealed before the rename: ``write(tmp)``
    must leave :data:`PLACEHOLDER` in the file (the helpers below do)."""
    from rshash.atomic import atomic_write

    def go(tmp):
        write(tmp)
        seal(tmp)

    atomic_write(path, go)


# --- one writer and one reader per container format -------------------------------


def write_parquet(path: str | os.PathLike, table) -> None:
    """Write a pyarrow Table atomically, its digest in the footer metadata."""
    import pyarrow.parquet as pq

    meta = dict(table.schema.metadata or {})
    meta[b"rshash.sha256"] = PLACEHOLDER.encode()
    table = table.replace_schema_metadata(meta)
    write_sealed(path, lambda tmp: pq.write_table(table, tmp))


def read_parquet(path: str | os.PathLike, what: str):
    """The pyarrow Table of a sealed Parquet file, checked first; one-line errors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    verify(path, what)
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RshashError(f"{path}: not a readable {what} ({exc})") from None


def prepare_hdf5(tmp: str | os.PathLike) -> None:
    """Put the placeholder in the user block of an HDF5 file created with
    ``userblock_size=HDF5_USERBLOCK`` and closed (then :func:`seal` it)."""
    with open(tmp, "r+b") as fh:
        fh.write(PLACEHOLDER.encode())


def write_npz(path: str | os.PathLike, header: dict, arrays: dict) -> None:
    """An .npz of a JSON ``header`` and numpy arrays (no pickle), digest in the zip comment."""
    import json
    import zipfile

    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, header=np.array(json.dumps(header, sort_keys=True)), **arrays)
        with zipfile.ZipFile(tmp, "a") as z:
            z.comment = PLACEHOLDER.encode()

    write_sealed(path, write)


def read_npz_header(path: str | os.PathLike, what: str) -> dict:
    """The JSON header of a file written by :func:`write_npz`, checked first (its arrays
    are not read)."""
    return _read_npz(path, what, with_arrays=False)[0]


def read_npz(path: str | os.PathLike, what: str) -> tuple[dict, dict]:
    """(header, arrays) of a file written by :func:`write_npz`, checked first."""
    return _read_npz(path, what, with_arrays=True)


def _read_npz(path, what: str, with_arrays: bool) -> tuple[dict, dict]:
    import json
    import zipfile

    import numpy as np

    verify(path, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in z.files if k != "header"} if with_arrays else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RshashError(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(header, dict):
        raise RshashError(f"{path}: not a readable {what} (header is not a JSON object)")
    return header, arrays


_ARRAYS_ALIGN = 4096  # where the data starts (a page)
_ARRAY_ALIGN = 64  # where each array starts (a cache line)


def write_arrays(path: str | os.PathLike, attrs: dict, arrays: dict) -> None:
    """Numpy arrays in one sealed file that :func:`read_arrays` memory-maps.

    The layout: the magic line, the digest slot, one JSON line (``attrs`` and each
    array's dtype, shape and offset), zero padding to a page, then the raw arrays
    (little-endian, each 64-byte aligned). An ``.npz`` cannot be mapped (zip members)
    and an ``.npy`` holds one array; this holds an index segment's arrays, written
    atomically and verified like every other artefact.
    """
    import json

    import numpy as np

    table, offset = {}, 0
    prepared = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        prepared[name] = array
        table[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        offset += -(-array.nbytes // _ARRAY_ALIGN) * _ARRAY_ALIGN
    meta = json.dumps({"attrs": attrs, "arrays": table}, sort_keys=True).encode()
    head = ARRAYS_MAGIC + PLACEHOLDER.encode() + b"\n" + meta + b"\n"
    start = -(-len(head) // _ARRAYS_ALIGN) * _ARRAYS_ALIGN

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(head.ljust(start, b"\0"))
            for name, array in prepared.items():
                fh.seek(start + table[name]["offset"])
                fh.write(array.tobytes())
            fh.truncate(start + offset)

    write_sealed(path, write)


def read_arrays(path: str | os.PathLike, what: str) -> tuple[dict, dict]:
    """(attrs, arrays) of a file written by :func:`write_arrays`, its digest checked
    first; the arrays are read-only memory maps (nothing is read until used)."""
    import json

    import numpy as np

    verify(path, what)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
            if not head.startswith(ARRAYS_MAGIC):
                raise ValueError("no rshash arrays magic")
            first = len(ARRAYS_MAGIC) + SLOT + 1
            fh.seek(first)
            line = fh.readline()
        meta = json.loads(line)
        start = -(-(first + len(line)) // _ARRAYS_ALIGN) * _ARRAYS_ALIGN
        arrays = {}
        for name, spec in meta["arrays"].items():
            shape = tuple(spec["shape"])
            if 0 in shape:
                arrays[name] = np.zeros(shape, dtype=spec["dtype"])
            else:
                arrays[name] = np.memmap(
                    path, dtype=spec["dtype"], mode="r", offset=start + spec["offset"], shape=shape
                )
        return meta["attrs"], arrays
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RshashError(f"{path}: not a readable {what} ({exc})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a whole file (a download, a weights or model file), hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
