"""Scenes as an archive's source (rshash.archive.scenes, rshash.archive.geo): real
GeoTIFFs from ../shared/datasets/geo (NAIP: four bands, nodata 0, UTM 14N; Landsat:
a nodata border around a tilted footprint, UTM 18N), a local STAC catalog and
ItemCollection, 16-bit and float scenes, and each bad input's one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rshash import RshashError
from rshash.archive.scenes import (
    ChipSpec,
    Scene,
    chip_scene,
    footprints,
    list_scenes,
    read_window,
    to_bytes,
)
from tests.conftest import UCMD_DIR

GEO = UCMD_DIR / "geo"
NAIP = GEO / "naip"
LANDSAT = GEO / "landsat" / "RGB.byte.tif"
NAIP_DATES = {"date_pattern": r"_(?P<date>\d{8})\.tif$", "date_format": "%Y%m%d"}


@pytest.fixture(scope="module")
def geo_dir() -> Path:
    if not NAIP.is_dir() or not LANDSAT.is_file():
        pytest.skip(f"real geo scenes not found under {GEO} (set RSHASH_TEST_DATA_DIR)")
    return GEO


def naip_scenes():
    return list_scenes({"folder": str(NAIP), **NAIP_DATES})


def run(scene, spec):
    chips, pixels = chip_scene(scene, spec)
    return chips, list(pixels)


def write_tif(path, data, crs="EPSG:32614", transform=None, nodata=None):
    import rasterio
    from rasterio.transform import from_origin

    count, h, w = data.shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": count,
        "dtype": data.dtype.name,
        "transform": transform or from_origin(500000, 5000000, 2.0, 2.0),
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


# --- which scenes, and when --------------------------------------------------------


def test_folder_scenes_take_their_dates_from_the_file_names(geo_dir):
    scenes = naip_scenes()
    assert len(scenes) == 10
    assert [s.date for s in scenes][:3] == ["2009-08-18", "2010-06-29", "2012-07-31"]
    assert all(Path(s.href).is_file() and s.id == Path(s.href).stem for s in scenes)
    fixed = list_scenes({"folder": str(LANDSAT.parent), "date": "2013-05-01"})
    assert [(s.id, s.date) for s in fixed] == [("RGB.byte", "2013-05-01")]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"folder": "nowhere"}, "folder .*/nowhere does not exist"),
        ({"folder": "naip"}, "set one of scenes.date_pattern"),
        ({"folder": "naip", "date_pattern": r"_(?P<date>\d{6})\.tif$"}, "finds no date"),
        (
            {"folder": "naip", "date_pattern": r"_(?P<date>\d{8})", "date_format": "%d%m%Y"},
            "with date_format",
        ),
        ({"folder": "naip", "date_pattern": "("}, "is not a regex"),
        ({"folder": "naip", "stac": "x.json"}, "exactly one of folder or stac"),
    ],
)
def test_a_bad_scenes_entry_is_one_line_naming_the_key(geo_dir, source, message):
    with pytest.raises(RshashError, match=message) as err:
        list_scenes(source, geo_dir)
    assert "\n" not in str(err.value)


def _item(pystac, scene: Scene, href: str, key: str = "image"):
    import datetime as dt

    import rasterio

    with rasterio.open(scene.href) as ds:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    item = pystac.Item(
        id=scene.id,
        geometry={
            "type": "Polygon",
            "coordinates": [
                [[west, south], [east, south], [east, north], [west, north], [west, south]]
            ],
        },
        bbox=[west, south, east, north],
        datetime=dt.datetime.fromisoformat(scene.date + "T17:00:00+00:00"),
        properties={},
    )
    item.add_asset(key, pystac.Asset(href=href, media_type=pystac.MediaType.COG))
    return item


def test_a_local_stac_catalog_and_item_collection_list_their_items(geo_dir, tmp_path):
    import pystac

    scenes = naip_scenes()[:3]
    catalog = pystac.Catalog(id="naip", description="three NAIP dates")
    for s in scenes:  # relative asset hrefs, resolved against the item's file
        catalog.add_item(_item(pystac, s, s.href))
    catalog.normalize_and_save(str(tmp_path / "stac"), pystac.CatalogType.SELF_CONTAINED)
    listed = list_scenes({"stac": str(tmp_path / "stac" / "catalog.json"), "asset": "image"})
    assert [(s.id, s.date, s.href) for s in listed] == [(s.id, s.date, s.href) for s in scenes]
    assert all(json.loads(s.item)["id"] == s.id for s in listed)

    collection = pystac.ItemCollection([_item(pystac, s, s.href) for s in scenes])
    (tmp_path / "items.json").write_text(json.dumps(collection.to_dict()))
    listed = list_scenes({"stac": "items.json"}, tmp_path)  # the first GeoTIFF asset
    assert [s.id for s in listed] == [s.id for s in scenes]

    broken = pystac.ItemCollection([_item(pystac, scenes[0], scenes[0].href, key="visual")])
    (tmp_path / "broken.json").write_text(json.dumps(broken.to_dict()))
    with pytest.raises(RshashError, match=f"STAC item {scenes[0].id} .*no asset 'image'"):
        list_scenes({"stac": str(tmp_path / "broken.json"), "asset": "image"})


# --- chips ----------------------------------------------------------------------------


def test_chips_are_windows_of_the_scene_with_their_footprints(geo_dir):
    import rasterio
    from pyproj import Transformer

    scene = naip_scenes()[0]
    spec = ChipSpec(bands=(4, 3, 2), size=320, stride=160, unit="m")  # 64 px, half overlap
    chips, pixels = run(scene, spec)
    with rasterio.open(scene.href) as ds:
        full = ds.read([4, 3, 2])
        cols = len(range(0, ds.width - 64 + 1, 32))
        rows = len(range(0, ds.height - 64 + 1, 32))
        assert len(pixels) == cols * rows and chips.left_out == 0
        to_lonlat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
        for k in (0, 7, len(pixels) - 1):
            c, r, w, h = chips.windows[k]
            assert (w, h) == (64, 64) and chips.ids[k] == f"{scene.id}/{c}_{r}"
            np.testing.assert_array_equal(
                pixels[k], np.moveaxis(full[:, r : r + h, c : c + w], 0, -1)
            )
            x0, y0 = ds.transform @ (c, r)
            x1, y1 = ds.transform @ (c + w, r + h)
            np.testing.assert_allclose(chips.native[k], [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            lon, lat = to_lonlat.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
            np.testing.assert_allclose(chips.lonlat[k], np.stack([lon, lat], 1), atol=1e-9)
    assert chips.meta["chip_px"] == [64, 32] and chips.meta["stretch"] is None


def test_the_landsat_nodata_border_gives_no_nodata_chip(geo_dir):
    import rasterio
    from rasterio.windows import Window

    scene = list_scenes({"folder": str(LANDSAT.parent), "date": "2013-05-01"})[0]
    with rasterio.open(scene.href) as ds:
        mask = ds.dataset_mask() > 0  # valid where any band is
    for max_nodata in (0.0, 0.5):
        chips, pixels = run(scene, ChipSpec(size=32, max_nodata=max_nodata))
        grid = len(range(0, 791 - 31, 32)) * len(range(0, 718 - 31, 32))
        assert chips.left_out > 0 and len(pixels) + chips.left_out == grid
        for (c, r, w, h), chip in zip(chips.windows, pixels):
            valid = mask[r : r + h, c : c + w]
            assert 1 - valid.mean() <= max_nodata
            assert not chip[~valid].any()  # masked pixels of a kept chip are black
        with rasterio.open(scene.href) as ds:  # every chip left out was mostly nodata
            kept = {tuple(w[:2]) for w in chips.windows}
            for r in range(0, ds.height - 31, 32):
                for c in range(0, ds.width - 31, 32):
                    if (c, r) not in kept:
                        m = ds.dataset_mask(window=Window(c, r, 32, 32)) > 0
                        assert 1 - m.mean() > max_nodata


def test_a_16_bit_scene_is_stretched_per_scene_and_the_stretch_recorded(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 5000, size=(4, 96, 128), dtype=np.uint16)
    data[:, :10] = 0  # a nodata strip: not counted in the percentiles
    write_tif(tmp_path / "s2_20200101.tif", data, nodata=0)
    scene = list_scenes({"folder": str(tmp_path), "date_pattern": r"_(?P<date>\d{8})"})[0]
    chips, pixels = run(scene, ChipSpec(bands=(3, 2, 1), size=32, stretch=(2, 98)))
    lo_hi = chips.meta["stretch"]
    for b, (lo, hi) in zip((3, 2, 1), lo_hi):
        valid = data[b - 1][data[b - 1] > 0].astype(float)
        np.testing.assert_allclose([lo, hi], np.percentile(valid, [2, 98]), rtol=0.02)
    c, r, w, h = chips.windows[-1]
    expected = to_bytes(data[[2, 1, 0], r : r + h, c : c + w], lo_hi)
    np.testing.assert_array_equal(pixels[-1], expected)
    assert pixels[-1].min() == 0 and pixels[-1].max() == 255
    np.testing.assert_array_equal(read_window(chips.meta, chips.windows[-1]), expected)
    write_tif(tmp_path / "f_20200102.tif", data.astype(np.float32) / 7, nodata=0)
    scene = list_scenes({"folder": str(tmp_path), "glob": "f_*.tif", "date_pattern": r"_(\d{8})"})
    chips, pixels = run(scene[0], ChipSpec(size=32))
    assert (
        chips.meta["dtype"] == "float32" and chips.meta["stretch"] and pixels[0].dtype == np.uint8
    )


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (
            lambda p: write_tif(p, np.ones((3, 64, 64), np.uint8), crs=None),
            ChipSpec(size=32),
            "has no CRS",
        ),
        (
            lambda p: write_tif(p, np.ones((3, 64, 64), np.uint8)),
            ChipSpec(bands=(1, 2, 4), size=32),
            r"has 3 band\(s\); bands \[1, 2, 4\]",
        ),
        (
            lambda p: p.write_bytes(b"II*\x00 not really a tiff"),
            ChipSpec(size=32),
            "cannot be read",
        ),
        (lambda p: write_tif(p, np.ones((3, 64, 64), np.uint8)), ChipSpec(size=128), "do not fit"),
        (
            lambda p: write_tif(p, np.zeros((3, 64, 64), np.uint8), nodata=0),
            ChipSpec(size=32),
            None,
        ),
    ],
)
def test_a_bad_scene_is_one_line_naming_it(tmp_path, make, spec, message):
    path = tmp_path / "bad_20200101.tif"
    make(path)
    scene = Scene("bad_20200101", str(path), "2020-01-01")
    if message is None:  # all nodata: no chip, every one counted
        chips, pixels = run(scene, spec)
        assert (len(pixels), chips.left_out) == (0, 4)
        return
    with pytest.raises(RshashError, match=message) as err:
        run(scene, spec)
    assert "\n" not in str(err.value) and "bad_20200101" in str(err.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"bands": [1, 2]}, "bands must be three"),
        ({"stretch": [90, 10]}, "stretch must be two percentiles"),
        ({"chip": {"unit": "ft"}}, "chip unit must be px or m"),
        ({"max_nodata": 1.0}, "max_nodata must be in"),
    ],
)
def test_bad_chip_settings_are_one_line_naming_the_setting(entry, message):
    with pytest.raises(RshashError, match=message):
        ChipSpec.from_entry(entry, "archives.x")


def test_footprints_follow_a_rotated_transform():
    from affine import Affine
    from rasterio.crs import CRS

    t = Affine.translation(500000, 5000000) @ Affine.rotation(30) @ Affine.scale(2, -2)
    native, lonlat = footprints(t, np.array([[10, 20, 5, 5]]), CRS.from_epsg(32614))
    np.testing.assert_allclose(native[0, 0], t @ (10, 20))
    np.testing.assert_allclose(native[0, 2], t @ (15, 25))
    side = np.linalg.norm(native[0, 1] - native[0, 0])
    assert side == pytest.approx(10.0)  # 5 px of 2 m, rotated or not


def test_a_chip_embeds_as_the_same_pixels_read_from_a_file(tmp_path):
    """The scene job's array path resizes exactly as the folder path does."""
    from PIL import Image

    from rshash.backbones.spec import Preprocess
    from rshash.data.images import load_image

    chip = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(chip).save(tmp_path / "chip.png")
    np.testing.assert_array_equal(load_image(chip, 224), load_image(tmp_path / "chip.png", 224))
    p = Preprocess(224, resize=256, crop="center")
    np.testing.assert_array_equal(p(chip), p(tmp_path / "chip.png"))
