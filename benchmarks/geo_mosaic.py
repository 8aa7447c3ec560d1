"""A labelled geo-referenced mosaic built from UC Merced tiles, for measuring find-all.

The geo scenes the project ships (``datasets/geo``) carry no labels, so find-all's
precision and recall are measured on a scene built here: UC Merced tiles of known
classes laid out in a grid (a seeded random order), written as one GeoTIFF with a
made-up but valid geo-reference (EPSG:32614, UTM 14N, at UC Merced's own 0.3 m a pixel),
plus a labels file naming each grid cell's class. Chips are then windows of that scene,
as an archive cuts them:

- aligned chips (stride ``TILE``, offset 0) are exactly one tile each, so one class;
- offset chips (stride ``TILE``, offset ``TILE // 2`` in x and y) straddle four tiles,
  a quarter of each.

A chip counts as relevant to a class when that class covers at least ``HALF`` of its
area (:func:`relevant`): an aligned chip to its tile's class, an offset chip to a class
holding two or more of its four quarters. An offset chip with one quarter of the class
(25%) is *not* relevant: it is mostly other land use, and a person asking for all golf
courses would not accept a chip three quarters residential.

Tiles are decoded as rshash decodes image files (:func:`rshash.data.images.decode`,
the official ``.tif`` release and the ``.jpg`` copy alike); the 44 tiles that are not
256 x 256 (e.g. 247 x 247) are resized to 256 bilinearly, so every cell is one tile.

Usage: python benchmarks/geo_mosaic.py OUT.tif [--split query|train|all] [--seed S]
    [--per-class N] [--data-dir DIR]
(``--split``: the tiles of that part of split 0 of protocol dmch_60_40, or all tiles.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TILE = 256
HALF = 0.5  # the share of a chip's area a class must cover for the chip to be relevant
CRS = "EPSG:32614"
RESOLUTION = 0.3  # metres a pixel, UC Merced's own
ORIGIN = (500_000.0, 4_200_000.0)  # upper-left corner (easting, northing) in CRS
DEFAULT_DATA_DIR = "/work/shared/datasets"
UCMD_FOLDER = "UCMerced_LandUse/Images"
SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")


@dataclass
class Mosaic:
    """A written mosaic: its GeoTIFF, the class of each grid cell (-1: empty cell),
    the class names and the source image of each cell ('' when empty)."""

    path: Path
    grid: np.ndarray  # (rows, cols) int64
    class_names: list[str]
    sources: list[list[str]]
    tile: int = TILE

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.grid.shape[0] * self.tile, self.grid.shape[1] * self.tile


def ucmd_root(data_dir: str | os.PathLike | None = None) -> Path:
    """UC Merced's image folder under ``data_dir`` ($RSHASH_DATA_DIR, else the shared copy)."""
    base = data_dir or os.environ.get("RSHASH_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(base) / UCMD_FOLDER


def list_tiles(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(image paths, their class names) of a class-folder dataset, sorted."""
    paths, classes = [], []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in SUFFIXES:
                paths.append(str(f))
                classes.append(folder.name)
    return paths, classes


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) near square holding ``n`` cells: an exact factorisation when one has
    both sides within 1.5x of sqrt(n) (840 -> 28 x 30), else ceil(sqrt(n)) columns."""
    root = math.sqrt(n)
    for cols in range(math.ceil(root), int(1.5 * root) + 1):
        if n % cols == 0:
            return n // cols, cols
    cols = max(1, math.ceil(root))
    return math.ceil(n / cols), cols


def load_tile(path: str, tile: int = TILE) -> np.ndarray:
    """A tile as uint8 (tile, tile, 3) RGB: decoded as rshash decodes files, resized
    bilinearly when not ``tile`` x ``tile``."""
    from PIL import Image

    from rshash.data.images import decode

    img = decode(path)
    if img.size != (tile, tile):
        img = img.resize((tile, tile), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def build_mosaic(
    paths: list[str],
    classes: list[str],
    out: str | os.PathLike,
    seed: int = 0,
    tile: int = TILE,
) -> Mosaic:
    """Lay ``paths`` (of classes ``classes``) out in a grid in a seeded random order and
    write the GeoTIFF ``out`` (RGB uint8, 256-pixel blocks, deflate, no nodata) and its
    labels file (:func:`labels_path`)."""
    import rasterio
    from affine import Affine

    if len(paths) != len(classes) or not paths:
        raise ValueError(f"need as many classes as paths (got {len(paths)}, {len(classes)})")
    class_names = sorted(set(classes))
    label = np.array([class_names.index(c) for c in classes], np.int64)
    order = np.random.default_rng(seed).permutation(len(paths))
    rows, cols = grid_shape(len(paths))
    grid = np.full((rows, cols), -1, np.int64)
    sources = [[""] * cols for _ in range(rows)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": cols * tile,
        "height": rows * tile,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS,
        "transform": Affine(RESOLUTION, 0.0, ORIGIN[0], 0.0, -RESOLUTION, ORIGIN[1]),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "photometric": "RGB",
        "interleave": "pixel",
    }
    with rasterio.open(out, "w", **profile) as dst:
        for r in range(rows):
            band = np.zeros((tile, cols * tile, 3), np.uint8)
            for c in range(cols):
                cell = r * cols + c
                if cell >= len(order):
                    continue
                i = order[cell]
                band[:, c * tile : (c + 1) * tile] = load_tile(paths[i], tile)
                grid[r, c] = label[i]
                sources[r][c] = paths[i]
            window = rasterio.windows.Window(0, r * tile, cols * tile, tile)
            dst.write(band.transpose(2, 0, 1), window=window)
    labels = {"tile": tile, "class_names": class_names, "grid": grid.tolist(), "sources": sources}
    labels_path(out).write_text(json.dumps(labels))
    return Mosaic(out, grid, class_names, sources, tile)


def labels_path(mosaic_path: str | os.PathLike) -> Path:
    """The labels file next to a mosaic: ``<stem>.labels.json``."""
    p = Path(mosaic_path)
    return p.with_name(p.stem + ".labels.json")


def read_mosaic(path: str | os.PathLike) -> Mosaic:
    """A mosaic written by :func:`build_mosaic`, from its labels file."""
    meta = json.loads(labels_path(path).read_text())
    grid = np.asarray(meta["grid"], np.int64)
    return Mosaic(Path(path), grid, meta["class_names"], meta["sources"], meta["tile"])


def chip_windows(mosaic: Mosaic, offset: int = 0, size: int | None = None) -> np.ndarray:
    """Windows (n, 4) int64 (col_off, row_off, width, height) of ``size`` chips at stride
    ``size`` starting ``offset`` pixels in (x and y), those wholly inside the mosaic, row
    by row. offset 0: the aligned chips (one tile each); ``tile // 2``: the offset ones."""
    size = size or mosaic.tile
    height, width = mosaic.shape
    ys = np.arange(offset, height - size + 1, size)
    xs = np.arange(offset, width - size + 1, size)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    n = yy.size
    return np.stack([xx.ravel(), yy.ravel(), np.full(n, size), np.full(n, size)], 1)


def class_fractions(mosaic: Mosaic, windows: np.ndarray) -> np.ndarray:
    """(n, n_classes) float64: the share of each window's area each class covers (an
    empty cell covers none, so a row sums to 1 only when the window holds no empty cell)."""
    t, grid = mosaic.tile, mosaic.grid
    out = np.zeros((len(windows), len(mosaic.class_names)))
    for i, (x, y, w, h) in enumerate(np.asarray(windows, np.int64)):
        for r in range(y // t, (y + h - 1) // t + 1):
            dy = min(y + h, (r + 1) * t) - max(y, r * t)
            for c in range(x // t, (x + w - 1) // t + 1):
                dx = min(x + w, (c + 1) * t) - max(x, c * t)
                if grid[r, c] >= 0:
                    out[i, grid[r, c]] += dx * dy
    return out / (windows[:, 2] * windows[:, 3])[:, None]


def relevant(fractions: np.ndarray, label: int) -> np.ndarray:
    """Whether each chip is relevant to class ``label``: the class covers >= HALF of it."""
    return fractions[:, label] >= HALF - 1e-12


def read_chips(path: str | os.PathLike, windows: np.ndarray) -> np.ndarray:
    """The pixels (n, h, w, 3) uint8 of equal-sized windows of a mosaic."""
    import rasterio
    from rasterio.windows import Window

    windows = np.asarray(windows, np.int64)
    out = np.empty((len(windows), windows[0, 3], windows[0, 2], 3), np.uint8)
    with rasterio.open(path) as src:
        for i, (x, y, w, h) in enumerate(windows):
            out[i] = src.read(window=Window(x, y, w, h)).transpose(1, 2, 0)
    return out


def footprints(path: str | os.PathLike, windows: np.ndarray) -> np.ndarray:
    """(n, 4) float64 (minx, miny, maxx, maxy) of windows in the mosaic's CRS."""
    import rasterio

    with rasterio.open(path) as src:
        a = src.transform
    x0, y0 = a.c + windows[:, 0] * a.a, a.f + windows[:, 1] * a.e
    x1, y1 = x0 + windows[:, 2] * a.a, y0 + windows[:, 3] * a.e
    return np.stack(
        [np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)], 1
    )


def split_roles(paths: list[str], classes: list[str], seed: int = 0) -> np.ndarray:
    """Each tile's role (train, val or query) in UC Merced's split ``seed`` under
    dmch_60_40, made by rshash's own splitter (train and val: the train part)."""
    import pandas as pd

    from rshash.data.splits import make_split

    names = sorted(set(classes))
    manifest = pd.DataFrame(
        {"image_id": paths, "class_name": classes, "label": [names.index(c) for c in classes]}
    )
    split = make_split(manifest, {"train_fraction": 0.6, "database": "train"}, seed=seed)
    role = dict(zip(*split[split.role != "database"][["image_id", "role"]].to_numpy().T))
    return np.array([role[p] for p in paths])


def split_tiles(paths: list[str], classes: list[str], part: str, seed: int = 0):
    """(paths, classes) of one part of UC Merced's split ``seed`` under dmch_60_40:
    ``query`` (the held-out 40%), ``train`` (the train part, its val rows included) or
    ``all``."""
    if part == "all":
        return paths, classes
    role = split_roles(paths, classes, seed)
    keep = role == "query" if part == "query" else np.isin(role, ("train", "val"))
    return [p for p, k in zip(paths, keep) if k], [c for c, k in zip(classes, keep) if k]


def first_per_class(paths: list[str], classes: list[str], n: int):
    """(paths, classes) keeping the first ``n`` paths of each class."""
    seen: dict[str, int] = {}
    keep = []
    for c in classes:
        seen[c] = seen.get(c, 0) + 1
        keep.append(seen[c] <= n)
    return [p for p, k in zip(paths, keep) if k], [c for c, k in zip(classes, keep) if k]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the GeoTIFF to write (its labels file goes next to it)")
    p.add_argument("--split", choices=["query", "train", "all"], default="query")
    p.add_argument("--seed", type=int, default=0, help="the layout's seed")
    p.add_argument("--per-class", type=int, help="at most this many tiles a class")
    p.add_argument("--data-dir", help="default: $RSHASH_DATA_DIR, else the shared copy")
    a = p.parse_args()
    paths, classes = split_tiles(*list_tiles(ucmd_root(a.data_dir)), a.split)
    if a.per_class:
        paths, classes = first_per_class(paths, classes, a.per_class)
    m = build_mosaic(paths, classes, a.out, seed=a.seed)
    print(f"{m.path}: {m.grid.shape[0]} x {m.grid.shape[1]} tiles, {m.shape[1]} x {m.shape[0]} px")


if __name__ == "__main__":
    main()
