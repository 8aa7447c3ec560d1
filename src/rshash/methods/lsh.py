"""LSH: random-hyperplane hashing (Charikar 2002) on centred features.

Codes are sign(W (x - mean)) with W drawn from a standard normal; the only
thing learned from the train part is the feature mean. Unsupervised.
"""

from __future__ import annotations

import numpy as np

from rshash.methods.base import Encoded, HashMethod, sign_bits


class LSH(HashMethod):
    name = "lsh"
    state_names = ("mean", "W")

    def _fit(self, X, y):
        rng = np.random.default_rng(self.seed)
        self.mean = X.mean(axis=0)
        self.W = rng.standard_normal((X.shape[1], self.bits)).astype(np.float32)

    def encode(self, X):
        value = ((np.asarray(X, dtype=np.float32) - self.mean) @ self.W).astype(np.float32)
        return Encoded(bits=sign_bits(value), value=value)


METHOD = LSH
