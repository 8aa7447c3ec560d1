"""Download a dataset archive when its images are not on disk yet.

The archive is streamed to ``<name>.part`` and renamed when complete, then
unpacked into a temporary folder that is renamed into place, so an
interrupted download or extraction never leaves a folder a later run trusts.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rshash import RshashError
from rshash.digest import file_sha256


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part``, renamed only once complete.

    An existing ``dest`` is kept when it matches ``sha256`` (or no digest is
    given: only a complete download is ever renamed to ``dest``). A failed,
    short or interrupted transfer, or a checksum mismatch, removes the
    ``.part`` file, so a later call starts again from scratch.
    """
    if dest.exists() and (not sha256 or file_sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out, length=1 << 20)
                expected = resp.headers.get("Content-Length")
            got = part.stat().st_size
            if expected is not None and got != int(expected):
                raise RshashError(
                    f"could not download {url}: connection closed after {got} "
                    f"of {expected} bytes; run again to restart the download"
                )
        # http.client.IncompleteRead (a short read) is an HTTPException, not an OSError.
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as err:
            raise RshashError(
                f"could not download {url}: {type(err).__name__}: {err}; run "
                "again to restart the download"
            ) from None
        if sha256:
            actual = file_sha256(part)
            if actual != sha256:
                raise RshashError(
                    f"{url}: checksum mismatch, expected sha256 {sha256}, got "
                    f"{actual}; the download was deleted"
                )
        part.replace(dest)
    finally:  # also on KeyboardInterrupt / SIGTERM: no partial file is kept
        part.unlink(missing_ok=True)
    return dest


def ensure_images(
    name: str,
    folder: Path,
    url: str | None,
    archive_root: str | None,
    data_dir: Path,
    sha256: str | None = None,
    checksums: dict[str, str] | None = None,
    create_data_dir: bool = False,
) -> Path:
    """Return ``folder``; download and unpack ``url`` into ``data_dir`` first if missing.

    ``checksums`` ({path relative to ``folder``: sha256}) is checked against every
    unpacked file before the folder is moved into place: a changed, missing or
    extra file is one error naming them all, and nothing unpacked is kept.
    ``create_data_dir``: create an absent ``data_dir`` (the default one) first.
    """
    if folder.is_dir():
        return folder
    where = (
        f"dataset '{name}': image folder {folder} does not exist (data_dir={data_dir}; "
        "set RSHASH_DATA_DIR or data_dir in config.yaml)"
    )
    if not url:
        raise RshashError(f"{where}; place one sub-folder per class with its images there")
    if not data_dir.is_dir() and create_data_dir:
        data_dir.mkdir(parents=True, exist_ok=True)
    if not data_dir.is_dir():
        raise RshashError(
            f"{where}; the data directory itself is missing: create it to have "
            f"{url} downloaded there, or point RSHASH_DATA_DIR at the folder "
            "that holds the datasets"
        )
    archive = data_dir / Path(url).name
    place = f"; or download {url} yourself and unpack it so that {folder}/<class>/ holds the images"
    try:
        download(url, archive, sha256)
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}.") as tmp:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            root = archive_root or ""
            target = data_dir / root
            if not (Path(tmp) / root).exists():
                raise RshashError(f"{archive}: does not contain {root}/")
            if checksums is not None:
                check_files(
                    Path(tmp) / folder.relative_to(data_dir), checksums, f"{archive} unpacked"
                )
            try:
                (Path(tmp) / root).replace(target)
            except OSError as err:
                raise RshashError(
                    f"could not move the unpacked {root}/ to {target}: {err}"
                ) from None
    except RshashError as err:
        raise RshashError(f"{where}, and it could not be fetched: {err}{place}") from None
    except zipfile.BadZipFile as err:
        archive.unlink(missing_ok=True)
        raise RshashError(
            f"{where}; {archive} is not a valid zip archive ({err}); "
            "it was removed, run again to re-download"
        ) from None
    if not folder.is_dir():
        raise RshashError(f"{where}; after unpacking {archive} it is still missing")
    return folder


def check_files(folder: Path, checksums: dict[str, str], what: str) -> None:
    """Every file under ``folder`` has the listed sha256, and exactly the listed files are
    there (system files such as .DS_Store or Thumbs.db aside): else one error naming
    each changed, missing and extra file."""
    from rshash.data.manifest import ignore_reason

    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if ignore_reason(d, True) is None]
        rel = Path(dirpath).relative_to(folder)
        for f in filenames:
            reason = ignore_reason(f, False)
            if reason and not reason.startswith("not an image"):
                continue
            found.add((rel / f).as_posix())
    missing = sorted(set(checksums) - found)
    extra = sorted(found - set(checksums))
    changed = sorted(n for n in set(checksums) & found if file_sha256(folder / n) != checksums[n])
    problems = []
    if changed:
        problems.append(
            f"{len(changed)} file(s) differ from their published sha256: " + ", ".join(changed)
        )
    if missing:
        problems.append(f"{len(missing)} file(s) missing: " + ", ".join(missing))
    if extra:
        problems.append(f"{len(extra)} file(s) not in the dataset: " + ", ".join(extra))
    if problems:
        raise RshashError(
            f"{what}: " + "; ".join(problems) + "; the unpacked files were "
            "deleted (the archive is kept: delete it to download it again)"
        )
