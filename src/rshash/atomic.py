"""Atomic file writes: an output is either the old file or the complete new one."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from rshash import RshashError


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; nothing is left on failure.

    ``path`` is either the old file or the complete new one, never a partial
    one. An OSError while writing or renaming (a full disk, a file-size limit,
    no permission) is an RshashError naming ``path``. A process killed outright
    (SIGKILL) cannot clean up: its hidden ``.{name}.tmp{pid}`` is never read as
    an output, and the next write of the same path removes it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
            stale.unlink(missing_ok=True)
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise RshashError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
