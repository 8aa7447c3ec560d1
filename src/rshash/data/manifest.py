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

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.data.datasets import IMAGE_EXTENSIONS
from rshash.data.images import check_image
from rshash.digest import read_parquet, write_parquet

COLUMNS = ["image_id", "path", "label", "class_name"]


# Files people and their tools leave in a dataset folder; left out of the manifest (and of
# the folder listing that tracks it) and named in the manifest report with the reason.
SYSTEM_FILES = {
    ".ds_store": "macOS Finder file",
    "thumbs.db": "Windows thumbnail cache",
    "ehthumbs.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
}
SYSTEM_FOLDERS = {"__macosx": "macOS archive metadata folder"}
_IMAGE_EXTENSIONS = frozenset(IMAGE_EXTENSIONS)


@dataclass
class FolderScan:
    """One ``os.scandir`` pass over a folder, each entry sorted into what it is.

    ``images``: (name, size, mtime_ns) of image files; ``identity``: each image's
    (st_ino, st_ctime_ns), what a rename or a rewrite with its old mtime restored
    cannot keep (:meth:`DatasetScan.listing`); ``folders``: names of sub-folders;
    ``ignored``: (name, reason) of what a dataset may hold but is no image (system
    files, other files, dangling links); ``bad_names``: names that are not valid
    UTF-8 (os.scandir gives them surrogate-escaped).
    """

    path: Path
    images: list[tuple[str, int, int]] = field(default_factory=list)
    identity: dict[str, tuple[int, int]] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    bad_names: list[str] = field(default_factory=list)


def shown(path: str | Path) -> str:
    """A path printable in one line whatever its bytes (non-UTF-8 bytes as \\xNN)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ignore_reason(name: str, is_dir: bool) -> str | None:
    """Why a file or folder of this name is left out of a dataset, or None."""
    lower = name.lower()
    if is_dir:
        if lower in SYSTEM_FOLDERS:
            return SYSTEM_FOLDERS[lower]
        return "hidden folder" if name.startswith(".") else None
    if lower in SYSTEM_FILES:
        return SYSTEM_FILES[lower]
    if name.startswith("._"):
        return "macOS AppleDouble file"
    if name.startswith("."):
        return "hidden file"
    dot = lower.rfind(".")
    if dot <= 0 or lower[dot:] not in _IMAGE_EXTENSIONS:
        return f"not an image file ({', '.join(IMAGE_EXTENSIONS)})"
    return None


def scan_one(path: str | Path) -> FolderScan:
    """Sort the entries of one folder (no recursion), by name."""
    path = Path(path)
    scan = FolderScan(path)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as err:
        raise RshashError(f"cannot list {shown(path)}: {err.strerror}") from None
    for entry in entries:
        name = entry.name
        if not _valid_utf8(name):
            scan.bad_names.append(name)
            continue
        try:
            is_dir = entry.is_dir()
            st = entry.stat() if not is_dir else None
        except OSError:  # a dangling link, or one we may not follow
            is_dir, st = False, None
        if st is None and not is_dir:
            scan.ignored.append(
                (name, "dangling symbolic link" if entry.is_symlink() else "cannot be read")
            )
            continue
        reason = ignore_reason(name, is_dir)
        if reason:
            scan.ignored.append((name, reason))
        elif is_dir:
            scan.folders.append(name)
        else:
            scan.images.append((name, st.st_size, st.st_mtime_ns))
            scan.identity[name] = (st.st_ino, st.st_ctime_ns)
    return scan


@dataclass
class DatasetScan:
    """A class-folder dataset as found on disk: the root's scan, each class folder's
    scan, and every problem (one message per kind, each naming all its paths)."""

    root: Path
    top: FolderScan
    classes: dict[str, FolderScan]

    @property
    def ignored(self) -> list[dict]:
        """[{path (relative to the root), reason}] of everything left out."""
        out = [{"path": n, "reason": r} for n, r in self.top.ignored]
        for cls, scan in self.classes.items():
            out += [{"path": f"{cls}/{n}", "reason": r} for n, r in scan.ignored]
        return out

    def problems(self) -> list[str]:
        root, problems = self.root, []
        bad = [shown(self.root / n) for n in self.top.bad_names]
        bad += [shown(self.root / c / n) for c, s in self.classes.items() for n in s.bad_names]
        if bad:
            problems.append(f"{len(bad)} name(s) not valid UTF-8 (rename them): " + ", ".join(bad))
        if self.top.images:
            problems.append(
                f"{len(self.top.images)} image(s) outside class folders (move each "
                "into the folder of its class): " + ", ".join(n for n, _, _ in self.top.images)
            )
        nested = [f"{c}/{d}" for c, s in self.classes.items() for d in s.folders]
        if nested:
            problems.append(
                f"{len(nested)} folder(s) inside class folders (a class folder "
                "holds images only): " + ", ".join(nested)
            )
        empty = [str(root / c) for c, s in self.classes.items() if not s.images]
        if empty:
            problems.append(f"{len(empty)} empty class folder(s): " + ", ".join(empty))
        return problems

    def listing(self) -> str:
        """What the manifest is built from, one line per class folder and per image
        (relative name, size, mtime_ns, inode number, ctime_ns), and the problems: any
        change to an image or a class reruns the manifest, an ignored file does not.
        Size and mtime alone would miss two images of equal size and mtime swapped by
        renames (or a file rewritten with its mtime restored); the inode number follows
        a file through a rename and the ctime changes with every rename or write, and
        neither can be set back by a user. A copy or restore of the folder (new inodes)
        reruns the manifest too, which then writes the same rows."""

        def line(prefix: str, scan: FolderScan, name: str, size: int, mtime: int) -> str:
            ino, ctime = scan.identity[name]
            return f"{prefix}{name}\t{size}\t{mtime}\t{ino}\t{ctime}"

        lines = []
        for cls, scan in self.classes.items():
            lines.append(f"{cls}/")
            lines += [line(f"{cls}/", scan, *image) for image in scan.images]
            lines += [f"{cls}/{d}/\tfolder" for d in scan.folders]
        lines += [line("", self.top, *image) for image in self.top.images]
        lines += [f"{shown(n)}\tnot UTF-8" for n in self.top.bad_names]
        lines += [
            f"{c}/{shown(n)}\tnot UTF-8" for c, s in self.classes.items() for n in s.bad_names
        ]
        return "\n".join(lines)


def scan_dataset(root: str | Path) -> DatasetScan:
    """One ``os.scandir`` pass over the root and one over each class folder."""
    root = Path(root)
    if not root.is_dir():
        raise RshashError(f"image folder {shown(root)} does not exist")
    top = scan_one(root)
    return DatasetScan(root, top, {name: scan_one(root / name) for name in top.folders})


def folder_digest(root: str | Path) -> str:
    """sha256 of :meth:`DatasetScan.listing` (the workflow's record of a dataset folder;
    'absent' when the folder does not exist)."""
    if not Path(root).is_dir():
        return "absent"
    text = scan_dataset(root).listing()
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def scan_folder(
    root: str | Path,
    expected_classes: int | None = None,
    expected_images: int | None = None,
    expected: dict[str, int] | None = None,
) -> pd.DataFrame:
    """The manifest rows of ``root/<class>/<image>`` (:func:`read_dataset` without
    the list of files left out)."""
    return read_dataset(root, expected_classes, expected_images, expected)[0]


def read_dataset(
    root: str | Path,
    expected_classes: int | None = None,
    expected_images: int | None = None,
    expected: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """(manifest rows, [{path, reason}] of the files left out) of ``root/<class>/<image>``.

    System files (.DS_Store, Thumbs.db, desktop.ini, ._*), hidden files, files
    without an image extension and dangling links are left out and listed.
    Images at the root, folders inside class folders, empty class folders and
    names that are not UTF-8 are errors; every one of a kind is named.
    ``expected`` (class folder -> image count, for the known datasets) is
    checked before anything else, so a partly placed dataset gets one message
    listing every absent class folder and every short one.
    """
    found = scan_dataset(root)
    root, classes = found.root, list(found.classes)
    if expected is not None:
        problems = count_problems({n: len(s.images) for n, s in found.classes.items()}, expected)
        if problems:
            raise RshashError(
                f"{shown(root)}: the images do not match the dataset's "
                "definition: " + "; ".join(problems)
            )
    problems = found.problems()
    if problems:
        raise RshashError(f"{shown(root)}: " + "; ".join(problems))
    if not classes:
        raise RshashError(f"{shown(root)}: no class folders")
    rows = []
    for label, cls in enumerate(classes):
        for name, _, _ in found.classes[cls].images:
            rows.append((f"{cls}/{os.path.splitext(name)[0]}", str(root / cls / name), label, cls))
    df = pd.DataFrame(rows, columns=COLUMNS)
    dup = df.image_id[df.image_id.duplicated()]
    if len(dup):
        raise RshashError(
            f"{root}: duplicate image ids (same file name with different "
            f"extensions): {', '.join(dup)}"
        )
    if expected_classes is not None and len(classes) != expected_classes:
        raise RshashError(
            f"{root}: expected {expected_classes} class folders, found {len(classes)}"
        )
    if expected_images is not None and len(df) != expected_images:
        counts = df.class_name.value_counts().sort_index()
        raise RshashError(
            f"{root}: expected {expected_images} images, found {len(df)} "
            f"(per class: {dict(counts)})"
        )
    return df, found.ignored


def check_images(
    df: pd.DataFrame, skip_unreadable: bool = False
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
        raise RshashError(
            f"{skipped[0]['reason']}{more}; fix or remove the file(s), or set "
            "skip_unreadable: true in config.yaml to leave them out"
        )
    for item in skipped:
        print(f"skipped unreadable image: {item['reason']}", file=sys.stderr)
    kept = df[~df.image_id.isin({s["image_id"] for s in skipped})].reset_index(drop=True)
    emptied = sorted(set(df.class_name) - set(kept.class_name))
    if emptied:
        raise RshashError(
            f"class folder(s) {', '.join(emptied)} of "
            f"{Path(df.path.iloc[0]).parent.parent}: no readable image left "
            "after skipping unreadable files"
        )
    return kept, skipped


def report_path(manifest_path: str | Path) -> Path:
    """``{manifest}.report.json``: the side file listing what the manifest step skipped."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(manifest_path.name.removesuffix(".parquet") + ".report.json")


def write_report(
    path: str | Path,
    n_found: int,
    kept: pd.DataFrame,
    skipped: list[dict],
    ignored: list[dict] = (),
) -> None:
    """Write the manifest report: image files found, images kept, every skipped
    (unreadable) image, and every file left out of the dataset ({path, reason})."""
    report = {
        "n_files": n_found,
        "n_images": len(kept),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_ignored": len(ignored),
        "ignored": list(ignored),
    }

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
        problems.append(
            f"{len(absent)} of {len(expected)} class folders are absent: "
            + ", ".join(f"{name} ({expected[name]} images)" for name in absent)
        )
    short = [name for name in expected if name in found and found[name] < expected[name]]
    if short:
        problems.append(
            f"{len(short)} class folders have fewer images than expected: "
            + ", ".join(
                f"{name} {found[name]} of {expected[name]} ({expected[name] - found[name]} missing)"
                for name in short
            )
        )
    extra = [name for name in expected if name in found and found[name] > expected[name]]
    if extra:
        problems.append(
            f"{len(extra)} class folders have more files than expected: "
            + ", ".join(f"{name} {found[name]} of {expected[name]}" for name in extra)
        )
    unknown = sorted(set(found) - set(expected))
    if unknown:
        problems.append(
            f"{len(unknown)} folders are not classes of this dataset: " + ", ".join(unknown)
        )
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
