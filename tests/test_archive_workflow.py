"""An archive of real NAIP scenes through the workflow, as a cluster runs it: the real
workflow/profiles/slurm against fake SLURM commands (tests/fake_slurm.py), one job per
scene; then what a user does next: search it (a lake finds lakes on other dates),
export it, add a scene (that scene's jobs and the publication only), refit the hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import UCMD_DIR
from tests.test_slurm import on_fake_slurm, submissions

pytestmark = pytest.mark.slow

NAIP = UCMD_DIR / "geo" / "naip"
TARGET = "results/archives/naip/index"


def naip_files() -> list[Path]:
    files = sorted(NAIP.glob("*.tif"))
    if len(files) < 4:
        pytest.skip(f"real NAIP scenes not found under {NAIP} (set RSHASH_TEST_DATA_DIR)")
    return files


def archive_config(repo: Path, data_dir: Path, **hash_) -> dict:
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["data_dir"] = str(data_dir)
    cfg["device"] = "cpu"
    cfg["archives"] = {
        "naip": {
            **cfg["archives"]["naip"],
            "hash": {"method": "itq", "bits": 64, **hash_},
        }
    }
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory, snakemake):
    """Three NAIP dates (a folder of links to the shared scenes), indexed through the
    SLURM profile: (repo, workdir, env, sbatch/srun calls)."""
    files = naip_files()
    repo = Path(__file__).resolve().parents[1]
    work = tmp_path_factory.mktemp("archive")
    folder = work / "data" / "geo" / "naip"
    folder.mkdir(parents=True)
    for f in files[:3]:
        (folder / f.name).symlink_to(f)
    (work / "config.yaml").write_text(yaml.safe_dump(archive_config(repo, work / "data")))
    env = {"RSHASH_DATA_DIR": str(work / "data")}
    state = tmp_path_factory.mktemp("fake_slurm")
    calls = on_fake_slurm(snakemake, repo, work, state, [TARGET], env)
    return repo, work, env, calls


def test_each_scene_is_its_own_cluster_job(run):
    _, _, _, calls = run
    subs = submissions(calls)
    assert {r: len(v) for r, v in subs.items()} == {
        "embed_scene": 3,
        "fit_archive_hash": 1,
        "encode_scene": 3,
        "publish_archive": 1,
    }
    scenes = {o["comment"].split("_wildcards_")[1] for o in subs["embed_scene"]}
    assert len(scenes) == 3  # three different scenes, one job each
    for opts in subs["embed_scene"]:
        assert (opts["cpus_per_task"], opts["mem"], opts["time"]) == (8, 8000, "60")


def test_the_index_holds_every_chip_with_its_place_and_date(run):
    import geopandas as gpd

    from rshash.archive import read_index

    _, work, _, _ = run
    index = read_index(work / TARGET)
    files = naip_files()[:3]
    assert [s["id"] for s in index.scenes] == [f.stem for f in files]
    assert [s["date"] for s in index.scenes] == ["2009-08-18", "2010-06-29", "2012-07-31"]
    per_scene = [s["n_chips"] for s in index.scenes]
    assert len(index) == sum(per_scene) == 3 * 14 * 11  # 64 px chips of 934 x 723 px
    geo = index.geo_of(len(index) - 1)
    assert geo["date"] == "2012-07-31" and geo["scene"]["id"] == files[2].stem

    chips = gpd.read_parquet(work / "results/archives/naip/chips.parquet")
    assert chips.crs.to_epsg() == 4326 and len(chips) == len(index)
    west, south, east, north = np.array([s["bounds_4326"] for s in index.scenes]).T
    lo, hi = chips.total_bounds[:2], chips.total_bounds[2:]
    assert (lo >= [west.min(), south.min()]).all() and (hi <= [east.max(), north.max()]).all()
    # 14 x 11 chips of 320 m cover all but the scene's last 54 x 19 px
    assert hi[0] - lo[0] == pytest.approx((east.max() - west.min()) * 896 / 934, rel=0.01)
    assert list(chips.id) == list(index.image_id)


def water_share(index, row: int) -> float:
    """The share of a chip's pixels that are open water: near infrared (NAIP band 4)
    below red (band 1), i.e. NDVI < 0 (vegetation and soil reflect more NIR than red)."""
    import rasterio
    from rasterio.windows import Window

    geo = index.geo_of(row)
    with rasterio.open(geo["scene"]["href"]) as ds:
        red, nir = ds.read([1, 4], window=Window(*geo["window"])).astype(np.int16)
    return float((nir < red).mean())


def test_a_lake_finds_lakes_on_other_dates(run):
    """Clicking a water chip: among its first results are chips of water on the other
    dates. Water is told by a physical index of the scene's own bands (NIR below red),
    not by anything the ranking computes: the most watery chip of each date is the
    query, and its first ten results hold water from other dates, far above the share
    of water chips in the archive."""
    from rshash.archive import read_index, search_ids

    _, work, _, _ = run
    index = read_index(work / TARGET)
    scene_of = np.asarray(index._all.geo["scene"])
    water = np.array([water_share(index, r) for r in range(len(index))]) > 0.5
    base_rate = water.mean()
    precision = []
    for s in range(len(index.scenes)):
        rows = np.flatnonzero(scene_of == s)
        query = int(rows[np.argmax([water_share(index, int(r)) for r in rows])])
        (result,) = search_ids(index, [index.image_id_of(query)], top=11)
        hits = [int(r) for r in result.page.rows if r != query][:10]
        other_dates = [r for r in hits if scene_of[r] != s]
        assert water[other_dates].sum() >= 2, index.scenes[s]["date"]
        precision.append(water[hits].mean())
    assert np.mean(precision) >= base_rate + 0.3, (precision, base_rate)


def test_adding_a_scene_plans_that_scene_and_the_publication_only(run, snakemake, planned):
    repo, work, env, _ = run
    extra = naip_files()[3]
    link = work / "data" / "geo" / "naip" / extra.name
    link.symlink_to(extra)
    try:
        out = snakemake(repo, work, "-n", TARGET, env=env)
        assert planned(out.stdout) == {"embed_scene": 1, "encode_scene": 1, "publish_archive": 1}
        assert f"scene={extra.stem}" in out.stdout.replace(" ", "").replace(":", "=")
    finally:
        link.unlink()
    out = snakemake(repo, work, "-n", TARGET, env=env)
    assert planned(out.stdout) == {}  # and nothing once it is gone again


def test_refitting_is_an_explicit_choice_that_reencodes_every_scene(run, snakemake, planned):
    repo, work, env, _ = run
    changed = work / "refit.yaml"
    changed.write_text(yaml.safe_dump(archive_config(repo, work / "data", bits=32)))
    out = snakemake(repo, work, "-n", TARGET, configfile=changed, env=env)
    assert planned(out.stdout) == {"fit_archive_hash": 1, "encode_scene": 3, "publish_archive": 1}
    out = snakemake(repo, work, "-n", TARGET, "--forcerun", "fit_archive_hash", env=env)
    assert planned(out.stdout) == {"fit_archive_hash": 1, "encode_scene": 3, "publish_archive": 1}


def test_a_trained_cell_of_the_pipeline_can_hash_the_archive(run, snakemake, planned):
    """``hash: {model: ...}`` names a model the pipeline trains: its cell's jobs are
    planned, the archive's own hash is not, and every scene is encoded with it."""
    repo, work, env, _ = run
    cell = "demo/efficientnet_lite0/dmch_60_40/itq/32/split0"
    cfg = archive_config(repo, work / "data")
    cfg["archives"]["naip"]["hash"] = {"model": f"results/models/{cell}.npz"}
    # the workdir's own config (a second --configfile would be merged into it)
    original = (work / "config.yaml").read_text()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        out = snakemake(repo, work, "-n", TARGET, env=env)
    finally:
        (work / "config.yaml").write_text(original)
    jobs = planned(out.stdout)
    assert jobs["train_method"] == 1 and jobs["encode_scene"] == 3
    assert "fit_archive_hash" not in jobs and "embed_scene" not in jobs


def test_a_scene_that_cannot_be_read_stops_its_job_and_publishes_nothing(run, snakemake, tmp_path):
    repo, work, env, _ = run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    folder = copy / "data" / "geo" / "naip"
    (folder / "m_4709963_se_14_1_20220101.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    cfg = archive_config(repo, copy / "data")
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = (copy / TARGET).read_bytes()
    out = snakemake(
        repo, copy, TARGET, check=False, env={**env, "RSHASH_DATA_DIR": str(copy / "data")}
    )
    assert out.returncode != 0
    log = (copy / "results/logs/embed_scene/naip/m_4709963_se_14_1_20220101.log").read_text()
    (line,) = [ln for ln in log.splitlines() if "error" in ln]
    assert "scene m_4709963_se_14_1_20220101" in line and "cannot be read" in line
    assert not (copy / "results/archives/naip/features/m_4709963_se_14_1_20220101.h5").exists()
    assert (copy / TARGET).read_bytes() == before  # the published index is untouched
