"""Download a dataset archive when its images are not on disk yet.

The archive is streamed to ``<name>.part`` and renamed when complete, then
unpacked into a temporary folder that is renamed into place, so an
interrupted download or extraction never leaves a folder a later run trusts.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rshash import RshashError


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60) -> Path:
    """Fetch ``url`` to ``dest`` (skipped when it exists and matches ``sha256``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise RshashError(f"could not download {url}: {err}") from None
    if sha256:
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink()
            raise RshashError(f"{url}: checksum mismatch, expected sha256 {sha256}, got {actual}")
    part.replace(dest)
    return dest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_images(name: str, folder: Path, url: str | None, archive_root: str | None,
                  data_dir: Path, sha256: str | None = None) -> Path:
    """Return ``folder``; download and unpack ``url`` into ``data_dir`` first if missing."""
    if folder.is_dir():
        return folder
    where = (f"dataset '{name}': image folder {folder} does not exist (data_dir={data_dir}; "
             "set RSHASH_DATA_DIR or data_dir in config.yaml)")
    if not url:
        raise RshashError(f"{where}; place one sub-folder per class with its images there")
    if not data_dir.is_dir():
        raise RshashError(f"{where}; the data directory itself is missing: create it to have "
                          f"{url} downloaded there, or point RSHASH_DATA_DIR at the folder "
                          "that holds the datasets")
    archive = data_dir / Path(url).name
    try:
        if not archive.exists():
            download(url, archive, sha256)
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}.") as tmp:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            root = archive_root or ""
            target = data_dir / root
            if not (Path(tmp) / root).exists():
                raise RshashError(f"{archive}: does not contain {root}/")
            (Path(tmp) / root).replace(target)
    except RshashError as err:
        raise RshashError(f"{where}, and it could not be fetched: {err}") from None
    except zipfile.BadZipFile as err:
        archive.unlink(missing_ok=True)
        raise RshashError(f"{where}; {archive} is not a valid zip archive ({err}); "
                          "it was removed, run again to re-download") from None
    if not folder.is_dir():
        raise RshashError(f"{where}; after unpacking {archive} it is still missing")
    return folder
