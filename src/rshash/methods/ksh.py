"""KSH: Kernel-Based Supervised Hashing (Liu, Wang, Ji, Jiang and Chang, CVPR 2012).

Follows the authors' MATLAB code (ksh.m, OptProjectionFast.m):

- kernel features: k(x) = exp(-||x - a_j||^2 / (2 sigma)) against ``n_anchors``
  anchors a_j drawn from the train rows, with sigma the mean squared distance
  of the train rows to the anchors (ksh.m: ``sigma = mean(mean(sqdist))``), centred
  by the train mean of k(x); bit t is sign(k(x) . a_t);
- on ``n_labeled`` labelled train rows, S0_ij = +1 for the same class, -1
  otherwise, and the code inner-product loss Q = ||B B^T - r S0||_F^2 with
  r = ``bits``; bits are learned greedily: bit t maximizes y^T R_{t-1} y with the
  residue R_{t-1} = r S0 - sum_{s<t} y_s y_s^T and y = sign(K a);
- each bit starts from the spectral relaxation (the top generalized eigenvector
  of K^T R K a = lambda K^T K a, scaled so a^T K^T K a = l), then minimizes the
  sigmoid-smoothed cost -phi(K a)^T R phi(K a), phi(z) = 2 / (1 + exp(-z)) - 1,
  by gradient descent (here scipy's L-BFGS instead of the authors' accelerated
  gradient with line search, ``max_iter`` iterations); the refined projection is
  kept only if its binary code scores higher than the initial one (as ksh.m).

Supervised. The greedy loop is a few lines of numpy: no maintained library ships KSH.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import threadpool_limits

from rshash.methods.base import Encoded, HashMethod, sign_bits
from rshash.params import Params, param


@dataclass(frozen=True, kw_only=True)
class KSHParams(Params):
    """n_anchors m = 300 and n_labeled l = 1000: the authors' ksh.m defaults (the
    paper's experiments use m = 300 anchors and l = 1,000 / 2,000 labelled samples);
    max_iter = 500: the iteration budget ksh.m gives OptProjectionFast. m and l
    are capped by the number of train rows (all rows then serve)."""

    n_anchors: int = param(300, min=1)
    n_labeled: int = param(1000, min=2)
    max_iter: int = param(500, min=0, max=100_000)


def smoothed_cost(a: np.ndarray, K: np.ndarray, R: np.ndarray) -> tuple[float, np.ndarray]:
    """The KSH cost -phi(K a)^T R phi(K a) with phi(z) = 2 sigmoid(z) - 1 = tanh(z / 2),
    and its gradient -K^T ((R phi) * (1 - phi^2)) (R symmetric)."""
    phi = np.tanh(0.5 * (K @ a))
    Rphi = R @ phi
    return float(-phi @ Rphi), -K.T @ (Rphi * (1.0 - phi**2))


def code_loss(B: np.ndarray, S0: np.ndarray) -> float:
    """Q = ||B B^T - r S0||_F^2 for codes B in {-1, +1}^{l x r}."""
    B = np.asarray(B, dtype=np.float64)
    return float(((B @ B.T - B.shape[1] * S0) ** 2).sum())


def _signs(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, 1.0, -1.0)  # ksh.m: y = double(K a > 0), y(y <= 0) = -1


class KSH(HashMethod):
    name = "ksh"
    supervised = True

    Params = KSHParams

    def _sqdist(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        d2 = (X**2).sum(1)[:, None] + (self.anchors**2).sum(1)[None] - 2.0 * X @ self.anchors.T
        return np.maximum(d2, 0.0)

    def _fit(self, X, y):
        with threadpool_limits(self.threads):
            self._fit_greedy(X, y)

    def _fit_greedy(self, X, y):
        rng = np.random.default_rng(self.seed)
        n, r = len(X), self.bits
        m, l = min(self.n_anchors, n), min(self.n_labeled, n)
        self.anchors = np.asarray(X[np.sort(rng.choice(n, m, replace=False))], dtype=np.float64)
        D2 = self._sqdist(X)
        self.sigma = np.float64(D2.mean())
        Kall = np.exp(-D2 / (2.0 * self.sigma))
        self.kmean = Kall.mean(axis=0)
        labeled = np.sort(rng.choice(n, l, replace=False))
        K = Kall[labeled] - self.kmean
        yl = y[labeled]
        S0 = np.where(yl[:, None] == yl[None, :], 1.0, -1.0)
        R = r * S0  # the residue r S0 - sum of chosen y y^T
        RM = K.T @ K
        # tiny ridge: the kernel columns can be nearly collinear, eigh needs RM > 0
        RM_reg = RM + 1e-8 * np.trace(RM) / m * np.eye(m)
        A = np.zeros((m, r))
        self.history_ = []
        for t in range(r):
            LM = K.T @ R @ K
            _, vec = scipy.linalg.eigh(LM, RM_reg, subset_by_index=[m - 1, m - 1])
            a0 = vec[:, 0] * np.sqrt(l / (vec[:, 0] @ RM @ vec[:, 0]))
            init_cost = smoothed_cost(a0, K, R)[0]
            y0 = _signs(K @ a0)
            init_score = y0 @ R @ y0
            A[:, t], yt, refined_cost, keep = a0, y0, init_cost, False
            if self.max_iter > 0:
                res = scipy.optimize.minimize(
                    smoothed_cost,
                    a0,
                    args=(K, R),
                    jac=True,
                    method="L-BFGS-B",
                    options={"maxiter": self.max_iter},
                )
                y1 = _signs(K @ res.x)
                refined_cost = float(res.fun)
                if y1 @ R @ y1 > init_score:  # ksh.m: keep the refined projection if better
                    A[:, t], yt, keep = res.x, y1, True
            self.history_.append(
                {
                    "init_cost": init_cost,
                    "refined_cost": refined_cost,
                    "init_score": float(init_score),
                    "score": float(yt @ R @ yt),
                    "refined": keep,
                }
            )
            R = R - np.outer(yt, yt)
        self.A = A
        self.code_loss_ = code_loss(_signs(K @ A), S0)

    def encode(self, X):
        Kx = np.exp(-self._sqdist(X) / (2.0 * self.sigma)) - self.kmean
        value = (Kx @ self.A).astype(np.float32)
        return Encoded(bits=sign_bits(value), value=value)

    def state(self):
        return {
            "anchors": self.anchors,
            "sigma": np.asarray(self.sigma),
            "kmean": self.kmean,
            "A": self.A,
        }

    def load_state(self, state):
        self.anchors, self.kmean, self.A = state["anchors"], state["kmean"], state["A"]
        self.sigma = np.float64(state["sigma"])


METHOD = KSH
