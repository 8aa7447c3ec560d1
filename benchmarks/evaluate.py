"""Evaluation at NWPU-RESISC45 scale: every query against the whole archive.

Writes a synthetic codes file and split of ``--images`` images (default
31,500 in 45 classes of 700, NWPU-RESISC45's size) where every image is both
query and database item (leave-one-out, the heaviest protocol: 31,500 x
31,500 pairs), then times ``rshash.evaluate.evaluate_cell`` (reading the
Parquet files, every metric and curve, writing the JSON) under the Hamming
ranking at each ``--bits``, on one thread and on all threads. Codes are
noisy copies of one random code per class, so the metrics are not trivial.

For comparison it also times the evaluation the one-pass scoring replaced,
on the first ``--reference-queries`` queries: rankings materialized in
query blocks (``hamming_rank``) and scored by the numpy definitions in
rshash.metrics; extrapolated to all queries. Both must give the same
metrics on those queries.

Usage: python benchmarks/evaluate.py [--images 31500] [--classes 45] [--bits 32 64 128 256]
       [--reference-queries 3150] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from rshash.codes import write_codes
from rshash.data.splits import read_split, write_split
from rshash.evaluate import evaluate_arrays, evaluate_cell
from rshash.hamming import hamming_distances, hamming_rank
from rshash.metrics import hamming_pr, nmrr, per_query

PROTOCOL = {"map_cutoffs": ["all", 20]}


def make_cell(root: Path, n: int, classes: int, bits: int, seed: int = 0):
    """A codes file and a leave-one-out split of n images; returns their paths and arrays."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.integers(0, 2, (classes, bits), dtype=np.uint8)
    bits01 = centres[labels] ^ (rng.random((n, bits)) < 0.2).astype(np.uint8)
    packed = np.packbits(bits01, axis=1)
    ids = np.array([f"img{i:06d}" for i in range(n)])
    codes, split = root / f"codes{bits}.parquet", root / "split.parquet"
    write_codes(
        codes,
        np.concatenate([ids, ids]),
        np.concatenate([labels, labels]),
        ["query"] * n + ["database"] * n,
        np.concatenate([packed, packed]),
        np.concatenate([bits01, bits01]).astype(np.float32) - 0.5,
        bits,
    )
    write_split(
        pd.DataFrame(
            {
                "image_id": np.concatenate([ids, ids]),
                "role": ["query"] * n + ["database"] * n,
                "db_order": np.concatenate([np.full(n, -1), rng.permutation(n)]),
            }
        ),
        split,
    )
    order = read_split(split).query("role == 'database'").db_order.to_numpy()
    db_rows = np.argsort(order)  # database in db_order, as evaluate_cell puts it
    return codes, split, packed, labels, db_rows


def reference(packed, labels, db_rows, nq: int, bits: int) -> tuple[float, dict]:
    """Seconds for the first nq queries by rankings materialized in query blocks of
    about 2**21 entries (as rshash evaluated before its one-pass scoring) and the numpy
    metric definitions, and their mean map_all, map_at_20, P@k, R@k, anmrr, p_hamming_r2."""
    db, db_labels = packed[db_rows], labels[db_rows]
    exclude = np.argsort(db_rows)[:nq]  # each query's own position in the database
    ndb = len(db)
    n_rel = (labels[:nq, None] == db_labels[None, :]).sum(1) - 1
    gtm = int(n_rel.max())
    block = max(1, (1 << 21) // ndb)
    values: dict[str, list] = {}
    tic = time.perf_counter()
    for start in range(0, nq, block):
        rows = slice(start, min(start + block, nq))
        m = rows.stop - start
        ranked, _ = hamming_rank(packed[rows], db)
        ranked = ranked[ranked != exclude[rows, None]].reshape(m, ndb - 1)
        rel = db_labels[ranked] == labels[rows, None]
        out = per_query(rel, n_rel[rows], (20,))
        out["anmrr"] = nmrr(rel, n_rel[rows], gtm)
        keep = np.ones((m, ndb), bool)
        keep[np.arange(m), exclude[rows]] = False
        same = db_labels[None, :] == labels[rows, None]
        precision, _ = hamming_pr(
            hamming_distances(packed[rows], db)[keep].reshape(m, -1),
            same[keep].reshape(m, -1),
            bits,
        )
        out["p_hamming_r2"] = precision[:, 2]
        for name, v in out.items():
            values.setdefault(name, []).append(v)
    seconds = time.perf_counter() - tic
    return seconds, {name: float(np.concatenate(v).mean()) for name, v in values.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=31_500)
    p.add_argument("--classes", type=int, default=45)
    p.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--reference-queries", type=int, default=3_150)
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args()
    cores = numba.config.NUMBA_NUM_THREADS
    n = a.images
    print(
        f"{n:,} queries x {n:,} database items (leave-one-out), {a.classes} classes, "
        f"{os.cpu_count()} cores; evaluate_cell, Hamming ranking, every metric and curve"
    )
    print(
        f"reference: blockwise materialized rankings + numpy metrics, timed on the first "
        f"{a.reference_queries:,} queries and scaled to all {n:,}"
    )
    print(
        f"{'bits':>5} {'threads':>8} {'seconds':>8} {'pairs/s':>9} {'map_all':>8} "
        f"{'reference s':>12} {'speed-up':>9}"
    )
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        root = Path(tmp)
        for bits in a.bits:
            codes, split, packed, labels, db_rows = make_cell(root, n, a.classes, bits)
            # compile or load the cached kernels outside the timings
            evaluate_arrays(packed[:4], labels[:4], packed[:50], labels[:50], bits=bits)
            ref_seconds, ref = reference(packed, labels, db_rows, a.reference_queries, bits)
            ref_all = ref_seconds * n / a.reference_queries
            nq = a.reference_queries
            got = evaluate_arrays(
                packed[:nq],
                labels[:nq],
                packed[db_rows],
                labels[db_rows],
                exclude=np.argsort(db_rows)[:nq],
                bits=bits,
            )
            for name, v in ref.items():
                assert abs(got[name] - v) < 1e-12, (name, got[name], v)
            for threads in sorted({1, cores}):
                out = root / f"metrics{bits}_{threads}.json"
                tic = time.perf_counter()
                evaluate_cell(codes, split, out, protocol=PROTOCOL, threads=threads)
                seconds = time.perf_counter() - tic
                result = json.loads(out.read_text())
                assert result["leave_one_out"] and result["n_queries"] == n
                print(
                    f"{bits:>5} {threads:>8} {seconds:>8.2f} {n * n / seconds:>9.2e} "
                    f"{result['metrics']['map_all']:>8.4f} {ref_all:>12.1f} "
                    f"{ref_all / seconds:>8.1f}x",
                    flush=True,
                )
    print(
        "reference: same mean map_all, map_at_20, P@k, R@k, anmrr and p_hamming_r2 "
        "on its queries (to 1e-12)"
    )


if __name__ == "__main__":
    main()
