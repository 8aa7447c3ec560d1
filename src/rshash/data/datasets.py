"""Dataset definitions: where each dataset's images live under the data directory.

A dataset is either ``synthetic`` (generated, see rshash.data.synthetic) or a
folder of class sub-folders below the data directory. The known benchmark
datasets carry their folder name, class count, expected image count and,
where a direct public archive exists, its URL. Any other dataset is a name
plus a folder in config.yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rshash import RshashError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str | None = None  # relative to the data directory
    n_classes: int | None = None
    n_images: int | None = None
    url: str | None = None
    archive_root: str | None = None  # folder the archive unpacks to, relative to data_dir
    synthetic: dict = field(default_factory=dict)
    instructions: str | None = None


# The official archives. UC Merced is a direct download; the others are
# placed by hand (issue: datasets at scale).
KNOWN = {
    "ucmd": DatasetSpec(
        name="ucmd",
        folder="UCMerced_LandUse/Images",
        n_classes=21,
        n_images=2100,
        url="http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip",
        archive_root="UCMerced_LandUse",
    ),
}


def data_dir(config: dict) -> Path:
    """The data directory: env RSHASH_DATA_DIR overrides config key data_dir."""
    value = os.environ.get("RSHASH_DATA_DIR") or config.get("data_dir") or "data"
    return Path(value).expanduser()


def spec_from_config(name: str, entry: dict | None) -> DatasetSpec:
    """Merge a config.yaml datasets entry over the built-in definition."""
    entry = dict(entry or {})
    base = KNOWN.get(name, DatasetSpec(name=name))
    if "synthetic" in entry:
        return DatasetSpec(name=name, synthetic=dict(entry["synthetic"] or {}))
    fields = {k: entry[k] for k in ("folder", "n_classes", "n_images", "url") if k in entry}
    spec = DatasetSpec(**{**base.__dict__, **fields})
    if spec.folder is None:
        raise RshashError(f"datasets.{name}: give either 'folder' (class sub-folders "
                          "under data_dir) or 'synthetic'")
    return spec


def image_root(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.folder


def missing_message(spec: DatasetSpec, root: Path) -> str:
    where = image_root(spec, root)
    if not root.is_dir():
        problem = f"data directory {root} does not exist"
    else:
        problem = f"image folder {where} does not exist"
    fix = f"point RSHASH_DATA_DIR (or data_dir in config.yaml) at the folder that holds {spec.folder}"
    if spec.url:
        fix += f", or create {root} to have {spec.url} downloaded there"
    return f"dataset '{spec.name}': {problem}; {fix}"
