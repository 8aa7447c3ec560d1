"""The labelled geo-mosaic of the find-all study (benchmarks/geo_mosaic.py) on a handful of
real UC Merced tiles: aligned chips read back are the tiles, offset chips straddle four
tiles whose class shares sum to 1, and the GeoTIFF is geo-referenced as documented."""

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_geo_mosaic():
    spec = importlib.util.spec_from_file_location("geo_mosaic", ROOT / "benchmarks/geo_mosaic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["geo_mosaic"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


geo_mosaic = load_geo_mosaic()


@pytest.fixture(scope="module")
def tiles():
    root = geo_mosaic.ucmd_root()
    if not root.is_dir():
        pytest.skip(f"UC Merced not found at {root} (set RSHASH_DATA_DIR)")
    from PIL import Image

    all_paths, all_classes = geo_mosaic.list_tiles(root)
    paths, classes = geo_mosaic.first_per_class(all_paths, all_classes, 2)
    six = sorted(set(classes))[:6]
    keep = [c in six for c in classes]
    paths = [p for p, k in zip(paths, keep) if k]
    classes = [c for c, k in zip(classes, keep) if k]
    # one tile not 256 x 256 when the copy has one (44 do, e.g. 253 x 256): it is resized
    odd = next(
        (
            p
            for p, c in zip(all_paths, all_classes)
            if c in six and Image.open(p).size != (256, 256)
        ),
        None,
    )
    if odd is not None:
        i = max(i for i, c in enumerate(classes) if c == all_classes[all_paths.index(odd)])
        paths[i] = odd
    return paths, classes


def test_aligned_chips_read_back_equal_the_tiles(tiles, tmp_path):
    import rasterio

    paths, classes = tiles
    m = geo_mosaic.build_mosaic(paths, classes, tmp_path / "m.tif", seed=3)
    assert m.grid.shape == (3, 4) and (m.grid >= 0).all()
    windows = geo_mosaic.chip_windows(m, 0)
    assert len(windows) == 12
    chips = geo_mosaic.read_chips(m.path, windows)
    for chip, (x, y, _, _) in zip(chips, windows):
        r, c = y // 256, x // 256
        np.testing.assert_array_equal(chip, geo_mosaic.load_tile(m.sources[r][c]))
        assert m.class_names[m.grid[r, c]] == classes[paths.index(m.sources[r][c])]
    fractions = geo_mosaic.class_fractions(m, windows)
    np.testing.assert_array_equal(fractions.max(1), 1.0)  # one class each
    with rasterio.open(m.path) as src:
        assert src.crs.to_epsg() == 32614 and src.res == (0.3, 0.3)
        assert src.count == 3 and src.dtypes == ("uint8",) * 3 and src.nodata is None
        assert src.profile["tiled"] and src.compression.name == "deflate"
    again = geo_mosaic.read_mosaic(m.path)
    np.testing.assert_array_equal(again.grid, m.grid)


def test_offset_chips_cover_four_tiles_a_quarter_each(tiles, tmp_path):
    m = geo_mosaic.build_mosaic(*tiles, tmp_path / "m.tif", seed=3)
    windows = geo_mosaic.chip_windows(m, 128)
    assert len(windows) == 2 * 3  # (rows - 1) x (cols - 1)
    fractions = geo_mosaic.class_fractions(m, windows)
    np.testing.assert_allclose(fractions.sum(1), 1.0)
    for f, (x, y, _, _) in zip(fractions, windows):
        cells = m.grid[y // 256 : y // 256 + 2, x // 256 : x // 256 + 2].ravel()
        expected = np.bincount(cells, minlength=len(m.class_names)) / 4
        np.testing.assert_allclose(f, expected)
        for label in range(len(m.class_names)):  # relevant: the class covers half or more
            assert geo_mosaic.relevant(f[None], label)[0] == ((cells == label).sum() >= 2)
    bounds = geo_mosaic.footprints(m.path, windows[:1])
    np.testing.assert_allclose(bounds[0, 2] - bounds[0, 0], 256 * 0.3)


def test_the_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RSHASH_DATA_DIR", str(tmp_path))
    assert geo_mosaic.ucmd_root() == tmp_path / "UCMerced_LandUse/Images"
    assert os.environ["RSHASH_DATA_DIR"] == str(tmp_path)


def load_study():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("findall_study", ROOT / "benchmarks/findall.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_metrics_on_a_ranking_computed_by_hand():
    study = load_study()
    hits = np.array([1, 0, 1, 1, 0, 0], bool)  # 3 of the 4 relevant chips returned
    assert study.ap_of(hits, 4) == pytest.approx((1 + 2 / 3 + 3 / 4) / 4)
    assert study.recall_at_precision(hits, 4, 0.9) == 0.25  # only the first cut
    assert study.recall_at_precision(hits, 4, 0.75) == 0.75  # 3 of the first 4
    assert study.recall_at_precision(~hits, 4, 0.9) == 0.0


def test_a_simulated_person_on_a_separable_archive_finds_everything():
    study = load_study()
    rng = np.random.default_rng(0)
    rel = np.arange(300) < 30
    codes = rng.integers(0, 256, (300, 8), dtype=np.uint8)
    codes[rel] = 0  # the relevant chips share one code, far from the others
    codes[~rel] |= 0xF0
    runs = study.search_rounds("rocchio", codes, None, rel, 0, rounds=2, marks=10)
    assert len(runs) == 3
    for ap, residual, r_at_p90, precision, recall in runs:
        assert ap == residual == r_at_p90 == precision == recall == 1.0
