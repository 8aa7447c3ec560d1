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
    # class folder name -> expected image count (known datasets); checked by the manifest
    expected: dict[str, int] | None = None
    # package data file (rshash/data/checksums/) with the sha256 of each image the
    # archive unpacks to (`sha256  class/file`), checked after a download
    checksums: str | None = None


def _same(classes: str, count: int) -> dict[str, int]:
    return {name: count for name in classes.split()}


UCMD_CLASSES = _same(
    "agricultural airplane baseballdiamond beach buildings chaparral denseresidential forest "
    "freeway golfcourse harbor intersection mediumresidential mobilehomepark overpass parkinglot "
    "river runway sparseresidential storagetanks tenniscourt",
    100,
)

# AID (Xia et al., TGRS 2017, Table II): 30 classes of 220 to 420 images, 10,000 in all.
AID_CLASSES = {
    "Airport": 360,
    "BareLand": 310,
    "BaseballField": 220,
    "Beach": 400,
    "Bridge": 360,
    "Center": 260,
    "Church": 240,
    "Commercial": 350,
    "DenseResidential": 410,
    "Desert": 300,
    "Farmland": 370,
    "Forest": 250,
    "Industrial": 390,
    "Meadow": 280,
    "MediumResidential": 290,
    "Mountain": 340,
    "Park": 350,
    "Parking": 390,
    "Playground": 370,
    "Pond": 420,
    "Port": 380,
    "RailwayStation": 260,
    "Resort": 290,
    "River": 410,
    "School": 300,
    "SparseResidential": 300,
    "Square": 330,
    "Stadium": 290,
    "StorageTanks": 360,
    "Viaduct": 420,
}

# NWPU-RESISC45 (Cheng et al., Proc. IEEE 2017): 45 classes x 700 images.
NWPU_CLASSES = _same(
    "airplane airport baseball_diamond basketball_court beach bridge chaparral church "
    "circular_farmland cloud commercial_area dense_residential desert forest freeway golf_course "
    "ground_track_field harbor industrial_area intersection island lake meadow medium_residential "
    "mobile_home_park mountain overpass palace parking_lot railway railway_station "
    "rectangular_farmland river roundabout runway sea_ice ship snowberg sparse_residential "
    "stadium storage_tank tennis_court terrace thermal_power_station wetland",
    700,
)

# PatternNet (Zhou et al., ISPRS J. 2018): 38 classes x 800 images.
PATTERNNET_CLASSES = _same(
    "airplane baseball_field basketball_court beach bridge cemetery chaparral christmas_tree_farm "
    "closed_road coastal_mansion crosswalk dense_residential ferry_terminal football_field forest "
    "freeway golf_course harbor intersection mobile_home_park nursing_home oil_gas_field oil_well "
    "overpass parking_lot parking_space railway river runway runway_marking shipping_yard "
    "solar_panel sparse_residential storage_tank swimming_pool tennis_court transformer_station "
    "wastewater_treatment_plant",
    800,
)


def _known(name: str, folder: str, classes: dict[str, int], **extra) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        folder=folder,
        n_classes=len(classes),
        n_images=sum(classes.values()),
        expected=classes,
        **extra,
    )


# The benchmark datasets. Only UC Merced has a direct public archive (the URL its
# authors publish on their page, served over https as well). AID, NWPU-RESISC45 and
# PatternNet are published on their authors' pages through cloud drives (OneDrive,
# Baidu Pan, Google Drive) that need a browser, so rshash does not download them: the
# instruction says where to place the images (the pages are the official ones as
# published with the papers; they could not be re-checked from here, without
# internet). The UC Merced archive's own digest could not be established offline, so
# it is not checked; each of the 2,100 images it unpacks to is, against
# checksums/ucmd.sha256 (the sha256 of each original .tif file), before the folder is
# moved into place.
KNOWN = {
    "ucmd": _known(
        "ucmd",
        "UCMerced_LandUse/Images",
        UCMD_CLASSES,
        url="https://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip",
        archive_root="UCMerced_LandUse",
        checksums="ucmd.sha256",
    ),
    "aid": _known(
        "aid",
        "AID",
        AID_CLASSES,
        instructions="download AID from its authors' page "
        "(https://captain-whu.github.io/AID/) and unpack it so that "
        "<data_dir>/AID/<class>/ holds the images of each of its 30 classes",
    ),
    "nwpu": _known(
        "nwpu",
        "NWPU-RESISC45",
        NWPU_CLASSES,
        instructions="download NWPU-RESISC45 from its authors' page "
        "(https://gcheng-nwpu.github.io/, data sets) and unpack it so that "
        "<data_dir>/NWPU-RESISC45/<class>/ holds the images of each of its "
        "45 classes",
    ),
    "patternnet": _known(
        "patternnet",
        "PatternNet/images",
        PATTERNNET_CLASSES,
        instructions="download PatternNet from its authors' page "
        "(https://sites.google.com/view/zhouwx/dataset) and unpack it so that "
        "<data_dir>/PatternNet/images/<class>/ holds the images of each of its "
        "38 classes",
    ),
}


DEFAULT_DATA_DIR = "data"  # relative to the working directory; git-ignored


def data_dir(config: dict) -> Path:
    """The data directory: env RSHASH_DATA_DIR overrides config key data_dir."""
    value = os.environ.get("RSHASH_DATA_DIR") or config.get("data_dir") or DEFAULT_DATA_DIR
    return Path(value).expanduser()


def is_default_data_dir(path: Path) -> bool:
    """Whether ``path`` is the default data directory, which a download may create
    (a data directory the user named and that is absent is more likely a typo)."""
    return Path(path) == Path(DEFAULT_DATA_DIR)


def load_checksums(spec: DatasetSpec) -> dict[str, str] | None:
    """{relative path: sha256} of the images a dataset's archive unpacks to, or None."""
    return packaged_checksums(spec.checksums) if spec.checksums else None


def packaged_checksums(name: str) -> dict[str, str]:
    """{relative path: sha256} of the package data file rshash/data/checksums/<name>."""
    from importlib.resources import files

    path = files("rshash.data") / "checksums" / name
    if not path.is_file():
        raise RshashError(f"no checksum list {name} in rshash/data/checksums")
    return parse_checksums(path.read_text(), name)


def parse_checksums(text: str, where: str) -> dict[str, str]:
    """Parse ``sha256  relative/path`` lines (sha256sum's format)."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise RshashError(f"{where}:{n}: not a 'sha256  path' line")
        out[name.strip()] = digest.lower()
    return out


def spec_from_config(name: str, entry: dict | None) -> DatasetSpec:
    """Merge a config.yaml datasets entry over the built-in definition."""
    entry = dict(entry or {})
    base = KNOWN.get(name, DatasetSpec(name=name))
    if "synthetic" in entry:
        return DatasetSpec(name=name, synthetic=dict(entry["synthetic"] or {}))
    fields = {k: entry[k] for k in ("folder", "n_classes", "n_images", "url") if k in entry}
    if "n_classes" in fields or "n_images" in fields:
        fields["expected"] = None  # the config's counts replace the built-in per-class ones
    spec = DatasetSpec(**{**base.__dict__, **fields})
    if spec.folder is None:
        raise RshashError(
            f"datasets.{name}: give either 'folder' (class sub-folders "
            "under data_dir) or 'synthetic'"
        )
    if spec.url and not spec.archive_root:  # the archive unpacks to the folder's top folder
        spec = DatasetSpec(**{**spec.__dict__, "archive_root": Path(spec.folder).parts[0]})
    return spec


def image_root(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.folder


def missing_message(spec: DatasetSpec, root: Path) -> str:
    where = image_root(spec, root)
    if not root.is_dir():
        problem = f"data directory {root} does not exist"
    else:
        problem = f"image folder {where} does not exist"
    fix = (
        f"point RSHASH_DATA_DIR (or data_dir in config.yaml) at the folder that holds {spec.folder}"
    )
    if spec.url:
        fix += (
            f", or create {root} to have {spec.url} downloaded there (or download it "
            f"yourself and unpack it so that {where}/<class>/ holds the images)"
        )
    elif spec.instructions:
        fix += f"; to get it: {spec.instructions}"
    else:
        fix += f"; place one sub-folder per class with its images in {where}"
    return f"dataset '{spec.name}': {problem}; {fix}"
