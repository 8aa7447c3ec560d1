"""Shards of one id space, and the one exact merge of per-shard top-k lists.

Every sharded search in rshash ranks through :func:`merge_topk`: the shards of
:class:`ShardedIndex`, the segments of an archive (``rshash.archive``), and one
shard per worker of a distributed engine. It is exact because every member of the
global top-k is in its own shard's top-k; ties go to the lower global id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.hamming.index import BinaryIndex, read_binary_index


class ShardedIndex:
    """Shards of one id space, searched side by side and merged exactly.

    ``shards``: :class:`BinaryIndex` objects or paths of index files (read
    memory-mapped), shard i holding the ids after shard i-1's (as
    :func:`write_shards` splits an index). :meth:`search` has BinaryIndex's shape
    and answer: each shard's top-k (its own engine: flat or multi-index) on one
    thread of a pool of ``threads`` (None: one per shard; the kernels release the
    GIL), then per query the shards' lists merged by (distance, global id), which is
    exact because every global top-k member is in its own shard's top-k. The same
    merge serves one shard per worker of a distributed engine (README).
    """

    def __init__(self, shards, mmap: bool = True):
        self.shards = [
            s if isinstance(s, BinaryIndex) else read_binary_index(s, mmap) for s in shards
        ]
        if not self.shards:
            raise RshashError("a sharded index needs at least one shard")
        bits = {s.d for s in self.shards}
        if len(bits) != 1:
            raise RshashError(f"shards of different code lengths: {sorted(bits)} bits")
        self.d = bits.pop()
        self.base = np.concatenate([[0], np.cumsum([s.ntotal for s in self.shards])])

    @property
    def ntotal(self) -> int:
        return int(self.base[-1])

    def __len__(self) -> int:
        return self.ntotal

    @property
    def stats(self) -> list[dict]:
        """Each shard's :attr:`BinaryIndex.stats`."""
        return [s.stats for s in self.shards]

    def search(self, q, k: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        q = np.asarray(q)
        workers = len(self.shards) if threads is None else max(1, int(threads))
        with ThreadPoolExecutor(min(workers, len(self.shards))) as pool:
            parts = list(pool.map(lambda s: s.search(q, k, threads=1), self.shards))
        return merge_topk(parts, self.base[:-1], k)


def merge_topk(parts, bases, k: int, nq: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of shards' answers ``parts`` ((D, I) each, (nq, k_i), as
    :meth:`BinaryIndex.search` gives them, or any (score, id) lists: a shard's may be
    shorter than k), shard i's ids offset by ``bases[i]``: by D, then global id.
    Returns (D, I), (nq, k), padded as faiss pads (D = INT32_MAX for integer
    distances, +inf for real scores; I = -1). ``nq`` is needed only without parts."""
    if not parts:
        return np.full((nq or 0, k), np.iinfo(np.int32).max, np.int32), np.full((nq or 0, k), -1)
    D = np.concatenate([np.asarray(p[0]) for p in parts], axis=1)
    I = np.concatenate(
        [np.where(p[1] >= 0, p[1] + b, -1).astype(np.int64) for p, b in zip(parts, bases)], axis=1
    )
    valid = I >= 0
    if np.issubdtype(D.dtype, np.integer):
        # one int64 key per item (distance above the id; padding after every distance):
        # a single stable argsort, about twice as fast as a lexsort of three keys
        cap = int(D[valid].max(initial=-1)) + 1
        key = np.where(valid, D, cap).astype(np.int64) << 40 | np.where(valid, I, 0)
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        pad = np.iinfo(np.int32).max
    else:
        order = np.lexsort((I, D, ~valid), axis=-1)[:, :k]
        pad = np.inf
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if D.shape[1] < k:
        width = ((0, 0), (0, k - D.shape[1]))
        D, I = np.pad(D, width, constant_values=pad), np.pad(I, width, constant_values=-1)
    return D, I


def write_shards(index: BinaryIndex, paths) -> list:
    """Split ``index`` into len(paths) consecutive id ranges of nearly equal size, one
    index file each (with its tables where a search would use them); returns the paths
    (open them with :class:`ShardedIndex`)."""
    paths = [Path(p) for p in paths]
    cuts = np.linspace(0, index.ntotal, len(paths) + 1).astype(np.int64)
    for path, a, b in zip(paths, cuts[:-1], cuts[1:]):
        shard = BinaryIndex(index.d, engine=index.engine)
        shard.add(index.reconstruct_n(int(a), int(b - a)))
        shard.write(path)
    return paths
