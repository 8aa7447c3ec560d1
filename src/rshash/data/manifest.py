"""Manifests: one row per image of a class-folder dataset.

``manifests/{dataset}.parquet``: image_id (``class/file-stem``), path, label
(int, classes in sorted folder order), class_name; sorted by class then
file name, so the same folder always gives the same manifest.

The manifest step also decodes every image (:func:`check_images`), so an
unreadable file stops the workflow before the heavy extraction job, or,
with ``skip_unreadable``, is left out and listed in the log and in
``{manifest}.report.json`` (:func:`write_report`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.digest import read_parquet, write_parquet
from rshash.data.datasets import IMAGE_EXTENSIONS
from rshash.data.images import check_image

COLUMNS = ["image_id", "path", "label", "class_name"]


def scan_folder(root: str | Path, expected_classes: int | None = None,
                expected_images: int | None = None,
                expected: dict[str, int] | None = None) -> pd.DataFrame:
    """List ``root/<class>/<image>``; every problem is an error naming the path.

    ``expected`` (class folder -> image count, for the known datasets) is
    checked before anything else, so a partly placed dataset gets one message
    listing every absent class folder and every short one.
    """
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
    files = {folder.name: sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                                 key=lambda p: p.name) for folder in classes}
    if expected is not None:
        problems = count_problems({name: len(f) for name, f in files.items()}, expected)
        if problems:
            raise RshashError(f"{root}: the images do not match the dataset's definition: "
                              + "; ".join(problems))
    if not classes:
        raise RshashError(f"{root}: no class folders")
    rows = []
    for label, folder in enumerate(classes):
        other = [p for p in files[folder.name]
                 if p.is_dir() or p.suffix.lower() not in IMAGE_EXTENSIONS]
        if other:
            raise RshashError(f"{folder}: not an image file ({', '.join(IMAGE_EXTENSIONS)}): "
                              + ", ".join(p.name for p in other[:5]))
        if not files[folder.name]:
            raise RshashError(f"{folder}: empty class folder")
        for p in files[folder.name]:
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


def check_images(df: pd.DataFrame, skip_unreadable: bool = False
                 ) -> tuple[pd.DataFrame, list[dict]]:
    """Decode every image; return (the readable rows, [{image_id, path, reason}]).

    Without ``skip_unreadable`` the first unreadable file is an RshashError
    naming it (and how many more there are). With it, each skipped file is
    printed to stderr (the job's log); a class left with no image is still
    an error, as is a dataset with no readable image at all.
    """
    skipped = []
    for image_id, path in zip(df.image_id, df.path):
        try:
            check_image(path)
        except RshashError as err:
            skipped.append({"image_id": image_id, "path": str(path), "reason": str(err)})
    if skipped and not skip_unreadable:
        more = f" (and {len(skipped) - 1} more unreadable file(s))" if len(skipped) > 1 else ""
        raise RshashError(f"{skipped[0]['reason']}{more}; fix or remove the file(s), or set "
                          "skip_unreadable: true in config.yaml to leave them out")
    for item in skipped:
        print(f"skipped unreadable image: {item['reason']}", file=sys.stderr)
    kept = df[~df.image_id.isin({s["image_id"] for s in skipped})].reset_index(drop=True)
    emptied = sorted(set(df.class_name) - set(kept.class_name))
    if emptied:
        raise RshashError(f"class folder(s) {', '.join(emptied)} of "
                          f"{Path(df.path.iloc[0]).parent.parent}: no readable image left "
                          "after skipping unreadable files")
    return kept, skipped


def report_path(manifest_path: str | Path) -> Path:
    """``{manifest}.report.json``: the side file listing what the manifest step skipped."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(manifest_path.name.removesuffix(".parquet") + ".report.json")


def write_report(path: str | Path, n_found: int, kept: pd.DataFrame,
                 skipped: list[dict]) -> None:
    """Write the manifest report: files found, images kept, and every skipped file."""
    report = {"n_files": n_found, "n_images": len(kept), "n_skipped": len(skipped),
              "skipped": skipped}

    def write(tmp):
        Path(tmp).write_text(json.dumps(report, indent=1) + "\n")

    atomic_write(path, write)


def count_problems(found: dict[str, int], expected: dict[str, int]) -> list[str]:
    """What differs between the files found per class folder and the expected counts:
    absent class folders, folders with fewer (or more) files and by how many, and
    folders the dataset does not have. Empty when they match."""
    problems = []
    absent = [name for name in expected if name not in found]
    if absent:
        problems.append(f"{len(absent)} of {len(expected)} class folders are absent: "
                        + ", ".join(f"{name} ({expected[name]} images)" for name in absent))
    short = [name for name in expected if name in found and found[name] < expected[name]]
    if short:
        problems.append(f"{len(short)} class folders have fewer images than expected: "
                        + ", ".join(f"{name} {found[name]} of {expected[name]} "
                                    f"({expected[name] - found[name]} missing)"
                                    for name in short))
    extra = [name for name in expected if name in found and found[name] > expected[name]]
    if extra:
        problems.append(f"{len(extra)} class folders have more files than expected: "
                        + ", ".join(f"{name} {found[name]} of {expected[name]}"
                                    for name in extra))
    unknown = sorted(set(found) - set(expected))
    if unknown:
        problems.append(f"{len(unknown)} folders are not classes of this dataset: "
                        + ", ".join(unknown))
    return problems


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    df = df[COLUMNS].astype({"label": "int64"})
    write_parquet(path, pa.Table.from_pandas(df, preserve_index=False))


def read_manifest(path: str | Path) -> pd.DataFrame:
    df = read_parquet(path, "manifest").to_pandas()
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RshashError(f"{path}: not an rshash manifest (no column {', '.join(missing)})")
    return df
