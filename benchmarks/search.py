"""Packed-Hamming search throughput of rshash.search on random codes.

For each code length: a random database and random queries, Hamming
distances by popcount on 64-bit words and the top k with ties broken by
database order, exactly as evaluation ranks. Prints queries per second and
the bandwidth-bound time a scan of the codes would take at the measured
memory read bandwidth (a copy of a large array).

Usage: python benchmarks/search.py [--database 100000] [--queries 1000] [--top 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rshash.search import hamming_distances, topk


def read_bandwidth(nbytes: int = 1 << 28) -> float:
    """Bytes per second of a large sequential read (a sum over a big array)."""
    a = np.ones(nbytes // 8, dtype=np.uint64)
    a.sum()  # touch the pages
    tic = time.perf_counter()
    a.sum()
    return nbytes / (time.perf_counter() - tic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--bits", type=int, nargs="+", default=[64, 256])
    a = p.parse_args()

    bandwidth = read_bandwidth()
    print(f"database {a.database:,} codes, {a.queries:,} queries, top {a.top}; "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s")
    rng = np.random.default_rng(0)
    for bits in a.bits:
        db = rng.integers(0, 256, size=(a.database, bits // 8), dtype=np.uint8)
        q = rng.integers(0, 256, size=(a.queries, bits // 8), dtype=np.uint8)
        tic = time.perf_counter()
        top = topk(hamming_distances(q, db), a.top)
        seconds = time.perf_counter() - tic
        assert top.shape == (a.queries, a.top)
        bound = a.queries * db.nbytes / bandwidth  # every query scans the whole database
        print(f"{bits:4d} bits: {a.queries / seconds:10.1f} queries/s "
              f"({1000 * seconds / a.queries:.3f} ms/query); a scan of the codes per query "
              f"at read bandwidth would take {1000 * bound / a.queries:.3f} ms/query")


if __name__ == "__main__":
    main()
