"""Manifests: one row per image of a class-folder dataset.

``manifests/{dataset}.parquet``: image_id (``class/file-stem``), path, label
(int, classes in sorted folder order), class_name; sorted by class then
file name, so the same folder always gives the same manifest.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rshash import RshashError
from rshash.codes import atomic_write
from rshash.data.datasets import IMAGE_EXTENSIONS

COLUMNS = ["image_id", "path", "label", "class_name"]


def scan_folder(root: str | Path, expected_classes: int | None = None,
                expected_images: int | None = None) -> pd.DataFrame:
    """List ``root/<class>/<image>``; every problem is an error naming the path."""
    root = Path(root)
    if not root.is_dir():
        raise RshashError(f"image folder {root} does not exist")
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    stray = [p for p in entries if not p.is_dir() and not p.name.startswith(".")]
    if stray:
        raise RshashError(f"{root}: files outside class folders: "
                          + ", ".join(p.name for p in stray[:5])
                          + (" ..." if len(stray) > 5 else ""))
    classes = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not classes:
        raise RshashError(f"{root}: no class folders")
    rows = []
    for label, folder in enumerate(classes):
        files = sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                       key=lambda p: p.name)
        other = [p for p in files if p.is_dir() or p.suffix.lower() not in IMAGE_EXTENSIONS]
        if other:
            raise RshashError(f"{folder}: not an image file ({', '.join(IMAGE_EXTENSIONS)}): "
                              + ", ".join(p.name for p in other[:5]))
        if not files:
            raise RshashError(f"{folder}: empty class folder")
        for p in files:
            rows.append((f"{folder.name}/{p.stem}", str(p), label, folder.name))
    df = pd.DataFrame(rows, columns=COLUMNS)
    dup = df.image_id[df.image_id.duplicated()]
    if len(dup):
        raise RshashError(f"{root}: duplicate image ids (same file name with different "
                          f"extensions): {', '.join(dup.iloc[:5])}")
    if expected_classes is not None and len(classes) != expected_classes:
        raise RshashError(f"{root}: expected {expected_classes} class folders, found "
                          f"{len(classes)}")
    if expected_images is not None and len(df) != expected_images:
        counts = df.class_name.value_counts().sort_index()
        raise RshashError(f"{root}: expected {expected_images} images, found {len(df)} "
                          f"(per class: {dict(counts)})")
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    df = df[COLUMNS].astype({"label": "int64"})
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise RshashError(f"manifest not found: {path}")
    return pd.read_parquet(path)
