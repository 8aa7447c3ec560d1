"""rshash: remote-sensing image retrieval with deep hashing.

The library never imports snakemake; the workflow calls it through
``rshash.cli``. Modules that evaluation uses (codes, search, metrics,
evaluate, report) never import torch.
"""

__version__ = "0.1.0"


class RshashError(Exception):
    """An error a user can act on: the message names the file or setting."""
