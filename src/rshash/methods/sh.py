"""SH: Spectral Hashing (Weiss, Torralba and Fergus, NIPS 2008).

Follows the authors' MATLAB code (trainSH.m / compressSH.m):

1. PCA to ``min(bits, d)`` directions (scikit-learn, fitted on the train part);
2. fit a uniform distribution on each direction: [a, b] = [min - eps, max + eps];
3. the eigenfunctions of the 1-d Laplacian under a uniform density on [a, b] are
   Phi_k(x) = sin(pi/2 + k pi (x - a) / (b - a)) with eigenvalue proportional to
   (k / (b - a))^2; enumerate k = 1 .. ceil((bits + 1) (b - a) / max(b - a)) on
   every direction and keep the ``bits`` (direction, k) pairs with the smallest
   eigenvalues (stable sort, as MATLAB's ``sort``; the constant k = 0 mode is skipped);
4. bit = Phi_k(x) > 0.

Unsupervised and without parameters. ``value`` is Phi_k(x), the product over
directions in compressSH.m (all other factors are sin(pi/2) = 1).
The few lines of numpy are hand-written: no maintained library ships SH.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from rshash.methods.base import Encoded, HashMethod, sign_bits


def sh_modes(R: np.ndarray, bits: int) -> np.ndarray:
    """The (bits, npca) mode matrix of trainSH.m for direction ranges ``R``:
    row i holds mode k on one direction and 0 elsewhere, rows ordered by
    increasing eigenvalue sum((k pi / R)^2), the constant mode skipped."""
    R = np.asarray(R, dtype=np.float64)
    npca = len(R)
    max_mode = np.ceil((bits + 1) * R / R.max()).astype(int)
    n_modes = int(max_mode.sum()) - npca + 1
    modes = np.zeros((n_modes, npca), dtype=np.int64)  # row 0: the constant mode
    m = 1
    for i in range(npca):
        modes[m : m + max_mode[i] - 1, i] = np.arange(1, max_mode[i])
        m += max_mode[i] - 1
    eig = ((modes * (np.pi / R)) ** 2).sum(axis=1)
    order = np.argsort(eig, kind="stable")
    return modes[order[1 : bits + 1]]


class SH(HashMethod):
    name = "sh"
    state_names = ("mean", "pc", "mn", "mx", "modes")

    def _fit(self, X, y):
        from sklearn.decomposition import PCA  # here: the declaration is read at parse time

        npca = min(self.bits, *X.shape)
        with threadpool_limits(self.threads):  # BLAS threads = self.threads
            pca = PCA(n_components=npca, svd_solver="full").fit(X)
        self.mean = pca.mean_.astype(np.float64)
        self.pc = pca.components_.T.astype(np.float64)
        V = (X.astype(np.float64) - self.mean) @ self.pc
        eps = np.finfo(np.float64).eps  # MATLAB's eps in trainSH.m
        self.mn = V.min(axis=0) - eps
        self.mx = V.max(axis=0) + eps
        self.modes = sh_modes(self.mx - self.mn, self.bits)

    def encode(self, X):
        V = (np.asarray(X, dtype=np.float64) - self.mean) @ self.pc - self.mn
        omegas = self.modes * (np.pi / (self.mx - self.mn))  # (bits, npca)
        value = np.empty((len(V), self.bits), dtype=np.float32)
        for i in range(self.bits):  # bit by bit as compressSH.m: no (n, bits, npca) array
            value[:, i] = np.prod(np.sin(V * omegas[i] + np.pi / 2), axis=1)
        return Encoded(bits=sign_bits(value), value=value)


METHOD = SH
