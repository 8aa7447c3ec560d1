"""What turns images into an archive's codes: folder scanning, and the encoder (a
trained model and its backbone, loaded once; imports torch when first used),
checked against the model that built an index."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.archive.store import Index
from rshash.digest import file_sha256


def scan_images(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(image_id, path, label, class_names) of a folder of images.

    A folder of class sub-folders is labelled (rshash.data.manifest.read_dataset);
    a flat folder of images is not (label -1, ids are file names). Both follow
    the manifest's rules (rshash.data.manifest.scan_one): system files, other
    files and dangling links are left out (listed on stderr); a folder mixing
    images and sub-folders is an error.
    """
    from rshash.data.manifest import read_dataset, scan_one, shown

    root = Path(folder).absolute()  # paths stored absolute: a server may run elsewhere
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


def load_model(model_path, backbone: str | None):
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
    labels or None). Imports torch when first used. ``sha256`` is the digest of the
    model file as it was loaded: what :meth:`check` holds against an index (the file
    may be replaced later; the model in memory is not)."""

    def __init__(self, model_path, backbone: str | None = None, threads: int = 1):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise RshashError(f"model file not found: {self.model_path}")
        self.sha256 = file_sha256(self.model_path)
        self.method, self.header = load_model(self.model_path, backbone)
        if file_sha256(self.model_path) != self.sha256:
            raise RshashError(f"model {self.model_path} changed while it was being loaded")
        self.threads = threads
        self._embed = None

    def current_for(self, index: Index) -> bool:
        """Whether the model in memory is the one ``index`` records (when it records one)."""
        sha = index.header.get("model_sha256")
        return not sha or sha == self.sha256

    def check(self, index: Index) -> Encoder:
        check_model(index, self.header, self.model_path, self.sha256)
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


def check_model(index: Index, header: dict, model_path: Path, sha256: str | None = None) -> None:
    """The query codes must come from the model (and backbone) that built the index:
    the model file's digest (``sha256``: of the model as loaded; else the file's now)
    must be the one the index records."""
    for key in ("backbone", "method", "bits"):
        if header[key] != index.header[key]:
            raise RshashError(
                f"model {model_path} uses {key} {header[key]!r} but the index "
                f"was built with {key} {index.header[key]!r}"
            )
    sha = index.header.get("model_sha256")
    if sha and (sha256 or file_sha256(model_path)) != sha:
        raise RshashError(
            f"model {model_path} is not the model the index was built with "
            f"({index.header['model']}): its codes are not comparable"
        )
