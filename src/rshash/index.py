"""Search an archive: index any folder of images with a trained model, then
query it with images.

An index is one ``.npz`` (numpy arrays, loads without pickle or torch):

- ``header``: JSON with ``format`` ("rshash-index"), ``version``, ``backbone``,
  ``method``, ``bits``, ``model`` (the model file, absolute path, or null),
  ``model_sha256`` (or null), ``source`` (the image folder or codes file) and
  ``class_names`` (the class sub-folders, empty for a flat folder);
- ``packed`` uint8 [N, bits/8]: the codes, in index order (the tie order);
- ``image_id`` and ``path`` (str [N]); ``label`` int64 [N] (-1: unknown);
- ``predicted_label`` int64 [N], only for methods with a class head.

Building from images and searching with images need the backbone (torch);
reading an index and ranking need only numpy and numba.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.data.fetch import file_sha256
from rshash.digest import read_npz, write_npz

FORMAT = "rshash-index"
VERSION = 1


@dataclass
class Index:
    """An index in memory."""

    header: dict
    packed: np.ndarray
    image_id: np.ndarray
    path: np.ndarray
    label: np.ndarray
    predicted_label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_id)

    def class_name(self, label: int) -> str:
        """The class of a label: its folder name when known, else the number."""
        names = self.header.get("class_names") or []
        if label < 0:
            return "-"
        return names[label] if label < len(names) else str(label)


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


def scan_images(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(image_id, path, label, class_names) of a folder of images.

    A folder of class sub-folders is labelled (rshash.data.manifest.read_dataset);
    a flat folder of images is not (label -1, ids are file names). Both follow
    the manifest's rules (rshash.data.manifest.scan_one): system files, other
    files and dangling links are left out (listed on stderr); a folder mixing
    images and sub-folders is an error.
    """
    import sys

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


def _encode(method, header, paths, threads: int, batch_size: int = 32):
    """Packed codes and predicted labels (or None) of image files."""
    from rshash.features import embed

    source = header.get("backbone_source")  # a timm / OpenCLIP entry (features attrs)
    enc = method.encode(embed(list(paths), header["backbone"], threads, batch_size, source=source))
    packed = np.packbits(np.asarray(enc.bits, dtype=bool), axis=1)
    predicted = None if enc.predicted_label is None else np.asarray(enc.predicted_label, np.int64)
    return packed, predicted


def write_index(index: Index, out: str | os.PathLike) -> None:
    """Save an index atomically (nothing left behind on failure)."""
    arrays = {
        "packed": index.packed,
        "image_id": index.image_id.astype(str),
        "path": index.path.astype(str),
        "label": index.label,
    }
    if index.predicted_label is not None:
        arrays["predicted_label"] = index.predicted_label
    write_npz(out, index.header, arrays)


def build_index(model_path, images, out, backbone: str | None = None, threads: int = 1) -> Index:
    """Encode every image of a folder with a model and its backbone; write the index."""
    model_path = Path(model_path).resolve()
    method, header = _load_model(model_path, backbone)
    image_id, paths, label, class_names = scan_images(images)
    packed, predicted = _encode(method, header, paths, threads)
    index = Index(
        header=_header(header, model_path, str(Path(images).resolve()), class_names),
        packed=packed,
        image_id=image_id,
        path=paths,
        label=label,
        predicted_label=predicted,
    )
    write_index(index, out)
    return index


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
    index = Index(
        header=_header(meta, model_path, str(Path(codes_path).resolve()), []),
        packed=codes.packed[rows],
        image_id=codes.image_id[rows].astype(str),
        path=np.full(len(rows), ""),
        label=codes.label[rows].astype(np.int64),
        predicted_label=(
            None if codes.predicted_label is None else codes.predicted_label[rows].astype(np.int64)
        ),
    )
    write_index(index, out)
    return index


def read_index(path: str | os.PathLike) -> Index:
    header, arrays = read_npz(path, "index file")
    if header.get("format") != FORMAT:
        raise RshashError(f"{path}: not an rshash index (format {header.get('format')!r})")
    return Index(
        header=header,
        packed=arrays["packed"],
        image_id=arrays["image_id"],
        path=arrays["path"],
        label=arrays["label"],
        predicted_label=arrays.get("predicted_label"),
    )


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
    from rshash.search import BinaryIndex

    recorded = index.header.get("model")
    if model_path is None and recorded is None:
        raise RshashError("the index records no model (built from codes): pass --model")
    model_path = Path(model_path or recorded)
    if not model_path.is_file():
        raise RshashError(f"model file not found: {model_path}")
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise RshashError(f"query image(s) not found: {', '.join(missing[:5])}")
    method, header = _load_model(model_path, backbone)
    _check_model(index, header, model_path)
    packed, predicted = _encode(method, header, images, threads)
    database = BinaryIndex(8 * index.packed.shape[1]).add(index.packed)
    dist, idx = database.search(packed, min(top, len(database)), threads)
    results = []
    for q, query in enumerate(images):
        hits = [
            Hit(
                r + 1,
                str(index.image_id[j]),
                str(index.path[j]),
                int(d),
                int(index.label[j]),
                None if index.predicted_label is None else int(index.predicted_label[j]),
            )
            for r, (j, d) in enumerate(zip(idx[q], dist[q]))
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
    with_pred = index.predicted_label is not None
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


def _thumbnail(path: str, size: int = 96) -> str:
    """An inline JPEG data URL of a small copy of the image ("" if it has no path)."""
    if not path:
        return ""
    from rshash.data.images import decode

    img = decode(path)  # errors name the file
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


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
