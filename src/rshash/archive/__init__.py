"""Search an archive: index any folder of images with a trained model, query it
with images, ids or codes, and grow or shrink the index while it is being searched.

Where a query goes, layer by layer (each imports only those above it):

- :mod:`~rshash.archive.store`: segments, the manifest, the writers' lock and
  atomic publication; :class:`Index` (``search(q, k) -> (D, I)`` over segments);
- :mod:`~rshash.archive.encoder`: folder scanning and the encoder (model and
  backbone; torch);
- :mod:`~rshash.archive.build`: build, append, remove;
- :mod:`~rshash.archive.query`: the one query path (filters, feedback, pages)
  that ``rshash search``, this API and ``rshash serve`` share;
- :mod:`~rshash.archive.present`: results described, as text, JSON, HTML;
- :mod:`~rshash.archive.live`: the index a server watches and reopens.

The Hamming engine underneath is :mod:`rshash.hamming`.
"""

from rshash.archive.build import append_images, build_index, index_from_codes, remove_images
from rshash.archive.encoder import Encoder, scan_images
from rshash.archive.query import Page, Result, search, search_ids, search_images
from rshash.archive.store import Index, Rows, create_index, parts_dir, read_index

__all__ = [
    "Encoder",
    "Index",
    "Page",
    "Result",
    "Rows",
    "append_images",
    "build_index",
    "create_index",
    "index_from_codes",
    "parts_dir",
    "read_index",
    "remove_images",
    "scan_images",
    "search",
    "search_ids",
    "search_images",
]
