"""``raw``: the real-valued reference, search on the backbone features themselves.

No hashing: ``value`` is the feature vector, bits = 0, ranked by Euclidean
distance. The unsupervised real-valued reference, not an upper bound (a
supervised hash can beat it).
"""

from __future__ import annotations

import numpy as np

from rshash import RshashError
from rshash.methods.base import Encoded, HashMethod


class Raw(HashMethod):
    name = "raw"
    real_valued = True
    state_names = ("dim",)

    def _fit(self, X, y):
        self.dim = np.array(X.shape[1])

    def encode(self, X):
        X = np.asarray(X, dtype=np.float32)
        if X.shape[1] != int(self.dim):
            raise RshashError(
                f"raw: features have {X.shape[1]} dimensions, the model "
                f"was fitted on {int(self.dim)}"
            )
        return Encoded(bits=np.zeros((len(X), 0), np.uint8), value=X)


METHOD = Raw
