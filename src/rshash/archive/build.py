"""Build, grow and shrink an archive: an index of a folder of images (encoded with a
trained model) or of a codes file, images appended as a new segment, images removed
by rewriting the segments that held them. Each change is published atomically
(:mod:`rshash.archive.store`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.archive.encoder import Encoder, load_model, scan_images
from rshash.archive.store import (
    FORMAT,
    VERSION,
    Index,
    Rows,
    create_index,
    current_entries,
    publish,
    read_index,
    write_segments,
    writing,
)
from rshash.digest import file_sha256


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
        _, model_header = load_model(model_path, None)
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
    with writing(location):
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
            entries = current_entries(location, index)
            entries += write_segments(location, generation, rows)
            header = {**index.header, "generation": generation, "class_names": names}
            publish(location, header, entries)
    return read_index(location), int(new.sum()), int((~new).sum())


def remove_images(location, image_ids: list[str]) -> tuple[Index, int]:
    """Remove images by id: the segments that hold them are rewritten without them and
    published as a new generation. An id the index does not hold is an error (and
    nothing changes). Returns (the new index, images removed)."""
    location = Path(location)
    with writing(location):
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
                entries += write_segments(location, generation, seg.rows().take(kept))
        publish(location, {**index.header, "generation": generation}, entries)
    return read_index(location), len(drop)
