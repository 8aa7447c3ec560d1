"""ITQ: iterative quantization (Gong and Lazebnik, CVPR 2011).

PCA to ``bits`` dimensions (scikit-learn), then an orthogonal rotation R
that minimizes the quantization error ||B - V R||_F by alternating
B = sign(V R) and the orthogonal Procrustes solution for R. The alternation
itself is a few lines of numpy; no maintained library ships it.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from rshash import RshashError
from rshash.methods.base import Encoded, HashMethod, sign_bits


class ITQ(HashMethod):
    name = "itq"

    def configure(self, n_iter: int = 50):
        self.n_iter = int(n_iter)

    def _fit(self, X, y):
        if self.bits > min(X.shape):
            raise RshashError(f"itq: {self.bits} bits exceed the PCA rank "
                              f"min(n, d) = {min(X.shape)}")
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

    def state(self):
        return {"mean": self.mean, "P": self.P, "R": self.R}

    def load_state(self, state):
        self.mean, self.P, self.R = state["mean"], state["P"], state["R"]
