"""The archive's storage: segments, the manifest, the writers' lock and atomic
publication (no torch).

An index ``PATH`` is a small sealed JSON file, the *manifest* of the current
generation, beside a folder ``PATH.parts`` of immutable *segments*:

- the manifest: ``format`` ("rshash-index"), ``version`` (2), ``generation``,
  ``backbone``, ``method``, ``bits``, ``model`` (the model file, absolute path, or
  null), ``model_sha256`` (or null), ``source`` (the first image folder or codes
  file), ``class_names`` (every class seen, in the order first seen; labels index
  it) and ``segments`` (``[{"name", "n"}]``, in index order);
- per segment ``NAME.codes``: its packed codes, a :class:`rshash.hamming.BinaryIndex`
  file; ``NAME.meta`` (rshash.digest.write_arrays): the image ids and paths (UTF-8
  bytes and offsets), labels (-1: unknown), predicted labels (methods with a class
  head) and an id hash table (FNV-1a 64, sorted) that finds an id without reading
  every id.

Every file carries its own sha256 and is memory-mapped once checked, so opening
an index reads no array into memory: ten million codes open in well under a second
(benchmarks/serve.py). Changes never touch a published file: ``--append`` writes
new segments, ``--remove`` rewrites the segments that lose rows, and the manifest
is then replaced in one rename (rshash.atomic), so a reader sees the old generation
or the new one, never a mix, and a writer killed at any point leaves the old index
intact (its leftovers are removed by the next writer). Writers take a lock on
``PATH.parts/.lock``. A running ``rshash serve`` watches the manifest and swaps the
new generation in.

An index written by an older rshash (one ``.npz``) is still read (into memory);
appending to it or removing from it rewrites it in this format.

Building from images and searching with images need the backbone (torch);
reading an index and ranking need only numpy and numba.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numba import njit

from rshash import RshashError
from rshash.digest import (
    PLACEHOLDER,
    read_arrays,
    read_npz,
    read_npz_header,
    verify,
    write_arrays,
    write_sealed,
)
from rshash.hamming import BinaryIndex, merge_topk, read_binary_index

FORMAT = "rshash-index"
VERSION = 2
SEGMENT_MAX = 1 << 20  # codes per segment: bounds a full pass's memory (serve's filters)
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a file-name stem in PATH.parts
_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


# --- rows and segments --------------------------------------------------------------


@dataclass
class Rows:
    """Images to put in an index: their packed codes (n, bits/8) uint8, ids, paths
    ("" when unknown), labels (-1: unknown) and predicted labels (or None); chips of
    geo-referenced scenes also carry ``geo``, arrays of n rows each (GEO_COLUMNS)."""

    packed: np.ndarray
    image_id: np.ndarray
    path: np.ndarray
    label: np.ndarray
    predicted_label: np.ndarray | None = None
    geo: dict | None = None

    def __len__(self) -> int:
        return len(self.image_id)

    @classmethod
    def concat(cls, parts: list[Rows], nbytes: int) -> Rows:
        """The rows of ``parts`` one after the other (``nbytes``: a code's bytes, for
        none); predicted labels and geo columns when every part has them."""
        has_pred = bool(parts) and all(p.predicted_label is not None for p in parts)
        has_geo = bool(parts) and all(p.geo is not None for p in parts)
        return cls(
            np.concatenate([p.packed for p in parts]) if parts else np.zeros((0, nbytes), "u1"),
            np.concatenate([p.image_id for p in parts]) if parts else np.array([], str),
            np.concatenate([p.path for p in parts]) if parts else np.array([], str),
            np.concatenate([p.label for p in parts]) if parts else np.array([], np.int64),
            np.concatenate([p.predicted_label for p in parts]) if has_pred else None,
            {n: np.concatenate([p.geo[n] for p in parts]) for n in GEO_COLUMNS}
            if has_geo
            else None,
        )

    def take(self, rows) -> Rows:
        pred = self.predicted_label
        return Rows(
            self.packed[rows],
            self.image_id[rows],
            self.path[rows],
            self.label[rows],
            None if pred is None else pred[rows],
            None if self.geo is None else {k: v[rows] for k, v in self.geo.items()},
        )


# A chip's place and time (rshash.archive.scenes): the scene (its number in the
# manifest's ``scenes``), the window (col_off, row_off, width, height) in the scene,
# the footprint's corners in lon/lat (n, 4, 2), their bounds (west, south, east, north:
# the box filter reads only these) and the date (days since 1970-01-01).
GEO_COLUMNS = {
    "scene": (np.int32, ()),
    "window": (np.int32, (4,)),
    "footprint": (np.float64, (4, 2)),
    "lonlat_bounds": (np.float64, (4,)),
    "date": (np.int32, ()),
}


def day_number(iso: str) -> int:
    """A date (ISO, the day; a time after it is ignored) as the ``date`` column holds
    it: days since 1970-01-01."""
    return int(np.datetime64(str(iso)[:10], "D").astype(np.int64))


def day_iso(days: int) -> str:
    """The ISO date of a ``date`` column's day number."""
    return str(np.datetime64(int(days), "D"))


@njit(cache=True)
def _fnv1a(offsets, data):
    """FNV-1a 64 of each string ``data[offsets[i]:offsets[i+1]]`` (the id hash table)."""
    out = np.empty(len(offsets) - 1, np.uint64)
    for i in range(len(out)):
        h = np.uint64(_FNV_OFFSET)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(_FNV_PRIME)
        out[i] = h
    return out


def _fnv1a_one(text: str) -> int:
    h = _FNV_OFFSET
    for c in text.encode("utf-8", "surrogateescape"):
        h = ((h ^ c) * _FNV_PRIME) & _MASK
    return h


def _strings(values) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 [n+1], UTF-8 bytes uint8) of strings."""
    encoded = [str(v).encode("utf-8", "surrogateescape") for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), np.uint8)


def _segment_arrays(rows: Rows) -> tuple[dict, dict]:
    """(attrs, arrays) of a segment's ``.meta``: paths relative to their common
    folder (``attrs["root"]``), so a segment of one folder stores each path once."""
    paths = [str(p) for p in rows.path]
    root = os.path.commonpath(paths) if paths and all(os.path.isabs(p) for p in paths) else ""
    if root and len(paths) == 1:
        root = os.path.dirname(root)
    rel = [os.path.relpath(p, root) if root else p for p in paths]
    id_offsets, id_bytes = _strings(rows.image_id)
    path_offsets, path_bytes = _strings(rel)
    hashes = _fnv1a(id_offsets, id_bytes)
    order = np.argsort(hashes, kind="stable")
    arrays = {
        "id_offsets": id_offsets,
        "id_bytes": id_bytes,
        "path_offsets": path_offsets,
        "path_bytes": path_bytes,
        "label": np.asarray(rows.label, np.int64),
        "id_hash": hashes[order],
        "id_rows": order.astype(np.int64),
    }
    if rows.predicted_label is not None:
        arrays["predicted_label"] = np.asarray(rows.predicted_label, np.int64)
    if rows.geo is not None:
        for name, (dtype, shape) in GEO_COLUMNS.items():
            column = np.asarray(rows.geo[name], dtype)
            if column.shape != (len(rows), *shape):
                raise RshashError(f"geo column {name}: shape {column.shape}, rows {len(rows)}")
            arrays[f"geo_{name}"] = column
    return {"root": root, "n": len(rows)}, arrays


class Segment:
    """One immutable part of an index: a BinaryIndex of its codes and its rows'
    ids, paths and labels (memory maps, or arrays for an old single-file index)."""

    def __init__(self, name: str, codes, attrs: dict, arrays: dict):
        self.name, self.codes, self.arrays = name, codes, arrays
        self.root = attrs.get("root", "")
        self.n = int(attrs["n"])
        if codes.ntotal != self.n or len(arrays["label"]) != self.n:
            raise RshashError(f"index segment {name}: codes and rows disagree")
        self.label = arrays["label"]
        self.predicted_label = arrays.get("predicted_label")
        self.geo = {n: arrays[f"geo_{n}"] for n in GEO_COLUMNS} if "geo_scene" in arrays else None

    @classmethod
    def from_rows(cls, name: str, rows: Rows) -> Segment:
        """An in-memory segment (nothing written)."""
        codes = BinaryIndex(8 * rows.packed.shape[1]).add(rows.packed)
        attrs, arrays = _segment_arrays(rows)
        return cls(name, codes, attrs, arrays)

    def _string(self, kind: str, row: int) -> str:
        off = self.arrays[f"{kind}_offsets"]
        raw = self.arrays[f"{kind}_bytes"][int(off[row]) : int(off[row + 1])]
        return bytes(raw).decode("utf-8", "surrogateescape")

    def image_id(self, row: int) -> str:
        return self._string("id", row)

    def path(self, row: int) -> str:
        rel = self._string("path", row)
        return os.path.join(self.root, rel) if self.root and rel else rel

    def find(self, image_id: str) -> int:
        """The row of an id, or -1."""
        table = self.arrays["id_hash"]
        h = np.uint64(_fnv1a_one(image_id))
        at = int(np.searchsorted(table, h))
        while at < len(table) and table[at] == h:
            row = int(self.arrays["id_rows"][at])
            if self.image_id(row) == image_id:
                return row
            at += 1
        return -1

    def rows(self) -> Rows:
        """Every row of the segment, in memory (to rewrite it)."""
        return Rows(
            self.codes.reconstruct_n(0, self.n),
            np.array([self.image_id(r) for r in range(self.n)], dtype=str),
            np.array([self.path(r) for r in range(self.n)], dtype=str),
            np.asarray(self.label, np.int64),
            None if self.predicted_label is None else np.asarray(self.predicted_label, np.int64),
            None if self.geo is None else {k: np.asarray(v) for k, v in self.geo.items()},
        )


# --- the index ----------------------------------------------------------------------


class Index:
    """An opened index: its header (the manifest without its segment list) and its
    segments, numbered one after the other (global rows, also the tie order)."""

    def __init__(self, header: dict, segments: list[Segment], location=None):
        self.header, self.segments = header, segments
        self.location = None if location is None else Path(location)
        self.starts = np.concatenate([[0], np.cumsum([s.n for s in segments])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def bits(self) -> int:
        return int(self.header["bits"])

    @property
    def generation(self) -> int:
        return int(self.header.get("generation", 0))

    def class_name(self, label: int | None) -> str:
        """The class of a label: its folder name when known, else the number."""
        names = self.header.get("class_names") or []
        if label is None or label < 0:
            return "-"
        return names[label] if label < len(names) else str(label)

    def locate(self, row: int) -> tuple[Segment, int]:
        """(segment, row within it) of a global row."""
        if not 0 <= row < len(self):
            raise IndexError(row)
        s = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.segments[s], row - int(self.starts[s])

    def find(self, image_id: str) -> int:
        """The global row of an image id, or -1."""
        for start, seg in zip(self.starts, self.segments):
            row = seg.find(image_id)
            if row >= 0:
                return int(start) + row
        return -1

    def image_id_of(self, row: int) -> str:
        seg, r = self.locate(row)
        return seg.image_id(r)

    def path_of(self, row: int) -> str:
        seg, r = self.locate(row)
        return seg.path(r)

    def label_of(self, row: int) -> int:
        seg, r = self.locate(row)
        return int(seg.label[r])

    def predicted_of(self, row: int) -> int | None:
        seg, r = self.locate(row)
        return None if seg.predicted_label is None else int(seg.predicted_label[r])

    @property
    def scenes(self) -> list[dict]:
        """The scenes of a geo-referenced archive (rshash.archive.scenes.scene_meta);
        empty for an index of image files."""
        return list((self.header.get("geo") or {}).get("scenes") or [])

    def geo_of(self, row: int) -> dict | None:
        """A chip's scene (its manifest entry), window, lon/lat footprint and date
        (ISO); None for an image file."""
        seg, r = self.locate(row)
        if seg.geo is None:
            return None
        return {
            "scene": self.scenes[int(seg.geo["scene"][r])],
            "window": [int(v) for v in seg.geo["window"][r]],
            "footprint": np.asarray(seg.geo["footprint"][r]).tolist(),
            "date": day_iso(seg.geo["date"][r]),
        }

    def code_of(self, row: int) -> np.ndarray:
        """The packed code of a global row, (1, bits/8) uint8."""
        seg, r = self.locate(row)
        return seg.codes.reconstruct_n(r, 1)

    def search(self, q, k: int, threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes per packed query over every segment, faiss's order:
        (D int32, I int64 global rows), by distance then row, padded past len(self).
        The segments are shards of one id space: each one's top-k, then the one exact
        merge (:func:`rshash.hamming.merge_topk`)."""
        q = np.asarray(q)
        parts, bases = [], []
        for start, seg in zip(self.starts, self.segments):
            if seg.n:
                parts.append(seg.codes.search(q, min(k, seg.n), threads))
                bases.append(start)
        return merge_topk(parts, bases, k, nq=len(q))

    # every row in memory: for small indexes (the CLI's tables, tests)
    @cached_property
    def _all(self) -> Rows:
        return Rows.concat([s.rows() for s in self.segments], self.bits // 8)

    # the columns of every row, in memory
    packed = property(lambda self: self._all.packed)
    image_id = property(lambda self: self._all.image_id)
    path = property(lambda self: self._all.path)
    label = property(lambda self: self._all.label)
    predicted_label = property(lambda self: self._all.predicted_label)


# --- reading ------------------------------------------------------------------------


def parts_dir(location) -> Path:
    """The folder of an index's segments."""
    location = Path(location)
    return location.with_name(location.name + ".parts")


def read_index(location: str | os.PathLike) -> Index:
    """Open an index: the manifest, then each segment memory-mapped (digests checked).

    A writer that publishes a new generation meanwhile may remove a segment of the
    one being opened: then the manifest is read again."""
    location = Path(location)
    for attempt in range(5):
        if not location.is_file():
            raise RshashError(f"index file not found: {location}")
        if _is_legacy(location):
            return _read_legacy(location)
        header = _read_manifest(location)
        try:
            return _open_segments(location, header)
        except FileNotFoundError:
            if attempt == 4:
                raise RshashError(
                    f"{location}: a segment in {parts_dir(location)} is missing"
                ) from None


def _read_manifest(location: Path) -> dict:
    """The verified manifest of an index (its digest checked first): one line for
    anything else (another kind of file, a damaged or edited manifest)."""
    verify(location, "index file")
    try:
        header = json.loads(location.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RshashError(f"{location}: not a readable index ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RshashError(f"{location}: not an rshash index")
    if header.get("version") != VERSION:
        raise RshashError(
            f"{location}: index version {header.get('version')!r}; this rshash reads "
            f"version {VERSION} (and old single-file .npz indexes): rebuild it with rshash index"
        )
    segments = header.get("segments")
    if not isinstance(segments, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and _SEGMENT_NAME.fullmatch(e["name"])
        and isinstance(e.get("n"), int)
        for e in segments
    ):
        raise RshashError(f"{location}: not a readable index (its segment list is malformed)")
    header.pop("digest", None)
    return header


def _is_legacy(location: Path) -> bool:
    """Whether the file is an old single-file (.npz, a zip) index."""
    with open(location, "rb") as fh:
        return fh.read(2) == b"PK"


def verified_manifest(location: Path) -> dict | None:
    """The verified manifest of the index at ``location`` (None for an old single-file
    index, whose digest is checked too), reading nothing else; the one-line RshashError
    of :func:`read_index` for a path that is not a readable index (missing, another
    kind of file, damaged)."""
    if not location.is_file():
        raise RshashError(f"index file not found: {location}")
    if _is_legacy(location):
        read_npz_header(location, "index file")
        return None
    return _read_manifest(location)


def _open_segments(location: Path, header: dict) -> Index:
    folder = parts_dir(location)
    segments = []
    for entry in header.pop("segments"):
        name = entry["name"]
        codes_file, meta_file = folder / f"{name}.codes", folder / f"{name}.meta"
        for f in (codes_file, meta_file):
            if not f.is_file():
                raise FileNotFoundError(f)
        codes = read_binary_index(codes_file, mmap=True)
        attrs, arrays = read_arrays(meta_file, "index segment")
        segments.append(Segment(name, codes, attrs, arrays))
    header["n"] = sum(s.n for s in segments)
    return Index(header, segments, location)


def _read_legacy(location: Path) -> Index:
    """A version-1 index (one .npz), read into memory."""
    header, arrays = read_npz(location, "index file")
    if header.get("format") != FORMAT:
        raise RshashError(f"{location}: not an rshash index (format {header.get('format')!r})")
    rows = Rows(
        arrays["packed"],
        arrays["image_id"],
        arrays["path"],
        arrays["label"],
        arrays.get("predicted_label"),
    )
    header = {**header, "version": VERSION, "generation": 0, "n": len(rows)}
    return Index(header, [Segment.from_rows("legacy", rows)] if len(rows) else [], location)


# --- writing ------------------------------------------------------------------------


@contextmanager
def writing(location: Path, create: bool = False):
    """The writers' lock of an index (one change at a time); leftovers of a writer
    that was killed (segments no verified manifest names, temporary files) are
    removed. Changing an index (``create`` false) needs a readable one: checked
    before anything is created or removed. A parts folder made here and left with
    no published index (a failed first build) is removed again."""
    location = Path(location)
    if not create:
        verified_manifest(location)
    folder = parts_dir(location)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a+")  # noqa: SIM115 (closed below, after the yield)
    except OSError as exc:
        if made and folder.is_dir() and not location.exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise RshashError(
            f"{location}: cannot write the index ({exc.strerror}: {exc.filename})"
        ) from None
    try:
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RshashError(
                    f"{location}: another rshash index command is changing it"
                ) from None
            try:
                _remove_unlisted(location)
                yield
            except OSError as exc:
                raise RshashError(
                    f"{location}: cannot write the index ({exc.strerror}: {exc.filename})"
                ) from None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except BaseException:
        if made and not location.exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _remove_unlisted(location: Path) -> None:
    """Delete segment files the current manifest does not name (a running server may
    still map them: on POSIX its mapping outlives the name). Only a manifest whose
    digest checks out says what to keep: with none (a first build, or a damaged
    manifest a build replaces), nothing is deleted before the new one is published."""
    try:
        header = verified_manifest(location)
    except RshashError:
        return
    keep = set() if header is None else {s["name"] for s in header["segments"]}
    if header is not None and (header.get("geo") or {}).get("quicklooks"):
        keep.add(header["geo"]["quicklooks"])
    for f in parts_dir(location).iterdir():
        if f.name.startswith(".") and ".tmp" in f.name:
            f.unlink(missing_ok=True)
        elif f.suffix in (".codes", ".meta") and f.stem not in keep:
            f.unlink(missing_ok=True)


def write_segments(location: Path, generation: int, rows: Rows) -> list[dict]:
    """New segment files of ``rows`` (SEGMENT_MAX rows each); their manifest entries."""
    folder, entries = parts_dir(location), []
    for start in range(0, len(rows), SEGMENT_MAX):
        part = rows.take(slice(start, start + SEGMENT_MAX))
        name = f"g{generation:06d}-{uuid.uuid4().hex[:12]}"
        BinaryIndex(8 * part.packed.shape[1]).add(part.packed).write(folder / f"{name}.codes")
        attrs, arrays = _segment_arrays(part)
        write_arrays(folder / f"{name}.meta", attrs, arrays)
        entries.append({"name": name, "n": len(part)})
    return entries


def publish(location: Path, header: dict, segments: list[dict]) -> None:
    """Replace the manifest (one rename): the new generation is now the index."""
    doc = {"digest": PLACEHOLDER}
    doc.update({k: v for k, v in header.items() if k not in ("digest", "n", "segments")})
    doc["segments"] = segments
    text = json.dumps(doc, indent=1)
    write_sealed(location, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    _remove_unlisted(location)


def create_index(location, header: dict, rows: Rows) -> Index:
    """Write a new index of ``rows`` at ``location`` (replacing any index there)."""
    location = Path(location)
    with writing(location, create=True):
        header = {**header, "generation": 1}
        publish(location, header, write_segments(location, 1, rows))
    return read_index(location)


def current_entries(location: Path, index: Index) -> list[dict]:
    """The manifest entries of an opened index (an old single-file index's rows are
    written as a segment first)."""
    if index.segments and index.segments[0].name == "legacy":
        return write_segments(location, index.generation + 1, index.segments[0].rows())
    return [{"name": s.name, "n": s.n} for s in index.segments]
