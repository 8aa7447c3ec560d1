"""Geo-referenced scenes as an archive's source: which scenes (a folder of GeoTIFF /
COG files or a STAC catalog or ItemCollection), their dates, and their chips: windows
read with rasterio (never files on disk), each with its footprint in the scene's CRS
and in EPSG:4326. No torch: the scene job embeds the chips (rshash.archive.geo).

An archive's config entry (``archives: {name: ...}`` in config.yaml) reads::

    scenes: {folder: geo/naip, glob: "*.tif",
             date_pattern: '_(?P<date>\\d{8})', date_format: "%Y%m%d"}
    # a fixed date for every scene of a folder: date: 2013-05-01
    # or   {stac: path/to/catalog.json, asset: image}   (a Catalog, Collection or ItemCollection)
    bands: [1, 2, 3]          # 1-based, shown to the backbone as R, G, B ([4, 3, 2]: false colour)
    stretch: [2, 98]          # 16-bit / float scenes: per-scene percentiles -> 0..255 (recorded)
    chip: {size: 64, stride: 64, unit: px}   # or unit: m
    max_nodata: 0.5           # a chip with more nodata than this share is left out (counted)

A scene's id is its file stem (folder) or its STAC item id; a chip's id is
``{scene}/{col_off}_{row_off}`` (its window's pixel offsets in the scene).

Why rasterio and pyproj rather than hand-written readers and projections: GeoTIFF,
COG (HTTP range reads for users online), masks and nodata, CRS definitions and datum
shifts are GDAL's and PROJ's job, and both wheels carry the libraries.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rshash import RshashError

QUICKLOOK_SIDE = 512  # the longest side of a scene's quicklook, pixels
WEB_MERCATOR = "EPSG:3857"
LONLAT = "EPSG:4326"
_SCENE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


# --- the archive's settings ---------------------------------------------------------


@dataclass(frozen=True)
class ChipSpec:
    """How a scene becomes chips: the bands shown to the backbone, the 8-bit stretch of
    non-byte scenes, the chip size and stride (pixels or metres) and the largest share
    of nodata a kept chip may hold."""

    bands: tuple[int, ...] = (1, 2, 3)
    stretch: tuple[float, float] = (2.0, 98.0)
    size: float = 64
    stride: float | None = None  # None: the size (chips side by side)
    unit: str = "px"  # px | m
    max_nodata: float = 0.5

    @classmethod
    def from_entry(cls, entry: dict, where: str) -> ChipSpec:
        chip = dict(entry.get("chip") or {})
        bands = tuple(entry.get("bands", (1, 2, 3)))
        if len(bands) != 3 or not all(isinstance(b, int) and b >= 1 for b in bands):
            raise RshashError(f"{where}: bands must be three 1-based band numbers, got {bands}")
        stretch = tuple(float(v) for v in entry.get("stretch", (2.0, 98.0)))
        if len(stretch) != 2 or not 0 <= stretch[0] < stretch[1] <= 100:
            raise RshashError(f"{where}: stretch must be two percentiles lo < hi in 0..100")
        unit = chip.get("unit", "px")
        if unit not in ("px", "m"):
            raise RshashError(f"{where}: chip unit must be px or m, got {unit!r}")
        size = float(chip.get("size", 64))
        stride = chip.get("stride")
        if size <= 0 or (stride is not None and float(stride) <= 0):
            raise RshashError(f"{where}: chip size and stride must be positive")
        max_nodata = float(entry.get("max_nodata", 0.5))
        if not 0 <= max_nodata < 1:
            raise RshashError(f"{where}: max_nodata must be in [0, 1), got {max_nodata}")
        return cls(
            bands, stretch, size, None if stride is None else float(stride), unit, max_nodata
        )

    def pixels(self, res: float, scene: str) -> tuple[int, int]:
        """(size, stride) in pixels of a scene of pixel size ``res`` (its CRS units)."""
        stride = self.size if self.stride is None else self.stride
        if self.unit == "m":
            size, stride = round(self.size / res), round(stride / res)
        else:
            size, stride = round(self.size), round(stride)
        if size < 16 or stride < 1:
            raise RshashError(
                f"scene {scene}: chips of {size} px (stride {stride} px) at {res:g} "
                "units a pixel; a chip needs at least 16 px a side"
            )
        return size, stride

    def as_dict(self) -> dict:
        return {
            "bands": list(self.bands),
            "stretch": list(self.stretch),
            "size": self.size,
            "stride": self.stride,
            "unit": self.unit,
            "max_nodata": self.max_nodata,
        }


@dataclass(frozen=True)
class Scene:
    """One scene of an archive: its id, where rasterio reads it (a path or a URL), its
    date (ISO, day), and for a STAC item the JSON of the item (what a rerun tracks)."""

    id: str
    href: str
    date: str
    item: str = ""


def _date(text: str, fmt: str | None, where: str) -> str:
    try:
        if fmt:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        return dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise RshashError(
            f"{where}: cannot read a date from {text!r}"
            + (f" with date_format {fmt!r}" if fmt else " (ISO 8601)")
        ) from None


def list_scenes(source: dict, base: str | os.PathLike = ".") -> list[Scene]:
    """The scenes of an archive's ``scenes`` entry, sorted by id. A relative folder or
    catalog path is taken under ``base`` (the data directory)."""
    source = dict(source)
    if ("folder" in source) == ("stac" in source):
        raise RshashError("archive scenes: give exactly one of folder or stac")
    if "folder" in source:
        return _folder_scenes(source, Path(base))
    return _stac_scenes(source, Path(base))


def _folder_scenes(source: dict, base: Path) -> list[Scene]:
    folder = Path(os.path.expanduser(source["folder"]))
    folder = folder if folder.is_absolute() else base / folder
    if not folder.is_dir():
        raise RshashError(f"archive scenes: folder {folder} does not exist")
    fixed, pattern = source.get("date"), source.get("date_pattern")
    if bool(fixed) == bool(pattern):
        raise RshashError(
            f"archive scenes {folder}: set one of scenes.date_pattern (a regular expression "
            "whose group (?P<date>...) finds each scene's date in its file name) or "
            "scenes.date (one ISO date for every scene)"
        )
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise RshashError(
            f"archive scenes: scenes.date_pattern {pattern!r} is not a regex ({exc})"
        ) from None
    files = sorted(folder.glob(source.get("glob", "*.tif")))
    if not files:
        raise RshashError(f"archive scenes: no {source.get('glob', '*.tif')} files in {folder}")
    scenes = []
    for f in files:
        if regex is None:
            when = _date(str(fixed), None, f"scene {f}: scenes.date")
        else:
            m = regex.search(f.name)
            if not m:
                raise RshashError(
                    f"scene {f}: scenes.date_pattern {pattern!r} finds no date in its name"
                )
            text = m.groupdict().get("date") or (m.group(1) if m.groups() else m.group(0))
            when = _date(text, source.get("date_format"), f"scene {f}")
        scenes.append(Scene(_scene_id(f.stem, f), str(f.resolve()), when))
    return _unique(scenes)


def _stac_scenes(source: dict, base: Path) -> list[Scene]:
    import pystac

    path = Path(os.path.expanduser(source["stac"]))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise RshashError(f"archive scenes: STAC file {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RshashError(f"STAC file {path}: not readable JSON ({exc})") from None
    try:
        if doc.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
        else:
            root = pystac.read_file(str(path))
            if isinstance(root, pystac.Item):
                items = [root]
            else:
                items = list(root.get_items(recursive=True))
    except RshashError:
        raise
    except Exception as exc:  # pystac's errors for a malformed catalog are many types
        raise RshashError(f"STAC file {path}: {type(exc).__name__}: {exc}") from None
    asset_key = source.get("asset")
    scenes = []
    for item in items:
        where = f"STAC item {item.id} ({path})"
        key = asset_key or _first_geotiff(item)
        if key is None or key not in item.assets:
            raise RshashError(
                f"{where}: no asset {key!r}"
                if key
                else f"{where}: no GeoTIFF asset; set scenes.asset"
            )
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        if not re.match(r"^[a-z][a-z0-9+.-]*://", href) and not os.path.isabs(href):
            href = str((path.parent / href).resolve())
        when = item.datetime or item.common_metadata.start_datetime
        if when is None:
            raise RshashError(f"{where}: no datetime or start_datetime")
        item_json = json.dumps(item.to_dict(include_self_link=False), sort_keys=True)
        scenes.append(Scene(_scene_id(item.id, where), href, when.date().isoformat(), item_json))
    if not scenes:
        raise RshashError(f"STAC file {path}: no items")
    return _unique(scenes)


def _first_geotiff(item) -> str | None:
    for key, asset in item.assets.items():
        media = (asset.media_type or "").lower()
        if "geotiff" in media or asset.href.lower().endswith((".tif", ".tiff")):
            return key
    return None


def _scene_id(text: str, where) -> str:
    if not _SCENE_ID.fullmatch(text):
        raise RshashError(
            f"scene {where}: id {text!r} must be 1-128 letters, digits, '.', '_' or '-'"
        )
    return text


def _unique(scenes: list[Scene]) -> list[Scene]:
    seen: dict[str, Scene] = {}
    for s in scenes:
        if s.id in seen:
            raise RshashError(f"two scenes with id {s.id!r}: {seen[s.id].href} and {s.href}")
        seen[s.id] = s
    return sorted(scenes, key=lambda s: s.id)


# --- reading a scene ----------------------------------------------------------------


def open_scene(scene: Scene, spec: ChipSpec):
    """The scene opened with rasterio, checked: a readable raster, a known CRS, a
    geo-transform and the bands asked for. One line naming the scene otherwise."""
    import rasterio

    try:
        ds = rasterio.open(scene.href)
    except rasterio.errors.RasterioIOError as exc:
        raise RshashError(f"scene {scene.id} ({scene.href}): cannot be read ({exc})") from None
    problem = None
    if ds.crs is None:
        problem = "has no CRS (an unknown coordinate reference system)"
    elif ds.transform.is_identity:
        problem = "has no geo-transform"
    elif max(spec.bands) > ds.count:
        problem = f"has {ds.count} band(s); bands {list(spec.bands)} asked for"
    else:
        try:
            _transformer(ds.crs)
        except Exception as exc:  # pyproj's CRSError and ProjError
            problem = f"has a CRS PROJ cannot transform to EPSG:4326 ({exc})"
    if problem:
        ds.close()
        raise RshashError(f"scene {scene.id} ({scene.href}) {problem}")
    return ds


def _transformer(crs):
    from pyproj import Transformer

    return Transformer.from_crs(crs.to_wkt(), LONLAT, always_xy=True)


def stretch_of(ds, spec: ChipSpec) -> list[list[float]] | None:
    """The per-band (low, high) that bring a scene to 8 bits: None for a byte scene
    (kept as is); else the ``spec.stretch`` percentiles of each band's valid pixels,
    read from an overview of at most ~1 MP (the whole scene, decimated)."""
    if ds.dtypes[spec.bands[0] - 1] == "uint8" and all(
        ds.dtypes[b - 1] == "uint8" for b in spec.bands
    ):
        return None
    scale = max(1, int(np.ceil(np.sqrt(ds.width * ds.height / 1_000_000))))
    shape = (max(1, ds.height // scale), max(1, ds.width // scale))
    data = ds.read(list(spec.bands), out_shape=(3, *shape), masked=True)
    out = []
    for b, band in zip(spec.bands, data):
        valid = band.compressed().astype(np.float64)
        valid = valid[np.isfinite(valid)]
        if not len(valid):
            raise RshashError(f"scene {ds.name}: band {b} holds no valid pixel")
        lo, hi = np.percentile(valid, spec.stretch)
        out.append([float(lo), float(hi) if hi > lo else float(lo) + 1.0])
    return out


def to_bytes(data: np.ndarray, stretch) -> np.ndarray:
    """Bands (3, h, w) -> uint8 (h, w, 3): as is for byte scenes, else the recorded
    stretch (values below low are 0, above high 255)."""
    if stretch is None:
        return np.ascontiguousarray(np.moveaxis(np.asarray(data, np.uint8), 0, -1))
    lo = np.array([s[0] for s in stretch])[:, None, None]
    hi = np.array([s[1] for s in stretch])[:, None, None]
    scaled = (np.asarray(data, np.float64) - lo) * (255.0 / (hi - lo))
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.ascontiguousarray(
        np.moveaxis(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), 0, -1)
    )


@dataclass
class SceneChips:
    """The kept chips of one scene: ids, windows (col_off, row_off, width, height),
    footprints (corners in the scene's CRS and in lon/lat, (n, 4, 2)), and what the
    scene records (CRS, transform, size, stretch, chips left out for nodata)."""

    scene: Scene
    windows: np.ndarray
    native: np.ndarray
    lonlat: np.ndarray
    meta: dict
    left_out: int = 0
    ids: list[str] = field(default_factory=list)


def footprints(transform, windows: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Corners (n, 4, 2) of windows in the scene's CRS (through its affine transform,
    rotated ones too) and in lon/lat: upper-left, upper-right, lower-right, lower-left."""
    c, r = windows[:, 0].astype(np.float64), windows[:, 1].astype(np.float64)
    w, h = windows[:, 2], windows[:, 3]
    cols = np.stack([c, c + w, c + w, c], 1)
    rows = np.stack([r, r, r + h, r + h], 1)
    a, b, x0, d, e, y0 = (
        transform.a,
        transform.b,
        transform.c,
        transform.d,
        transform.e,
        transform.f,
    )
    x = a * cols + b * rows + x0
    y = d * cols + e * rows + y0
    native = np.stack([x, y], -1)
    lon, lat = _transformer(crs).transform(x.ravel(), y.ravel())
    lonlat = np.stack([np.reshape(lon, x.shape), np.reshape(lat, y.shape)], -1)
    return native, lonlat


def scene_meta(scene: Scene, ds, spec: ChipSpec, stretch) -> dict:
    """What an index records of a scene (JSON): enough to read a chip again."""
    size, stride = spec.pixels(abs(ds.res[0]), scene.id)
    _, corners = footprints(ds.transform, np.array([[0, 0, ds.width, ds.height]]), ds.crs)
    lon, lat = corners[0, :, 0], corners[0, :, 1]
    return {
        "id": scene.id,
        "href": scene.href,
        "date": scene.date,
        "crs": ds.crs.to_wkt(),
        "epsg": ds.crs.to_epsg(),
        "transform": list(ds.transform)[:6],
        "width": ds.width,
        "height": ds.height,
        "count": ds.count,
        "dtype": ds.dtypes[0],
        "nodata": ds.nodata,
        "bands": list(spec.bands),
        "stretch": stretch,
        "chip_px": [size, stride],
        "bounds_4326": [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())],
    }


def chip_scene(scene: Scene, spec: ChipSpec):
    """Chip a scene: (SceneChips, a generator of each kept chip as uint8 (h, w, 3)).

    Reads one strip of chips at a time (a window of the chips' height and the scene's
    width), so memory holds one strip, whatever the scene's size. A chip whose share of
    masked pixels (GDAL's masks: nodata value, alpha or internal mask)
    is over ``max_nodata`` is left out and counted; masked pixels of a kept chip are 0.
    A pixel is nodata when every band shown is masked (GDAL's dataset mask, over the
    bands read): a nodata value of 0 also hides a band's legitimately dark pixels, and
    one such band must not drop a chip.
    The generator must be run to the end before ``SceneChips`` is complete."""
    from rasterio.windows import Window

    ds = open_scene(scene, spec)
    stretch = stretch_of(ds, spec)
    meta = scene_meta(scene, ds, spec, stretch)
    size, stride = meta["chip_px"]
    if size > ds.width or size > ds.height:
        ds.close()
        raise RshashError(
            f"scene {scene.id}: chips of {size} px do not fit its {ds.width} x {ds.height} px"
        )
    cols = np.arange(0, ds.width - size + 1, stride)
    rows = np.arange(0, ds.height - size + 1, stride)
    chips = SceneChips(scene, np.zeros((0, 4), np.int32), None, None, meta)
    kept = []
    bands = list(spec.bands)

    def generate():
        try:
            for r in rows:
                strip = Window(0, int(r), ds.width, size)
                data = ds.read(bands, window=strip)
                mask = ds.read_masks(bands, window=strip).max(0) > 0
                for c in cols:
                    valid = mask[:, c : c + size]
                    if 1.0 - valid.mean() > spec.max_nodata:
                        chips.left_out += 1
                        continue
                    chip = to_bytes(data[:, :, c : c + size], stretch)
                    chip[~valid] = 0
                    kept.append((int(c), int(r)))
                    yield chip
            windows = np.array([[c, r, size, size] for c, r in kept], np.int32).reshape(-1, 4)
            chips.windows = windows
            chips.native, chips.lonlat = footprints(ds.transform, windows, ds.crs)
            chips.ids = [f"{scene.id}/{c}_{r}" for c, r in kept]
            meta["n_chips"], meta["n_left_out"] = len(kept), chips.left_out
        finally:
            ds.close()

    return chips, generate()


def read_window(meta: dict, window, max_side: int | None = None) -> np.ndarray:
    """A chip of an indexed scene again (a thumbnail): uint8 (h, w, 3) with the scene's
    recorded bands and stretch, decimated to at most ``max_side`` pixels a side."""
    import rasterio
    from rasterio.windows import Window

    col, row, w, h = (int(v) for v in window)
    out = None
    if max_side and max(w, h) > max_side:
        f = max(w, h) / max_side
        out = (3, max(1, round(h / f)), max(1, round(w / f)))
    try:
        with rasterio.open(meta["href"]) as ds:
            data = ds.read(meta["bands"], window=Window(col, row, w, h), out_shape=out)
            mask = ds.read_masks(meta["bands"], window=Window(col, row, w, h), out_shape=out)
    except rasterio.errors.RasterioIOError as exc:
        raise RshashError(f"scene {meta['id']} ({meta['href']}): cannot be read ({exc})") from None
    chip = to_bytes(data, meta["stretch"])
    chip[mask.max(0) == 0] = 0
    return chip


def quicklook(scene: Scene, spec: ChipSpec, stretch, side: int = QUICKLOOK_SIDE):
    """The scene's quicklook for the page's map: its bands, stretched as its chips are,
    reprojected to Web Mercator from a decimated read (GDAL picks the overviews), RGBA
    uint8 (nodata transparent), and its bounds (west, south, east, north) in EPSG:3857."""
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    ds = open_scene(scene, spec)
    try:
        f = max(1.0, max(ds.width, ds.height) / side)
        shape = (max(1, round(ds.height / f)), max(1, round(ds.width / f)))
        data = ds.read(list(spec.bands), out_shape=(3, *shape))
        valid = ds.read_masks(list(spec.bands), out_shape=(3, *shape)).max(0)
        src_transform = ds.transform @ ds.transform.scale(ds.width / shape[1], ds.height / shape[0])
        rgb = np.moveaxis(to_bytes(data, stretch), -1, 0)
        src = np.concatenate([rgb, valid[None].astype(np.uint8)])
        dst_crs = CRS.from_string(WEB_MERCATOR)
        transform, width, height = calculate_default_transform(
            ds.crs, dst_crs, shape[1], shape[0], *_bounds(src_transform, shape)
        )
        dst = np.zeros((4, height, width), np.uint8)
        reproject(
            src,
            dst,
            src_transform=src_transform,
            src_crs=ds.crs,
            dst_transform=transform,
            dst_crs=dst_crs,
            resampling=Resampling.nearest,
        )
    finally:
        ds.close()
    dst[3] = np.where(dst[3] > 0, 255, 0)
    west, north = transform.c, transform.f
    east, south = west + transform.a * width, north + transform.e * height
    return np.ascontiguousarray(np.moveaxis(dst, 0, -1)), [west, south, east, north]


def _bounds(transform, shape) -> tuple[float, float, float, float]:
    corners = [transform @ (c, r) for c in (0, shape[1]) for r in (0, shape[0])]
    xs = [x for x, _ in corners]
    ys = [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)
