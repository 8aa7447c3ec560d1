"""rshash serve at scale: how long a large index takes to open, and query latency
under load through the real HTTP stack.

``open``: an index of ``--codes`` random 64-bit codes (default ten million, ids like
``c3/img_00000042``) is written, then opened (rshash.archive.read_index: every file's
digest checked, the arrays memory-mapped) and searched once; prints the seconds of
each. ``load``: an index of ``--codes`` (default 100,000) random codes is served by
``rshash serve`` in its own process on a free loopback port; ``--clients`` threads
(default 8) each send ``--queries`` (default 200) searches by a random image id
(k = 20; no image to encode) over keep-alive connections; prints p50 / p99 / max
latency, queries per second and the number of errors. The issue's goal: p99 under
50 ms for 100,000 codes on 2 cores.

Usage: python benchmarks/serve.py open [--codes 10000000]
       python benchmarks/serve.py load [--codes 100000] [--clients 8] [--queries 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from rshash.archive.store import FORMAT, VERSION, Rows, create_index, read_index


def random_index(location: Path, n: int, bits: int = 64, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    label = (np.arange(n) % 10).astype(np.int64)
    ids = np.array([f"c{c}/img_{i:08d}" for i, c in enumerate(label)])
    paths = np.char.add("/archive/", np.char.add(ids, ".png"))
    header = {"format": FORMAT, "version": VERSION, "backbone": "none", "method": "random",
              "bits": bits, "model": None, "model_sha256": None, "source": "random",
              "class_names": [f"c{c}" for c in range(10)]}  # fmt: skip
    create_index(location, header, Rows(packed, ids, paths, label))


def bench_open(a) -> None:
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        location = Path(tmp) / "big.idx"
        tic = time.perf_counter()
        random_index(location, a.codes)
        size = location.stat().st_size + sum(
            f.stat().st_size for f in location.with_name("big.idx.parts").iterdir()
        )
        print(f"wrote {a.codes:,} codes in {time.perf_counter() - tic:.1f} s ({size / 1e6:.0f} MB)")
        for _ in range(3):
            tic = time.perf_counter()
            index = read_index(location)
            opened = time.perf_counter() - tic
            tic = time.perf_counter()
            row = index.find(f"c3/img_{a.codes // 2 + 3:08d}")
            found = time.perf_counter() - tic
            tic = time.perf_counter()
            index.search(index.code_of(row), 20)
            searched = time.perf_counter() - tic
            print(f"open {opened:.3f} s ({len(index.segments)} segments, {len(index):,} codes); "
                  f"find an id {found * 1e3:.2f} ms; a top-20 search {searched:.3f} s")  # fmt: skip


def bench_load(a) -> None:
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        location = Path(tmp) / "load.idx"
        random_index(location, a.codes)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        server = subprocess.Popen(
            [sys.executable, "-m", "rshash.cli", "serve", "--index", str(location),
             "--port", str(port)],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(600):
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/")
                    break
                except OSError:
                    time.sleep(0.1)
            latencies, errors = [], []

            def client(seed):
                rng = np.random.default_rng(seed)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                for _ in range(a.queries):
                    i = int(rng.integers(a.codes))
                    url = f"/api/search?k=20&id={quote(f'c{i % 10}/img_{i:08d}', safe='')}"
                    tic = time.perf_counter()
                    try:
                        conn.request("GET", url)
                        r = conn.getresponse()
                        body = r.read()
                        ok = r.status == 200 and len(json.loads(body)["results"]) == 20
                    except (OSError, http.client.HTTPException, ValueError) as exc:
                        ok, body = False, str(exc)
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    latencies.append(time.perf_counter() - tic)
                    if not ok:
                        errors.append(body[:200])

            threads = [threading.Thread(target=client, args=(s,)) for s in range(a.clients)]
            tic = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - tic
        finally:
            server.terminate()
            server.wait()
        ms = np.array(latencies) * 1e3
        print(
            f"{a.codes:,} codes, {a.clients} clients x {a.queries} queries on {os.cpu_count()} "
            f"cores: p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
            f"max {ms.max():.1f} ms, {len(ms) / wall:.0f} queries/s, {len(errors)} errors"
        )
        if errors:
            print("first error:", errors[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("open")
    s.add_argument("--codes", type=int, default=10_000_000)
    s.add_argument("--dir", help="where to write the index (default: the temp folder)")
    s.set_defaults(func=bench_open)
    s = sub.add_parser("load")
    s.add_argument("--codes", type=int, default=100_000)
    s.add_argument("--clients", type=int, default=8)
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--dir", help="where to write the index (default: the temp folder)")
    s.set_defaults(func=bench_load)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
