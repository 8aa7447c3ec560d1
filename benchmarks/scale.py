"""Memory at scale: extraction and evaluation on synthetic datasets of growing size.

For each size N (default 10,000 and 100,000 images) it generates N small
synthetic tiles (10 classes, PNG), then runs each stage in its own process
and reads that process's peak RSS from the kernel (os.wait4; the maximum
over the process and the decode workers it waited for):

* extract: ``rshash.features.extract`` (decode, resize, forward, HDF5 write),
  images per second;
* evaluate: ``rshash.evaluate.evaluate_cell`` of LSH codes (random
  hyperplanes on the features, computed in row chunks) under dmch_60_40,
  queries per second.

The goal: each stage's peak RSS at the largest size within 1.5x of that at
the smallest, and under 4 GiB. A small tile and backbone input size keep the
run short on 2 cores; memory is what is measured.

Usage: python benchmarks/scale.py [--sizes 10000 100000] [--tile 32] [--input-size 64]
       [--batch-size 64] [--num-workers 1] [--threads 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

PROTOCOL = {"train_fraction": 0.6, "database": "train", "map_cutoffs": ["all", 20]}
GOAL_RATIO, GOAL_BYTES = 1.5, 4 << 30


def _render_class(job: tuple[Path, int, int, int]) -> None:
    from rshash.data.synthetic import class_names, render

    root, label, per_class, tile = job
    name = class_names(10)[label]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([0, label])
    for i in range(per_class):
        render(label, rng, size=tile).save(folder / f"{name}_{i:05d}.png")


def make_dataset(root: Path, n: int, tile: int, processes: int) -> Path:
    """``root/images`` of n tiles in 10 classes, its manifest and a dmch_60_40 split."""
    from rshash.data.manifest import scan_folder, write_manifest
    from rshash.data.splits import make_split, write_split

    with Pool(processes) as pool:
        pool.map(_render_class, [(root / "images", c, n // 10, tile) for c in range(10)])
    manifest = scan_folder(root / "images")
    write_manifest(manifest, root / "manifest.parquet")
    write_split(make_split(manifest, PROTOCOL, seed=0), root / "split.parquet")
    return root


def stage_extract(a) -> None:
    from rshash.features import extract

    extract(
        a.root / "manifest.parquet",
        "efficientnet_lite0",
        a.root / "features.h5",
        threads=a.threads,
        batch_size=a.batch_size,
        device="cpu",
        num_workers=a.num_workers,
        progress=False,
        input_size=a.input_size,
    )


def stage_codes(a) -> None:
    """LSH codes (sign of random projections), computed chunk by chunk from the HDF5."""
    import h5py

    from rshash.codes import pack_bits, write_codes
    from rshash.data.splits import read_split

    split = read_split(a.root / "split.parquet")
    with h5py.File(a.root / "features.h5", "r") as f:
        feats, ids = f["features"], f["image_id"].asstr()[...]
        labels = f["label"][...]
        planes = np.random.default_rng(0).standard_normal((feats.shape[1], a.bits))
        bits = np.concatenate([feats[i : i + 8192] @ planes > 0 for i in range(0, len(ids), 8192)])
    row = {image_id: i for i, image_id in enumerate(ids)}
    idx = split.image_id.map(row).to_numpy()
    write_codes(
        a.root / "codes.parquet",
        ids[idx],
        labels[idx],
        split.role.to_numpy(),
        pack_bits(bits[idx]),
        bits[idx] - 0.5,
        a.bits,
    )


def stage_evaluate(a) -> None:
    from rshash.evaluate import evaluate_cell

    evaluate_cell(
        a.root / "codes.parquet",
        a.root / "split.parquet",
        a.root / "metrics.json",
        protocol=PROTOCOL,
    )


STAGES = {"extract": stage_extract, "codes": stage_codes, "evaluate": stage_evaluate}


def run_stage(name: str, a, root: Path) -> tuple[float, int]:
    """Run one stage in a fresh process: (seconds, peak RSS in bytes)."""
    args = [
        sys.executable,
        __file__,
        "--stage",
        name,
        "--root",
        str(root),
        "--threads",
        str(a.threads),
        "--batch-size",
        str(a.batch_size),
        "--num-workers",
        str(a.num_workers),
        "--input-size",
        str(a.input_size),
        "--bits",
        str(a.bits),
    ]
    tic = time.perf_counter()
    proc = subprocess.Popen(args)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - tic
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"stage {name} at {root} failed")
    return seconds, usage.ru_maxrss * 1024  # kilobytes on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--tile", type=int, default=32, help="side of the generated PNG tiles")
    p.add_argument("--input-size", type=int, default=64, help="backbone input side")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--workdir", help="keep the datasets here (default: a temporary folder)")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.stage:
        STAGES[a.stage](a)
        return

    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        results = {}
        for n in a.sizes:
            root = Path(tmp) / str(n)
            tic = time.perf_counter()
            make_dataset(root, n, a.tile, max(1, a.threads))
            print(f"{n} images: generated in {time.perf_counter() - tic:.0f} s", flush=True)
            for stage in STAGES:
                seconds, rss = run_stage(stage, a, root)
                results[n, stage] = (seconds, rss)
                n_items = n if stage != "evaluate" else round(n * 0.4)
                unit = "queries" if stage == "evaluate" else "images"
                print(
                    f"{n:>7} {stage:<8} {seconds:7.1f} s {n_items / seconds:9.1f} {unit}/s  "
                    f"peak RSS {rss / 2**20:7.0f} MiB",
                    flush=True,
                )
            (root / "features.h5").unlink()  # free the disk before the next size
    small, large = min(a.sizes), max(a.sizes)
    ok = True
    for stage in ("extract", "evaluate"):
        ratio = results[large, stage][1] / results[small, stage][1]
        fine = ratio <= GOAL_RATIO and results[large, stage][1] < GOAL_BYTES
        ok &= fine
        print(
            f"{stage}: peak RSS at {large} / at {small} = {ratio:.2f} "
            f"(goal <= {GOAL_RATIO}, < 4 GiB): {'ok' if fine else 'MISSED'}"
        )
    print(
        json.dumps(
            {
                f"{n}/{s}": {"seconds": round(v[0], 1), "peak_rss_mib": round(v[1] / 2**20)}
                for (n, s), v in results.items()
            }
        )
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
