"""The Hamming engine (numpy and numba, no torch): exact search over packed binary
codes, from the compiled kernels up to sharded search.

- :mod:`~rshash.hamming.kernels`: the compiled passes (distances, top-k by
  counting, ranges);
- :mod:`~rshash.hamming.mih`: multi-index hashing tables;
- :mod:`~rshash.hamming.index`: :class:`BinaryIndex` (faiss's shape: ``add``,
  ``search(q, k) -> (D, I)``, ``range_search``, ``write`` / ``read_binary_index``)
  and the functional helpers evaluation uses;
- :mod:`~rshash.hamming.shards`: :class:`ShardedIndex` and :func:`merge_topk`, the
  one exact merge every sharded search (an archive's segments included) ranks
  through.
"""

from rshash.hamming.index import (
    BinaryIndex,
    as_index,
    hamming_distances,
    hamming_rank,
    hamming_topk,
    read_binary_index,
)
from rshash.hamming.shards import ShardedIndex, merge_topk, write_shards

__all__ = [
    "BinaryIndex",
    "ShardedIndex",
    "as_index",
    "hamming_distances",
    "hamming_rank",
    "hamming_topk",
    "merge_topk",
    "read_binary_index",
    "write_shards",
]
