"""Search an archive: index any folder of images with a trained model, query it
with images, and grow or shrink the index while it is being searched.

An index ``PATH`` is a small sealed JSON file, the *manifest* of the current
generation, beside a folder ``PATH.parts`` of immutable *segments*:

- the manifest: ``format`` ("rshash-index"), ``version`` (2), ``generation``,
  ``backbone``, ``method``, ``bits``, ``model`` (the model file, absolute path, or
  null), ``model_sha256`` (or null), ``source`` (the first image folder or codes
  file), ``class_names`` (every class seen, in the order first seen; labels index
  it) and ``segments`` (``[{"name", "n"}]``, in index order);
- per segment ``NAME.codes``: its packed codes, a :class:`rshash.search.BinaryIndex`
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

import base64
import fcntl
import html
import io
import json
import os
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from numba import njit

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.data.fetch import file_sha256
from rshash.digest import PLACEHOLDER, read_arrays, read_npz, verify, write_arrays, write_sealed

FORMAT = "rshash-index"
VERSION = 2
SEGMENT_MAX = 1 << 20  # codes per segment: bounds a full pass's memory (serve's filters)
_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


# --- rows and segments --------------------------------------------------------------


@dataclass
class Rows:
    """Images to put in an index: their packed codes (n, bits/8) uint8, ids, paths
    ("" when unknown), labels (-1: unknown) and predicted labels (or None)."""

    packed: np.ndarray
    image_id: np.ndarray
    path: np.ndarray
    label: np.ndarray
    predicted_label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_id)

    def take(self, rows) -> Rows:
        pred = self.predicted_label
        return Rows(
            self.packed[rows],
            self.image_id[rows],
            self.path[rows],
            self.label[rows],
            None if pred is None else pred[rows],
        )


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

    @classmethod
    def from_rows(cls, name: str, rows: Rows) -> Segment:
        """An in-memory segment (nothing written)."""
        from rshash.search import BinaryIndex

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

    def code_of(self, row: int) -> np.ndarray:
        """The packed code of a global row, (1, bits/8) uint8."""
        seg, r = self.locate(row)
        return seg.codes.reconstruct_n(r, 1)

    def search(self, q, k: int, threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes per packed query over every segment, faiss's order:
        (D int32, I int64 global rows), by distance then row, padded past len(self)."""
        parts = []
        for start, seg in zip(self.starts, self.segments):
            if seg.n:
                d, i = seg.codes.search(q, min(k, seg.n), threads)
                parts.append((d, np.where(i >= 0, i + start, -1)))
        nq = len(np.asarray(q))
        dist = np.full((nq, k), np.iinfo(np.int32).max, np.int32)
        idx = np.full((nq, k), -1, np.int64)
        if parts:
            d = np.concatenate([p[0] for p in parts], axis=1)
            i = np.concatenate([p[1] for p in parts], axis=1)
            for qi in range(nq):
                order = np.lexsort((i[qi], d[qi]))[:k]
                dist[qi, : len(order)], idx[qi, : len(order)] = d[qi, order], i[qi, order]
        return dist, idx

    # every row in memory: for small indexes (the CLI's tables, tests)
    @cached_property
    def _all(self) -> Rows:
        parts = [s.rows() for s in self.segments]
        nbytes = self.bits // 8
        has_pred = bool(parts) and all(p.predicted_label is not None for p in parts)
        return Rows(
            np.concatenate([p.packed for p in parts]) if parts else np.zeros((0, nbytes), "u1"),
            np.concatenate([p.image_id for p in parts]) if parts else np.array([], str),
            np.concatenate([p.path for p in parts]) if parts else np.array([], str),
            np.concatenate([p.label for p in parts]) if parts else np.array([], np.int64),
            np.concatenate([p.predicted_label for p in parts]) if has_pred else None,
        )

    @property
    def packed(self) -> np.ndarray:
        return self._all.packed

    @property
    def image_id(self) -> np.ndarray:
        return self._all.image_id

    @property
    def path(self) -> np.ndarray:
        return self._all.path

    @property
    def label(self) -> np.ndarray:
        return self._all.label

    @property
    def predicted_label(self) -> np.ndarray | None:
        return self._all.predicted_label


@dataclass
class Hit:
    rank: int
    image_id: str
    path: str
    distance: int
    label: int
    predicted_label: int | None


@dataclass
class Result:
    query: str
    predicted_label: int | None
    hits: list[Hit] = field(default_factory=list)


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
        with open(location, "rb") as fh:
            if fh.read(2) == b"PK":
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
    header.pop("digest", None)
    return header


def _open_segments(location: Path, header: dict) -> Index:
    from rshash.search import read_binary_index

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
def _writing(location: Path):
    """The writers' lock of an index (one change at a time); leftovers of a writer
    that was killed (segments no manifest names, temporary files) are removed."""
    folder = parts_dir(location)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RshashError(f"{location}: another rshash index command is changing it") from None
        try:
            _remove_unlisted(location)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_unlisted(location: Path) -> None:
    """Delete segment files the current manifest does not name (a running server may
    still map them: on POSIX its mapping outlives the name)."""
    keep = set()
    if location.is_file():
        with open(location, "rb") as fh:
            legacy = fh.read(2) == b"PK"
        if not legacy:
            keep = {s["name"] for s in json.loads(location.read_text(encoding="utf-8"))["segments"]}
    for f in parts_dir(location).iterdir():
        if f.name.startswith(".") and ".tmp" in f.name:
            f.unlink(missing_ok=True)
        elif f.suffix in (".codes", ".meta") and f.stem not in keep:
            f.unlink(missing_ok=True)


def _write_segments(location: Path, generation: int, rows: Rows) -> list[dict]:
    """New segment files of ``rows`` (SEGMENT_MAX rows each); their manifest entries."""
    from rshash.search import BinaryIndex

    folder, entries = parts_dir(location), []
    for start in range(0, len(rows), SEGMENT_MAX):
        part = rows.take(slice(start, start + SEGMENT_MAX))
        name = f"g{generation:06d}-{uuid.uuid4().hex[:12]}"
        BinaryIndex(8 * part.packed.shape[1]).add(part.packed).write(folder / f"{name}.codes")
        attrs, arrays = _segment_arrays(part)
        write_arrays(folder / f"{name}.meta", attrs, arrays)
        entries.append({"name": name, "n": len(part)})
    return entries


def _publish(location: Path, header: dict, segments: list[dict]) -> None:
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
    with _writing(location):
        header = {**header, "generation": 1}
        _publish(location, header, _write_segments(location, 1, rows))
    return read_index(location)


def _current_entries(location: Path, index: Index) -> list[dict]:
    """The manifest entries of an opened index (an old single-file index's rows are
    written as a segment first)."""
    if index.segments and index.segments[0].name == "legacy":
        return _write_segments(location, index.generation + 1, index.segments[0].rows())
    return [{"name": s.name, "n": s.n} for s in index.segments]


def scan_images(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(image_id, path, label, class_names) of a folder of images.

    A folder of class sub-folders is labelled (rshash.data.manifest.read_dataset);
    a flat folder of images is not (label -1, ids are file names). Both follow
    the manifest's rules (rshash.data.manifest.scan_one): system files, other
    files and dangling links are left out (listed on stderr); a folder mixing
    images and sub-folders is an error.
    """
    from rshash.data.manifest import read_dataset, scan_one, shown

    root = Path(folder)
    if not root.is_dir():
        raise RshashError(f"image folder {root} does not exist")
    top = scan_one(root)
    if top.folders and top.images:
        raise RshashError(
            f"{root}: mixes image files and sub-folders; use either a flat "
            f"folder of images or one sub-folder per class"
        )
    if top.folders:
        df, ignored = read_dataset(root)
        names = list(df.drop_duplicates("label").sort_values("label").class_name)
        image_id, paths, label = (
            df.image_id.to_numpy(str),
            df.path.to_numpy(str),
            df.label.to_numpy(np.int64),
        )
    else:
        if top.bad_names:
            raise RshashError(
                f"{root}: {len(top.bad_names)} name(s) not valid UTF-8 (rename "
                "them): " + ", ".join(shown(root / n) for n in top.bad_names)
            )
        if not top.images:
            raise RshashError(f"{root}: no images")
        ignored = [{"path": n, "reason": r} for n, r in top.ignored]
        names = [n for n, _, _ in top.images]
        image_id, paths = np.array(names), np.array([str(root / n) for n in names])
        label, names = np.full(len(names), -1, np.int64), []
    for item in ignored:
        print(f"left out {root / item['path']}: {item['reason']}", file=sys.stderr)
    return image_id, paths, label, names


def _load_model(model_path, backbone: str | None):
    """(method, header with a backbone) of a model file; ``backbone`` fills in
    for a model that does not record one and must agree with one that does."""
    from rshash.methods import method_info
    from rshash.methods.base import load_model

    method, header = load_model(model_path)
    recorded = header.get("backbone")
    if recorded and backbone and recorded != backbone:
        raise RshashError(f"model {model_path} was trained on {recorded} features, not {backbone}")
    header["backbone"] = recorded or backbone
    if not header["backbone"]:
        raise RshashError(f"model {model_path} does not record its backbone: pass --backbone")
    inputs = method_info(header["method"]).inputs
    if inputs != ("features",) or not header["bits"]:
        raise RshashError(
            f"model {model_path}: method {header['method']!r} reads "
            f"{', '.join(inputs)} with {header['bits']} bits; an index needs a "
            f"binary method on pooled features"
        )
    return method, header


class Encoder:
    """A model and its backbone loaded once: image files -> (packed codes, predicted
    labels or None). Imports torch when first used."""

    def __init__(self, model_path, backbone: str | None = None, threads: int = 1):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise RshashError(f"model file not found: {self.model_path}")
        self.method, self.header = _load_model(self.model_path, backbone)
        self.threads = threads
        self._embed = None

    def check(self, index: Index) -> Encoder:
        _check_model(index, self.header, self.model_path)
        return self

    def __call__(self, paths, batch_size: int = 32):
        if self._embed is None:
            from rshash.features import embedder

            self._embed = embedder(
                self.header["backbone"],
                self.threads,
                batch_size,
                source=self.header.get("backbone_source"),  # a timm / OpenCLIP entry
            )
        enc = self.method.encode(self._embed(list(paths)))
        packed = np.packbits(np.asarray(enc.bits, dtype=bool), axis=1)
        pred = enc.predicted_label
        return packed, None if pred is None else np.asarray(pred, np.int64)


def build_index(model_path, images, out, backbone: str | None = None, threads: int = 1) -> Index:
    """Encode every image of a folder with a model and its backbone; write the index."""
    model_path = Path(model_path).resolve()
    encoder = Encoder(model_path, backbone, threads)
    image_id, paths, label, class_names = scan_images(images)
    packed, predicted = encoder(paths)
    header = _header(encoder.header, model_path, str(Path(images).resolve()), class_names)
    return create_index(out, header, Rows(packed, image_id, paths, label, predicted))


def _header(model_header: dict, model_path: Path | None, source: str, class_names) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "backbone": model_header["backbone"],
        "method": model_header["method"],
        "bits": int(model_header["bits"]),
        "model": None if model_path is None else str(model_path),
        "model_sha256": None if model_path is None else file_sha256(model_path),
        "source": source,
        "class_names": list(class_names),
    }


def index_from_codes(codes_path, out, model_path=None) -> Index:
    """An index of the images of a codes file (each image once, rotated copies
    left out), optionally recording the model that wrote it."""
    from rshash.codes import ROTATED_ROLE, read_codes

    codes = read_codes(codes_path)
    if not codes.bits:
        raise RshashError(f"{codes_path}: real-valued codes (0 bits) cannot be indexed")
    keep = codes.role != ROTATED_ROLE
    _, first = np.unique(codes.image_id[keep], return_index=True)
    rows = np.flatnonzero(keep)[np.sort(first)]
    meta = {
        "method": codes.metadata.get("rshash.method"),
        "backbone": codes.metadata.get("rshash.backbone"),
        "bits": codes.bits,
    }
    if model_path is not None:
        model_path = Path(model_path).resolve()
        _, model_header = _load_model(model_path, None)
        for key in ("method", "backbone", "bits"):
            if model_header[key] != meta[key]:
                raise RshashError(
                    f"model {model_path} ({key} {model_header[key]}) did not "
                    f"write codes {codes_path} ({key} {meta[key]})"
                )
    pred = codes.predicted_label
    data = Rows(
        codes.packed[rows],
        codes.image_id[rows].astype(str),
        np.full(len(rows), ""),
        codes.label[rows].astype(np.int64),
        None if pred is None else pred[rows].astype(np.int64),
    )
    return create_index(out, _header(meta, model_path, str(Path(codes_path).resolve()), []), data)


def append_images(
    location, images, model_path=None, backbone: str | None = None, threads: int = 1
) -> tuple[Index, int, int]:
    """Encode the images of a folder that the index does not hold yet (by image id)
    and add them as a new segment: (the new index, images added, images already
    there). Classes the index has not seen are added to its class names."""
    location = Path(location)
    with _writing(location):
        index = read_index(location)
        recorded = index.header.get("model")
        if model_path is None and recorded is None:
            raise RshashError("the index records no model (built from codes): pass --model")
        encoder = Encoder(Path(model_path or recorded), backbone, threads).check(index)
        image_id, paths, label, class_names = scan_images(images)
        new = np.array([index.find(str(i)) < 0 for i in image_id], dtype=bool)
        names = list(index.header.get("class_names") or [])
        for name in class_names:
            if name not in names:
                names.append(name)
        remap = np.array([names.index(n) for n in class_names] + [-1], np.int64)
        label = remap[label]  # -1 stays -1 (the last entry)
        if new.any():
            packed, predicted = encoder(paths[new])
            rows = Rows(packed, image_id[new], paths[new], label[new], predicted)
            generation = index.generation + 1
            entries = _current_entries(location, index)
            entries += _write_segments(location, generation, rows)
            header = {**index.header, "generation": generation, "class_names": names}
            _publish(location, header, entries)
    return read_index(location), int(new.sum()), int((~new).sum())


def remove_images(location, image_ids: list[str]) -> tuple[Index, int]:
    """Remove images by id: the segments that hold them are rewritten without them and
    published as a new generation. An id the index does not hold is an error (and
    nothing changes). Returns (the new index, images removed)."""
    location = Path(location)
    with _writing(location):
        index = read_index(location)
        rows = {i: index.find(i) for i in dict.fromkeys(image_ids)}
        missing = [i for i, r in rows.items() if r < 0]
        if missing:
            raise RshashError(
                f"{location}: no image with id {', '.join(map(repr, missing[:5]))}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                + "; nothing removed"
            )
        drop = np.array(sorted(rows.values()), np.int64)
        generation = index.generation + 1
        entries = []
        for start, seg in zip(index.starts, index.segments):
            local = drop[(drop >= start) & (drop < start + seg.n)] - start
            if not len(local) and seg.name != "legacy":
                entries.append({"name": seg.name, "n": seg.n})
                continue
            kept = np.setdiff1d(np.arange(seg.n), local)
            if len(kept):
                entries += _write_segments(location, generation, seg.rows().take(kept))
        _publish(location, {**index.header, "generation": generation}, entries)
    return read_index(location), len(drop)


# --- searching from the command line -------------------------------------------------


def search_images(
    index: Index,
    images: list[str],
    top: int = 20,
    model_path=None,
    backbone: str | None = None,
    threads: int = 1,
) -> list[Result]:
    """The ``top`` nearest index images to each query image, by Hamming
    distance then index order. The model (the index's own unless given) and
    backbone are loaded once for all queries; a model other than the one the
    index was built with is an error."""
    recorded = index.header.get("model")
    if model_path is None and recorded is None:
        raise RshashError("the index records no model (built from codes): pass --model")
    model_path = Path(model_path or recorded)
    if not model_path.is_file():
        raise RshashError(f"model file not found: {model_path}")
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise RshashError(f"query image(s) not found: {', '.join(missing[:5])}")
    encoder = Encoder(model_path, backbone, threads).check(index)
    packed, predicted = encoder(images)
    dist, idx = index.search(packed, max(1, min(top, len(index))), threads)
    results = []
    for q, query in enumerate(images):
        hits = [
            Hit(
                r + 1,
                index.image_id_of(j),
                index.path_of(j),
                int(d),
                index.label_of(j),
                index.predicted_of(j),
            )
            for r, (j, d) in enumerate(zip(idx[q], dist[q]))
            if j >= 0
        ]
        results.append(Result(query, None if predicted is None else int(predicted[q]), hits))
    return results


def _check_model(index: Index, header: dict, model_path: Path) -> None:
    """The query codes must come from the model (and backbone) that built the index."""
    for key in ("backbone", "method", "bits"):
        if header[key] != index.header[key]:
            raise RshashError(
                f"model {model_path} uses {key} {header[key]!r} but the index "
                f"was built with {key} {index.header[key]!r}"
            )
    sha = index.header.get("model_sha256")
    if sha and file_sha256(model_path) != sha:
        raise RshashError(
            f"model {model_path} is not the model the index was built with "
            f"({index.header['model']}): its codes are not comparable"
        )


def format_results(index: Index, results: list[Result]) -> str:
    """Plain-text tables: rank, distance, image id, class (and predicted class)."""
    lines = []
    with_pred = any(s.predicted_label is not None for s in index.segments)
    for res in results:
        title = f"query {res.query}"
        if res.predicted_label is not None:
            title += f"  (predicted class {index.class_name(res.predicted_label)})"
        lines.append(title)
        lines.append(
            f"{'rank':>4}  {'distance':>8}  {'class':<20}  "
            + (f"{'predicted':<20}  " if with_pred else "")
            + "image_id"
        )
        for h in res.hits:
            lines.append(
                f"{h.rank:>4}  {h.distance:>8}  {index.class_name(h.label):<20}  "
                + (f"{index.class_name(h.predicted_label):<20}  " if with_pred else "")
                + h.image_id
            )
        lines.append("")
    return "\n".join(lines)


def thumbnail_jpeg(path: str, size: int = 96) -> bytes:
    """A small JPEG copy of an image file, decoded by the pipeline's decoder."""
    from rshash.data.images import decode

    img = decode(path)  # errors name the file
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _thumbnail(path: str, size: int = 96) -> str:
    """An inline JPEG data URL of a small copy of the image ("" if it has no path)."""
    if not path:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(path, size)).decode()


def write_html(index: Index, results: list[Result], out: str | os.PathLike) -> None:
    """A page with each query and its results as inline thumbnails."""

    def cell(src, caption):
        img = f'<img src="{src}" alt="">' if src else '<div class="none">no image</div>'
        return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"

    parts = [
        "<!doctype html><meta charset='utf-8'><title>rshash search</title><style>"
        "figure{display:inline-block;margin:4px;width:110px;font:11px sans-serif;"
        "vertical-align:top}figure img{width:96px}.q{border-right:2px solid #333;"
        "padding-right:8px}</style>"
    ]
    for res in results:
        parts.append(f"<h3>{html.escape(res.query)}</h3><div>")
        parts.append(
            cell(_thumbnail(res.query), "query").replace("<figure>", '<figure class="q">', 1)
        )
        for h in res.hits:
            parts.append(
                cell(
                    _thumbnail(h.path),
                    f"{h.rank}. d={h.distance} {index.class_name(h.label)} {h.image_id}",
                )
            )
        parts.append("</div>")

    def write(tmp):
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")

    atomic_write(out, write)
