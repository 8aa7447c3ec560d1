"""Archives of geo-referenced scenes: the scene job's speed, the workflow's planning
time with many scenes, and search with a place filter at scale.

``extract``: the scene job (rshash.archive.geo.embed_scene: windows read with rasterio,
chips embedded in-process) against the folder extraction (rshash.features.extract, the
`extract_features` rule's code, its configured decoding worker) on the same chips,
written once as PNG files (the same pixels: lossless), the same backbone and the same
batch size. Prints each one's chips/s and their ratio (the issue's goal: >= 0.9).

``plan``: ``snakemake -n`` of ``results/archives/big/index`` over ``--scenes`` scenes
(default 1,000 links to one NAIP file, each its own date), timed from the command line
as a user waits for it; then every output is made present (as after a run), one scene is
added and the dry run lists the jobs planned (goal: under 10 s; the new scene's two jobs
and the publication only).

``search``: an index of ``--chips`` (default 1,000,000) synthetic 64-bit codes with
footprints on a grid over North Dakota and dates over ten years; single queries, each
with a random box (about 1% of the area) and a two-year date range, through the one query
path (rshash.archive.query.search); prints p50 / p99 per thread count (goal: p99 under
50 ms on 2 cores).

``water``: on an index of the NAIP scenes (default results/archives/naip/index), the
most watery chip of each date as the query: the share of water among its first ten
results, water told by the scene's own NIR band (NIR below red).

Usage: python benchmarks/geo_archive.py extract [--scenes 3]
       python benchmarks/geo_archive.py plan [--scenes 1000]
       python benchmarks/geo_archive.py search [--chips 1000000] [--queries 300]
       python benchmarks/geo_archive.py water [--index results/archives/naip/index]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RSHASH_DATA_DIR", REPO.parent / "shared" / "datasets"))
NAIP = DATA / "geo" / "naip"
ENTRY = {
    "scenes": {"folder": str(NAIP), "date_pattern": r"_(?P<date>\d{8})", "date_format": "%Y%m%d"},
    "chip": {"size": 64},
}


def bench_extract(a) -> None:
    from PIL import Image

    from rshash.archive.geo import embed_scene
    from rshash.archive.scenes import ChipSpec, chip_scene, list_scenes
    from rshash.data.manifest import scan_folder, write_manifest
    from rshash.features import extract

    scenes = list_scenes(ENTRY["scenes"])[: a.scenes]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = 0
        for s in scenes:  # the same chips as files, for the folder extraction
            _, pixels = chip_scene(s, ChipSpec.from_entry(ENTRY, "bench"))
            for i, chip in enumerate(pixels):
                folder = tmp / "chips" / "all"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(chip).save(folder / f"{s.id}_{i:05d}.png")
                n += 1
        write_manifest(scan_folder(tmp / "chips"), tmp / "manifest.parquet")
        timings = {}
        for _ in range(a.repeats):
            t = time.perf_counter()
            for s in scenes:
                embed_scene(ENTRY, s.id, a.backbone, tmp / f"{s.id}.h5", threads=a.threads)
            timings.setdefault("scene job", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            extract(
                tmp / "manifest.parquet",
                a.backbone,
                tmp / "folder.h5",
                threads=a.threads,
                num_workers=1,
                progress=False,
            )
            timings.setdefault("folder extraction", []).append(time.perf_counter() - t)
    print(f"{n} chips of 64 x 64 px from {len(scenes)} NAIP scenes, {a.backbone}, "
          f"{a.threads} threads, best of {a.repeats}")  # fmt: skip
    rate = {k: n / min(v) for k, v in timings.items()}
    for k, r in rate.items():
        print(f"  {k:<18} {r:7.1f} chips/s")
    print(f"  scene job / folder extraction: {rate['scene job'] / rate['folder extraction']:.2f}")
    print(
        f"  (the scene job runs once per scene: model loading counted {len(scenes)} times, "
        "the folder extraction's once)"
    )


# as a user runs it: Python caches compiled modules (where PYTHONDONTWRITEBYTECODE is set,
# every run compiles Snakemake's and rshash's ~1,750 modules again: about 5 s more)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _dry_run(work: Path, *how: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", str(work / "config.yaml"),
         "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "results/archives/big/index", *(how or ["-n"])],
        capture_output=True, text=True, env=ENV | {"RSHASH_DATA_DIR": str(work / "data")},
    )  # fmt: skip
    took = time.perf_counter() - t
    if out.returncode:
        sys.exit(out.stdout[-2000:] + out.stderr[-3000:])
    return took, out.stdout


def _stats(text: str) -> dict:
    stats = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"
    }


def bench_plan(a) -> None:
    import yaml

    source = sorted(NAIP.glob("*.tif"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "data" / "big"
        folder.mkdir(parents=True)
        start = np.datetime64("2000-01-01")
        names = []
        for i in range(a.scenes + 1):
            day = str(start + i).replace("-", "")
            names.append(f"scene{i:05d}_{day}")
        for name in names[:-1]:
            (folder / f"{name}.tif").symlink_to(source)
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())
        cfg["archives"] = {
            "big": {
                "scenes": {
                    "folder": "big",
                    "date_pattern": r"_(?P<date>\d{8})",
                    "date_format": "%Y%m%d",
                }
            }  # fmt: skip
        }
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        _dry_run(work)  # once first: modules compiled and cached, as on any machine in use
        took, out = _dry_run(work)
        print(f"snakemake -n with {a.scenes} scenes: {took:.1f} s; planned {_stats(out)}")
        # as after a run: every output present, with Snakemake's records of the jobs
        # that made them (`--touch --forceall` writes them without running a command),
        # and the archive's model recording the scenes it was fitted on
        from rshash.digest import write_npz

        res = work / "results" / "archives" / "big"
        for kind in ("features", "parts"):
            (res / kind).mkdir(parents=True)
        for name in names[:-1]:
            (res / "features" / f"{name}.h5").touch()
            (res / "parts" / f"{name}.part").touch()
        write_npz(res / "hash.npz", {"fitted_on": {"scenes": names[:-1]}}, {})
        (res / "index").touch()
        (res / "chips.parquet").touch()
        _dry_run(work, "--touch", "--forceall", "--cores", "1")
        took, out = _dry_run(work)
        print(f"  with every output present: {took:.1f} s; planned {_stats(out) or 'nothing'}")
        (folder / f"{names[-1]}.tif").symlink_to(source)
        took, out = _dry_run(work)
        print(f"  one scene added: {took:.1f} s; planned {_stats(out)}")
        if os.environ.get("BENCH_DEBUG"):
            print(out[-3000:])


def synthetic_geo_index(location: Path, n: int, seed: int = 0):
    """An index of n random 64-bit codes whose chips tile North Dakota's extent
    (320 m chips, about 0.004 x 0.003 degrees) over ten years of dates."""
    from rshash.archive.store import FORMAT, VERSION, Rows, create_index

    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    west = -104.0 + (i % side) * (7.4 / side)
    south = 45.9 + (i // side) * (3.1 / side)
    dx, dy = 0.0042, 0.0029
    fp = np.stack(
        [np.stack([west, south + dy], 1), np.stack([west + dx, south + dy], 1),
         np.stack([west + dx, south], 1), np.stack([west, south], 1)], 1,
    )  # fmt: skip
    geo = {
        "scene": (i // 1000).astype(np.int32),
        "window": np.zeros((n, 4), np.int32),
        "footprint": fp,
        "lonlat_bounds": np.stack([west, south, west + dx, south + dy], 1),
        "date": rng.integers(10957, 10957 + 3652, n).astype(np.int32),
    }
    ids = np.array([f"s{k // 1000:05d}/{k % 1000}" for k in range(n)])
    scenes = [{"id": f"s{k:05d}"} for k in range(-(-n // 1000))]
    header = {"format": FORMAT, "version": VERSION, "backbone": "none", "method": "random",
              "bits": 64, "model": None, "model_sha256": None, "source": "synthetic",
              "class_names": [], "geo": {"chip": {}, "scenes": scenes}}  # fmt: skip
    rows = Rows(packed, ids, np.full(n, ""), np.full(n, -1, np.int64), None, geo)
    return create_index(location, header, rows)


def bench_search(a) -> None:
    from rshash.archive.query import Place, search

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        index = synthetic_geo_index(Path(tmp) / "index", a.chips)
        print(
            f"{len(index):,} synthetic chips written and opened in {time.perf_counter() - t:.1f} s"
        )
        queries = rng.integers(0, 256, (a.queries, 8), dtype=np.uint8)
        places = []
        for _ in range(a.queries):
            w, s = rng.uniform(-104, -97.4), rng.uniform(45.9, 48.7)
            year = int(rng.integers(2000, 2008))
            places.append(
                Place.of((w, s, w + 0.74, s + 0.31), f"{year}-01-01", f"{year + 1}-12-31")
            )
        for threads in (1, 2):
            search(index, queries[:1], 20, place=places[0], threads=threads)  # compile, page in
            times, found = [], 0
            for q, place in zip(queries, places):
                t = time.perf_counter()
                (page,) = search(index, q[None], 20, place=place, threads=threads)
                times.append(time.perf_counter() - t)
                found += page.total
            ms = np.array(times) * 1000
            print(
                f"  box + dates, k=20, {threads} thread(s): p50 {np.percentile(ms, 50):.1f} ms, "
                f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms "
                f"({found / len(times):,.0f} chips qualify per query on average)"
            )
            times = []
            for q in queries[: a.queries // 3]:
                t = time.perf_counter()
                search(index, q[None], 20, threads=threads)
                times.append(time.perf_counter() - t)
            ms = np.array(times) * 1000
            print(f"  no filter,   k=20, {threads} thread(s): p50 {np.percentile(ms, 50):.1f} ms, "
                  f"p99 {np.percentile(ms, 99):.1f} ms")  # fmt: skip


def water_share(index, row: int) -> float:
    """The share of a chip's pixels that are open water: NIR (NAIP band 4) below red
    (band 1), i.e. NDVI < 0 (read from the scene; as tests/test_archive_workflow.py)."""
    import rasterio
    from rasterio.windows import Window

    geo = index.geo_of(row)
    with rasterio.open(geo["scene"]["href"]) as ds:
        red, nir = ds.read([1, 4], window=Window(*geo["window"])).astype(np.int16)
    return float((nir < red).mean())


def bench_water(a) -> None:
    from rshash.archive import read_index, search_ids

    index = read_index(a.index)
    water = np.array([water_share(index, r) for r in range(len(index))])
    scene_of = np.asarray(index._all.geo["scene"])
    print(f"{a.index}: {len(index)} chips, bands {index.scenes[0]['bands']}; water chips "
          f"(more than half NIR < red): {np.mean(water > 0.5):.2f} of all")  # fmt: skip
    precision = []
    for s, meta in enumerate(index.scenes):
        rows = np.flatnonzero(scene_of == s)
        query = int(rows[np.argmax(water[rows])])
        (res,) = search_ids(index, [index.image_id_of(query)], top=11)
        hits = [int(r) for r in res.page.rows if r != query][:10]
        other = [r for r in hits if scene_of[r] != s]
        precision.append(np.mean(water[hits] > 0.5))
        print(f"  {meta['date']}: the most watery chip's first 10 results: "
              f"{precision[-1]:.1f} water; {len(other)} of other dates, "
              f"{int(np.sum(water[other] > 0.5))} of them water")  # fmt: skip
    print(f"  mean precision of water at 10: {np.mean(precision):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("extract")
    e.add_argument("--scenes", type=int, default=3)
    e.add_argument("--backbone", default="efficientnet_lite0")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--repeats", type=int, default=2)
    pl = sub.add_parser("plan")
    pl.add_argument("--scenes", type=int, default=1000)
    s = sub.add_parser("search")
    s.add_argument("--chips", type=int, default=1_000_000)
    s.add_argument("--queries", type=int, default=300)
    w = sub.add_parser("water")
    w.add_argument("--index", default="results/archives/naip/index")
    a = p.parse_args()
    run = {"extract": bench_extract, "plan": bench_plan, "search": bench_search,
           "water": bench_water}  # fmt: skip
    run[a.what](a)


if __name__ == "__main__":
    main()
