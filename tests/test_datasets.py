"""Dataset definitions: the benchmark datasets' class lists and counts, the
count check that names what is missing, and any class-folder dataset through
snakemake from two config lines."""

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from rshash import RshashError
from rshash.data.datasets import KNOWN, missing_message, spec_from_config
from rshash.data.manifest import count_problems, scan_folder
from rshash.data.synthetic import generate


@pytest.mark.parametrize(
    "name, folder, n_classes, per_class, total",
    [
        ("ucmd", "UCMerced_LandUse/Images", 21, (100, 100), 2100),
        ("aid", "AID", 30, (220, 420), 10_000),
        ("nwpu", "NWPU-RESISC45", 45, (700, 700), 31_500),
        ("patternnet", "PatternNet/images", 38, (800, 800), 30_400),
    ],
)
def test_known_definitions(repo, name, folder, n_classes, per_class, total):
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    spec = spec_from_config(name, cfg["datasets"][name])
    assert (spec.folder, spec.n_classes, spec.n_images) == (folder, n_classes, total)
    assert len(spec.expected) == n_classes and sum(spec.expected.values()) == total
    assert (min(spec.expected.values()), max(spec.expected.values())) == per_class
    assert spec.url or spec.instructions  # a way to get the images


def test_aid_counts_from_the_paper():
    aid = KNOWN["aid"].expected
    assert (aid["BaseballField"], aid["Pond"], aid["Viaduct"], aid["Airport"]) == (
        220,
        420,
        420,
        360,
    )


def test_ucmd_classes_match_the_real_copy(ucmd_data_dir):
    root = ucmd_data_dir / KNOWN["ucmd"].folder
    found = {p.name: len(list(p.iterdir())) for p in root.iterdir() if p.is_dir()}
    assert count_problems(found, KNOWN["ucmd"].expected) == []


def test_config_counts_replace_the_built_in_ones():
    spec = spec_from_config("aid", {"folder": "AID_subset", "n_images": 300})
    assert spec.expected is None and spec.n_images == 300 and spec.folder == "AID_subset"


def _tiles(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8)).save(root / name / f"{name}_{i}.png")
    return root


def test_count_check_names_absent_short_and_unknown_folders(tmp_path):
    expected = {"Beach": 4, "Desert": 5, "Forest": 3, "Port": 2}
    root = _tiles(tmp_path / "AID", {"Desert": 2, "Forest": 3, "Port": 3, "Lake": 1})
    with pytest.raises(RshashError) as err:
        scan_folder(root, expected=expected)
    message = str(err.value)
    assert str(root) in message
    assert "1 of 4 class folders are absent: Beach (4 images)" in message
    assert "1 class folders have fewer images than expected: Desert 2 of 5 (3 missing)" in message
    assert "Port 3 of 2" in message and "not classes of this dataset: Lake" in message
    assert "Forest" not in message


def test_empty_class_folder_is_reported_as_short(tmp_path):
    root = _tiles(tmp_path / "d", {"a": 2, "b": 0})
    with pytest.raises(RshashError, match=r"b 0 of 2 \(2 missing\)"):
        scan_folder(root, expected={"a": 2, "b": 2})


def test_matching_counts_give_the_manifest(tmp_path):
    root = _tiles(tmp_path / "d", {"b": 2, "a": 3})
    df = scan_folder(root, expected={"a": 3, "b": 2})
    assert list(df.class_name) == ["a"] * 3 + ["b"] * 2 and list(df.label) == [0] * 3 + [1] * 2


def test_missing_folder_message_says_how_to_get_it(tmp_path):
    message = missing_message(KNOWN["nwpu"], tmp_path)
    assert f"{tmp_path / 'NWPU-RESISC45'} does not exist" in message
    assert "NWPU-RESISC45/<class>/" in message and "45" in message
    custom = spec_from_config("mine", {"folder": "Mine"})
    assert "place one sub-folder per class" in missing_message(custom, tmp_path)


def _config(repo, tmp_path, data_dir, **changes) -> None:
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["data_dir"] = str(data_dir)
    for key, value in changes.items():
        cfg[key].update(value)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.slow
def test_dry_run_plans_the_benchmark_tables_without_images(repo, tmp_path, snakemake, planned):
    data = tmp_path / "data"
    for name in ("aid", "nwpu", "patternnet"):
        for cls in KNOWN[name].expected:
            (data / KNOWN[name].folder / cls).mkdir(parents=True)
    _config(repo, tmp_path, data)
    out = snakemake(
        repo, tmp_path, "-n", *(f"results/tables/{e}.csv" for e in ("aid", "nwpu", "patternnet"))
    )
    jobs = planned(out.stdout + out.stderr)
    # per dataset: 1 manifest, 1 extraction, 3 splits, (3 methods x 2 bits + raw) x 3 seeds
    assert jobs["build_manifest"] == 3 and jobs["extract_features"] == 3
    assert jobs["make_split"] == 9 and jobs["train_method"] == 63
    assert jobs["evaluate_ranking"] == 63 and jobs["build_table"] == 3


@pytest.mark.slow
def test_any_class_folder_dataset_gets_a_table(
    repo, tmp_path, snakemake, planned, small_experiment
):
    data = tmp_path / "data"
    generate(data / "Mine" / "tiles", n_classes=3, per_class=10, size=64, seed=1)
    _config(
        repo,
        tmp_path,
        data,
        datasets={"mine": {"folder": "Mine/tiles"}},  # the two lines a user adds
        experiments={"mine": small_experiment("mine", ["lsh", "raw"])},
    )
    snakemake(repo, tmp_path, "results/tables/mine.csv")
    manifest = pd.read_parquet(tmp_path / "results/manifests/mine.parquet")
    assert len(manifest) == 30 and manifest.label.nunique() == 3
    table = pd.read_csv(tmp_path / "results/tables/mine.csv")
    maps = table[table.metric == "map_all"].set_index("method")["mean"]
    assert set(table.dataset) == {"mine"} and sorted(maps.index) == ["lsh", "raw"]
    assert maps.between(0, 1).all()

    # the manifest follows the folder: a file browser's .DS_Store reruns nothing, one
    # added image plans the manifest and every job of the dataset's table again
    (data / "Mine" / "tiles" / ".DS_Store").write_bytes(b"\0")
    out = snakemake(repo, tmp_path, "-n", "results/tables/mine.csv")
    assert "Nothing to be done" in out.stdout + out.stderr
    first = min(p for p in (data / "Mine" / "tiles").iterdir() if p.is_dir())
    Image.new("RGB", (64, 64), (5, 5, 5)).save(first / "added.png")
    jobs = planned(
        (out := snakemake(repo, tmp_path, "-n", "results/tables/mine.csv")).stdout + out.stderr
    )
    assert jobs["build_manifest"] == 1 and jobs["extract_features"] == 1
    assert jobs["make_split"] == 1 and jobs["train_method"] == 2
    assert jobs["evaluate_ranking"] == 2 and jobs["build_table"] == 1


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap.tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def test_swapping_two_images_of_equal_size_and_mtime_changes_the_listing(tmp_path):
    """Two images of the same size and mtime exchanged with renames (``mv``) are another
    dataset (their labels or ids change): the folder's digest sees it, though no name,
    size or mtime in the folder changed."""
    from rshash.data.manifest import folder_digest

    for cls, colour in (("beach", (200, 180, 90)), ("forest", (20, 90, 30))):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8), colour).save(tmp_path / cls / "x.bmp")
    a, b = tmp_path / "beach" / "x.bmp", tmp_path / "forest" / "x.bmp"
    assert a.stat().st_size == b.stat().st_size
    for p in (a, b):
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = folder_digest(tmp_path)
    assert folder_digest(tmp_path) == before  # touching nothing changes nothing
    _swap(a, b)
    for p in (a, b):  # even with the mtimes set back
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (b.stat().st_size, b.stat().st_mtime_ns)
    assert folder_digest(tmp_path) != before


def test_synthetic_classes_pair_each_texture_with_each_shape_once():
    """Up to 50 synthetic classes: the first ten are the demo sets' (names, so files,
    unchanged); the rest pair every texture with every shape once."""
    import itertools

    from rshash.data.synthetic import SHAPES, TEXTURES, class_names

    assert class_names(10) == [
        "disc_stripes", "square_checker", "triangle_dots", "ring_speckle", "cross_rings",
        "disc_grid", "square_blobs", "triangle_finespeckle", "ring_waves", "cross_gradient",
    ]  # fmt: skip
    pairs = [tuple(name.split("_")) for name in class_names(50)]
    assert sorted(pairs) == sorted(itertools.product(SHAPES, TEXTURES))
    with pytest.raises(ValueError, match="2..50"):
        class_names(51)


def test_synthetic_classes_sharing_a_texture_differ_in_their_shape():
    """Class 10 has class 0's texture and another shape: the same draws give the same
    ground and a different object."""
    import numpy as np

    from rshash.data.synthetic import render

    a = np.asarray(render(0, np.random.default_rng(3), noise=0), np.int16)
    b = np.asarray(render(10, np.random.default_rng(3), noise=0), np.int16)
    differs = np.abs(a - b).max(axis=2) > 0
    assert 0.005 < differs.mean() < 0.5  # the objects, not the ground
