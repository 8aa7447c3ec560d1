"""PCAH: PCA hashing (the baseline of Wang, Kumar and Chang, "Semi-supervised
hashing for scalable image retrieval", CVPR 2010, and of Gong and Lazebnik's
ITQ paper, CVPR 2011).

PCA to ``bits`` dimensions (scikit-learn, fitted on the train part); each bit
is the sign of one centred principal projection. Unsupervised, no parameters.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from rshash import RshashError
from rshash.methods.base import Encoded, HashMethod, sign_bits


class PCAH(HashMethod):
    name = "pcah"
    state_names = ("mean", "P")

    def _fit(self, X, y):
        from sklearn.decomposition import PCA  # here: the declaration is read at parse time

        if self.bits > min(X.shape):
            raise RshashError(
                f"pcah: {self.bits} bits exceed the PCA rank min(n, d) = {min(X.shape)}"
            )
        with threadpool_limits(self.threads):  # BLAS threads = self.threads
            pca = PCA(n_components=self.bits, svd_solver="full").fit(X)
        self.mean = pca.mean_.astype(np.float32)
        self.P = pca.components_.T.astype(np.float32)

    def encode(self, X):
        value = ((np.asarray(X, dtype=np.float32) - self.mean) @ self.P).astype(np.float32)
        return Encoded(bits=sign_bits(value), value=value)


METHOD = PCAH
