"""Packed-Hamming top-k search: rshash's engine against faiss IndexBinaryFlat.

In one run on one machine: random databases of ``--database`` codes at each
``--bits``, ``--queries`` random queries, the top ``--top``, on one thread
and on all threads. Prints queries per second for both, the ratio
ours/faiss (above 1: ours is faster), and the memory-bandwidth bound: the
time to read the database once per query at the read bandwidth measured
here (a numpy sum over a large array), as queries per second; the engine
can beat it because a block of queries shares each read of a database
chunk (cache reuse). Checks that
both return the same top-k distances (the indices may differ within ties:
ours breaks them by database order).

faiss is a benchmark-only dependency: pip install -e '.[bench]'.

Usage: python benchmarks/search.py [--database 1000000] [--queries 1000] [--top 100]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from rshash.hamming import hamming_topk


def read_bandwidth(nbytes: int = 1 << 29, repeats: int = 3) -> float:
    """Bytes per second of a large sequential read (a numpy sum over a big array), best
    of a few."""
    a = np.ones(nbytes // 8, dtype=np.uint64)
    best = np.inf
    for _ in range(repeats):
        tic = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - tic)
    return nbytes / best


def best_time(fn, repeats: int) -> tuple[float, object]:
    """The fastest of ``repeats`` calls (the machine may be shared) and the last result."""
    best, out = np.inf, None
    for _ in range(repeats):
        tic = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - tic)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--bits", type=int, nargs="+", default=[64, 256])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    try:
        import faiss
    except ImportError:
        raise SystemExit("faiss is not installed: pip install -e '.[bench]'") from None

    cores = os.cpu_count() or 1
    bandwidth = read_bandwidth()
    print(
        f"database {a.database:,} codes, {a.queries:,} queries, top {a.top}; {cores} cores; "
        f"read bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    print(
        f"{'bits':>4} {'threads':>7} {'ours q/s':>10} {'faiss q/s':>10} {'ours/faiss':>10} "
        f"{'bandwidth bound q/s':>20}"
    )
    rng = np.random.default_rng(0)
    hamming_topk(rng.integers(0, 256, (2, 8), np.uint8), rng.integers(0, 256, (9, 8), np.uint8), 3)
    for bits in a.bits:
        db = rng.integers(0, 256, size=(a.database, bits // 8), dtype=np.uint8)
        q = rng.integers(0, 256, size=(a.queries, bits // 8), dtype=np.uint8)
        index = faiss.IndexBinaryFlat(bits)
        index.add(db)
        bound = bandwidth / db.nbytes  # queries/s if each query only read the database once
        for threads in sorted({1, cores}):
            faiss.omp_set_num_threads(threads)
            ours_s, (_, ours_d) = best_time(
                lambda q=q, db=db, t=threads: hamming_topk(q, db, a.top, t), a.repeats
            )
            faiss_s, (faiss_d, _) = best_time(lambda q=q, ix=index: ix.search(q, a.top), a.repeats)
            if not np.array_equal(ours_d, faiss_d):
                raise SystemExit(f"{bits} bits: top-{a.top} distances differ from faiss")
            print(
                f"{bits:4d} {threads:7d} {a.queries / ours_s:10.1f} {a.queries / faiss_s:10.1f} "
                f"{faiss_s / ours_s:10.2f} {bound:20.1f}"
            )
    print("top-k distances agree with faiss")


if __name__ == "__main__":
    main()
