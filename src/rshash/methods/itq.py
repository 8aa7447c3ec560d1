"""ITQ: iterative quantization (Gong and Lazebnik, CVPR 2011).

PCA to ``bits`` dimensions (scikit-learn), then an orthogonal rotation R
that minimizes the quantization error ||B - V R||_F by alternating
B = sign(V R) and the orthogonal Procrustes solution for R. The alternation
itself is a few lines of numpy; no maintained library ships it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rshash import RshashError
from rshash.methods.base import Encoded, HashMethod, sign_bits
from rshash.params import Params, param


@dataclass(frozen=True, kw_only=True)
class ITQParams(Params):
    # the paper's 50 iterations (Gong and Lazebnik, sec. 3.2)
    n_iter: int = param(50, min=0, max=100_000)


class ITQ(HashMethod):
    name = "itq"
    Params = ITQParams
    state_names = ("mean", "P", "R")

    def _fit(self, X, y):
        from sklearn.decomposition import PCA  # here: the declaration is read at parse time

        if self.bits > min(X.shape):
            raise RshashError(
                f"itq: {self.bits} bits exceed the PCA rank min(n, d) = {min(X.shape)}"
            )
        rng = np.random.default_rng(self.seed)
        pca = PCA(n_components=self.bits, svd_solver="full").fit(X)
        self.mean = pca.mean_.astype(np.float32)
        self.P = pca.components_.T.astype(np.float32)
        V = (X - self.mean) @ self.P
        R, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        for _ in range(self.n_iter):
            B = np.where(V @ R >= 0, 1.0, -1.0)
            U, _, Wt = np.linalg.svd(V.T @ B)
            R = U @ Wt
        self.R = R.astype(np.float32)

    def encode(self, X):
        value = ((np.asarray(X, dtype=np.float32) - self.mean) @ self.P @ self.R).astype(np.float32)
        return Encoded(bits=sign_bits(value), value=value)


METHOD = ITQ
