"""Archive-scale exact Hamming search: rshash's flat scan and multi-index hashing
against faiss's binary indexes, in one run on one machine.

Per size (``--sizes``), code length (``--bits``) and code distribution
(``--distribution``):

* ``random``: uniform random codes, the worst case for multi-index hashing (no
  code is much closer to a query than any other);
* ``clustered``: clusters of 1,000 codes around random centres, each code's
  distance to its centre drawn from the held-out ``csq`` 64-bit codes' distances to
  their class centre on UC Merced (benchmarks/search_scale_calibration.json, made
  by benchmarks/search_scale_calibration.py; scaled by bits/64 at other lengths);
  queries are new codes drawn the same way around random centres.

Engines (``--engines``): ``rshash_flat`` (BinaryIndex, engine flat),
``rshash_mih`` (BinaryIndex, engine auto: multi-index hashing where it pays, the
flat scan where not; ``--force-mih`` forces it), faiss ``IndexBinaryFlat``
(``faiss_flat``), ``IndexBinaryMultiHash`` (``faiss_multihash``: a sweep of its
number of hashes and ``nflip``, the fastest setting kept at each recall),
``IndexBinaryHash`` (``faiss_hash``: a sweep of ``nflip``) and ``IndexBinaryHNSW``
(``faiss_hnsw``, at most ``--hnsw-max`` codes: its build does not fit the time
beyond). Above ``--flat-only-above`` codes only rshash and faiss flat run.

For each k (``--k``): single queries (``--single`` of them, one call each: p50/p99
latency) and a batch of ``--batch`` queries in one call (its time per query), on
1 and 2 threads (``--threads``); queries/s, build time, memory (rshash: codes plus
tables, exact; faiss: the growth of the process's resident memory over the build),
and recall@k of the approximate faiss indexes against the exact answer,
tie-aware (a returned code counts when it lies within the exact k-th distance, as
many as the exact answer has at that distance: faiss breaks ties its own way). One
``bandwidth_bound`` row per size and bits: a single query's flat scan at the
measured read bandwidth (the codes' bytes / bandwidth), the floor for any engine
that reads every code.

``--json``: standard output is one JSON list of rows with the keys ``engine``,
``distribution``, ``n``, ``bits``, ``k``, ``mode`` (single or batch), ``threads``,
``p50_ms``, ``p99_ms``, ``qps``, ``recall``, ``build_s``, ``memory_mb``
(progress and the table go to standard error). faiss is a benchmark-only
dependency: pip install -e '.[bench]'.

Usage: python benchmarks/search_scale.py [--sizes 1000000 10000000 100000000] [--bits 64 128]
    [--k 1 10 100] [--distribution random clustered] [--engines ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search import read_bandwidth  # noqa: E402  (benchmarks/search.py: one home)

from rshash.hamming import BinaryIndex  # noqa: E402

ENGINES = ["rshash_flat", "rshash_mih", "faiss_flat", "faiss_multihash", "faiss_hash", "faiss_hnsw"]
EXACT = {"rshash_flat", "rshash_mih", "faiss_flat"}
CLUSTER = 1000
CALIBRATION = HERE / "search_scale_calibration.json"
SWEEP_MULTIHASH = [(nhash, nflip) for nhash in (2, 3, 4) for nflip in (0, 1, 2)]
SWEEP_HASH = [0, 1, 2, 3]


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def calibration() -> tuple[np.ndarray, dict]:
    """(probability of each distance to the centre, the calibration file)."""
    doc = json.loads(CALIBRATION.read_text())
    hist = np.asarray(doc["held_out_to_centre"], np.float64)
    return hist / hist.sum(), doc


@njit(cache=True)
def _flip(codes, radius, seed):
    """XOR ``radius[i]`` distinct random bits into row i of packed ``codes`` (in place)."""
    np.random.seed(seed)
    bits = codes.shape[1] * 8
    pos = np.arange(bits)
    for i in range(codes.shape[0]):
        for j in range(radius[i]):  # a partial Fisher-Yates shuffle: distinct positions
            s = j + np.random.randint(bits - j)
            pos[j], pos[s] = pos[s], pos[j]
            codes[i, pos[j] >> 3] ^= np.uint8(1 << (7 - (pos[j] & 7)))


def make_codes(dist: str, n: int, nq: int, bits: int, seed: int = 0):
    """(database, queries) packed codes of one distribution."""
    rng = np.random.default_rng(seed)
    nbytes = bits // 8
    if dist == "random":
        return (
            rng.integers(0, 256, (n, nbytes), dtype=np.uint8),
            rng.integers(0, 256, (nq, nbytes), dtype=np.uint8),
        )
    p, _ = calibration()
    centres = rng.integers(0, 256, (max(1, n // CLUSTER), nbytes), dtype=np.uint8)
    scale = bits / 64

    def around(count, salt):
        codes = centres[rng.integers(0, len(centres), count)]
        radius = np.minimum(np.round(rng.choice(len(p), count, p=p) * scale), bits)
        _flip(codes, radius.astype(np.int64), seed + salt)
        return codes

    return around(n, 1), around(nq, 2)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 1e6


def tie_recall(D: np.ndarray, exact_D: np.ndarray) -> float:
    """Mean fraction of the k returned codes within the exact k-th distance, at most
    as many at that distance as the exact answer has (D: the returned true distances)."""
    k = exact_D.shape[1]
    kth = exact_D[:, -1:]
    below = (D < kth).sum(1)
    at = np.minimum((D == kth).sum(1), (exact_D == kth).sum(1))
    return float(np.mean((below + at) / k))


class Engine:
    """One built index: ``search(q, k, threads) -> (D, I)``, its build time and memory."""

    def __init__(self, name, search, build_s, memory_mb, setting="", share=None):
        self.name, self.search, self.build_s, self.memory_mb = name, search, build_s, memory_mb
        self.setting, self.share = setting, share


def faiss_threads(faiss, threads):
    faiss.omp_set_num_threads(threads)


def build_engines(names, db, bits, force_mih):
    """Yield the engines (faiss sweeps yield one per setting)."""
    n = len(db)
    if "rshash_flat" in names or "rshash_mih" in names:
        tic = time.perf_counter()
        flat = BinaryIndex(bits, engine="flat").add(db)
        flat.words_t  # noqa: B018  (converted to words once, here)
        add_s = time.perf_counter() - tic
        if "rshash_flat" in names:
            yield Engine(
                "rshash_flat",
                lambda q, k, t: flat.search(q, k, threads=t),
                add_s,
                flat.stats["code_bytes"] / 1e6,
            )
        if "rshash_mih" in names:
            mih = BinaryIndex(bits, engine="mih" if force_mih else "auto")
            mih._words_t = flat.words_t  # the same codes; only the tables are built here
            tic = time.perf_counter()
            mih.tables()
            build_s = add_s + time.perf_counter() - tic
            st = mih.stats

            def share():
                last = mih.stats["last"]
                return f"{last['mih']}/{last['queries']} by MIH"

            yield Engine(
                "rshash_mih",
                lambda q, k, t: mih.search(q, k, threads=t),
                build_s,
                (st["code_bytes"] + st["tables"]["bytes"]) / 1e6,
                f"m={st['tables']['substrings']} overhead {st['tables']['overhead']}x",
                share,
            )
    if not any(e.startswith("faiss") for e in names):
        return
    import faiss

    def timed(make):
        before, tic = rss_mb(), time.perf_counter()
        index = make()
        return index, time.perf_counter() - tic, max(rss_mb() - before, n * bits / 8 / 1e6)

    def wrap(index):
        def search(q, k, t):
            faiss_threads(faiss, t)
            return index.search(q, k)

        return search

    if "faiss_flat" in names:
        index, s, mb = timed(lambda: _faiss_add(faiss.IndexBinaryFlat(bits), db))
        yield Engine("faiss_flat", wrap(index), s, mb)
        del index
    if "faiss_multihash" in names:
        b = max(8, min(bits // 2, round(math.log2(n))))
        for nhash in sorted({h for h, _ in SWEEP_MULTIHASH}):
            if nhash * b > bits:
                continue
            index, s, mb = timed(
                lambda h=nhash: _faiss_add(faiss.IndexBinaryMultiHash(bits, h, b), db)
            )
            for h, nflip in SWEEP_MULTIHASH:
                if h == nhash:
                    index.nflip = nflip
                    yield Engine(
                        "faiss_multihash", wrap(index), s, mb, f"nhash={nhash} b={b} nflip={nflip}"
                    )
            del index
    if "faiss_hash" in names:
        b = max(8, min(bits, round(math.log2(n))))
        index, s, mb = timed(lambda: _faiss_add(faiss.IndexBinaryHash(bits, b), db))
        for nflip in SWEEP_HASH:
            index.nflip = nflip
            yield Engine("faiss_hash", wrap(index), s, mb, f"b={b} nflip={nflip}")
        del index
    if "faiss_hnsw" in names:
        index, s, mb = timed(lambda: _faiss_add(faiss.IndexBinaryHNSW(bits, 16), db))
        for ef in (64, 256):
            index.hnsw.efSearch = ef
            yield Engine("faiss_hnsw", wrap(index), s, mb, f"M=16 efSearch={ef}")
        del index


def _faiss_add(index, db):
    index.add(db)
    return index


def measure(engine, q_single, q_batch, k, threads, exact):
    """Rows of one engine at one k: single queries and a batch, per thread count."""
    rows = []
    for t in threads:
        engine.search(q_single[:2], k, t)  # warm (compilation, caches)
        lat = []
        for i in range(len(q_single)):
            tic = time.perf_counter()
            engine.search(q_single[i : i + 1], k, t)
            lat.append(time.perf_counter() - tic)
        share_single = engine.share() if engine.share else ""
        tic = time.perf_counter()
        D, _ = engine.search(q_batch, k, t)
        batch_s = time.perf_counter() - tic
        recall = None if engine.name in EXACT else tie_recall(D, exact[k][0])
        if engine.name in EXACT and not np.array_equal(D, exact[k][0]):
            raise SystemExit(f"{engine.name}: distances differ from the exact answer at k={k}")
        lat_ms = 1e3 * np.array(lat)
        for mode, p50, p99, qps in (
            ("single", np.percentile(lat_ms, 50), np.percentile(lat_ms, 99), 1e3 / lat_ms.mean()),
            ("batch", 1e3 * batch_s / len(q_batch), None, len(q_batch) / batch_s),
        ):
            rows.append(
                {
                    "engine": engine.name,
                    "k": k,
                    "mode": mode,
                    "threads": t,
                    "p50_ms": round(float(p50), 4),
                    "p99_ms": None if p99 is None else round(float(p99), 4),
                    "qps": round(float(qps), 1),
                    "recall": None if recall is None else round(recall, 4),
                    "build_s": round(engine.build_s, 3),
                    "memory_mb": round(engine.memory_mb, 1),
                    "_setting": engine.setting,
                    "_share": (share_single if mode == "single" else engine.share())
                    if engine.share
                    else "",
                }
            )
    return rows


def pareto(rows):
    """Of an approximate engine's settings, the fastest at each recall: rows no other row
    beats on both speed and recall (per k, mode, threads)."""
    kept = []
    for r in rows:
        peers = [
            o
            for o in rows
            if (o["k"], o["mode"], o["threads"]) == (r["k"], r["mode"], r["threads"])
        ]
        if not any(
            o is not r
            and o["recall"] >= r["recall"]
            and o["p50_ms"] <= r["p50_ms"]
            and (o["recall"] > r["recall"] or o["p50_ms"] < r["p50_ms"])
            for o in peers
        ):
            kept.append(r)
    return kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument(
        "--distribution",
        nargs="+",
        default=["random", "clustered"],
        choices=["random", "clustered"],
    )
    p.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--single", type=int, default=100, help="single queries timed one by one")
    p.add_argument("--batch", type=int, default=1000, help="queries in the batch call")
    p.add_argument("--hnsw-max", type=int, default=1_000_000)
    p.add_argument("--flat-only-above", type=int, default=10_000_000)
    p.add_argument("--force-mih", action="store_true", help="rshash_mih never falls back")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    a = p.parse_args()
    if any(e.startswith("faiss") for e in a.engines):
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise SystemExit("faiss is not installed: pip install -e '.[bench]'") from None

    _, doc = calibration()
    log(
        "calibration (csq 64 bits, UC Merced): mean distance to the class centre "
        f"{doc['means']['held_out_to_centre']} bits (held-out codes), within-class pairs "
        f"{doc['means']['held_out_within_class']}"
    )
    bandwidth = read_bandwidth()
    log(f"read bandwidth {bandwidth / 1e9:.2f} GB/s")
    rows = []
    for n in a.sizes:
        for bits in a.bits:
            code_mb = n * bits / 8 / 1e6
            rows.append(
                {
                    "engine": "bandwidth_bound",
                    "distribution": None,
                    "n": n,
                    "bits": bits,
                    "k": None,
                    "mode": "single",
                    "threads": 1,
                    "p50_ms": round(1e3 * code_mb * 1e6 / bandwidth, 4),
                    "p99_ms": None,
                    "qps": round(bandwidth / (code_mb * 1e6), 1),
                    "recall": None,
                    "build_s": None,
                    "memory_mb": round(code_mb, 1),
                }
            )
            for dist in a.distribution:
                tic = time.perf_counter()
                db, q = make_codes(dist, n, a.single + a.batch, bits)
                q_single, q_batch = q[: a.single], q[a.single :]
                log(f"{dist} n={n:,} bits={bits}: codes made in {time.perf_counter() - tic:.1f} s")
                if dist == "clustered":
                    d = np.unpackbits(q_single[:1] ^ db[:100000], axis=1).sum(1)
                    log(
                        f"  synthetic: nearest of 100,000 to a query {d.min()}, mean {d.mean():.1f}"
                    )
                exact_index = BinaryIndex(bits, engine="flat").add(db)
                exact = {k: exact_index.search(q_batch, k, threads=max(a.threads)) for k in a.k}
                del exact_index
                names = a.engines
                if n > a.flat_only_above:
                    names = [e for e in names if e in ("rshash_flat", "rshash_mih", "faiss_flat")]
                if n > a.hnsw_max:
                    names = [e for e in names if e != "faiss_hnsw"]
                for engine in build_engines(names, db, bits, a.force_mih):
                    found = []
                    for k in a.k:
                        found += measure(engine, q_single, q_batch, k, a.threads, exact)
                    for r in found:
                        r.update(distribution=dist, n=n, bits=bits)
                        log(
                            f"  {r['engine']:16} k={r['k']:<4} {r['mode']:6} t={r['threads']} "
                            f"p50 {r['p50_ms']:9.3f} ms  p99 {r['p99_ms'] or 0:9.3f} ms  "
                            f"{r['qps']:10.1f} q/s  recall {r['recall'] or 1:.3f}  "
                            f"build {r['build_s']:.1f} s  {r['memory_mb']:.0f} MB  "
                            f"{r['_setting']} {r['_share']}"
                        )
                    rows += found
    exact_rows = [r for r in rows if r["engine"] in EXACT or r["engine"] == "bandwidth_bound"]
    approx = [r for r in rows if r not in exact_rows]
    groups = {}
    for r in approx:
        groups.setdefault((r["engine"], r["distribution"], r["n"], r["bits"]), []).append(r)
    rows = exact_rows + [r for g in groups.values() for r in pareto(g)]
    summary(rows)
    if a.json:
        keys = ["engine", "distribution", "n", "bits", "k", "mode", "threads", "p50_ms",
                "p99_ms", "qps", "recall", "build_s", "memory_mb"]  # fmt: skip
        print(json.dumps([{key: r[key] for key in keys} for r in rows], indent=1))
    else:
        for r in rows:
            print(json.dumps(r))


def summary(rows) -> None:
    """Single-query p50 of each engine against rshash's flat scan and the bandwidth bound."""
    bound = {(r["n"], r["bits"]): r["p50_ms"] for r in rows if r["engine"] == "bandwidth_bound"}
    flat = {
        (r["distribution"], r["n"], r["bits"], r["k"], r["threads"]): r["p50_ms"]
        for r in rows
        if r["engine"] == "rshash_flat" and r["mode"] == "single"
    }
    log("\nsingle queries, 1 thread: p50 ms (x faster than rshash flat; x faster than the bound)")
    for r in rows:
        if r["mode"] != "single" or r["threads"] != 1 or r["engine"] == "bandwidth_bound":
            continue
        ms = r["p50_ms"]
        f = flat.get((r["distribution"], r["n"], r["bits"], r["k"], 1))
        vs_flat = "" if f is None else f"{f / ms:7.1f}x flat"
        log(
            f"  {r['distribution']:9} n={r['n']:<10,} bits={r['bits']:<3} k={r['k']:<3} "
            f"{r['engine']:16} {ms:9.3f} ms  {vs_flat}  "
            f"{bound[(r['n'], r['bits'])] / ms:7.2f}x bound  recall {r['recall'] or 1:.3f} "
            f"{r.get('_setting', '')}"
        )


if __name__ == "__main__":
    main()
