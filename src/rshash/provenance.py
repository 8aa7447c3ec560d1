"""The provenance block written next to every metric and table."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "rshash",
    "numpy",
    "pandas",
    "pyarrow",
    "h5py",
    "scikit-learn",
    "torch",
    "torchvision",
    "snakemake",
    "efficientnet-lite-pytorch",
)


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (never imports torch)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def config_hash(obj) -> str:
    """A stable short hash of a JSON-able object (a cell's settings)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def collect(config: dict | None = None, seconds: float | None = None) -> dict:
    return {
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "config_hash": config_hash(config) if config is not None else None,
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "seconds": seconds,
    }
