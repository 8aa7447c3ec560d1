"""ksh: the smoothed cost and code loss on hand-computed cases, its gradient, the greedy
bit-by-bit optimisation. (Determinism, persistence and the quality floor: the contract
in test_methods.py.)"""

import math

import numpy as np
import pytest
import scipy.optimize

from rshash.methods import build
from rshash.methods.ksh import code_loss, smoothed_cost


def test_smoothed_cost_hand_computed():
    K = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    a = np.array([math.log(3), -math.log(3)])
    R = np.array([[2.0, -1.0, 1.0], [-1.0, 2.0, 0.0], [1.0, 0.0, 2.0]])
    # K a = (ln 3, -ln 3, 0); phi(z) = 2 / (1 + e^-z) - 1: phi(ln 3) = 2 / (4/3) - 1 = 0.5,
    # so phi = (0.5, -0.5, 0); phi^T R phi = 0.25*2 + 0.25*2 + 2*(0.5)(-0.5)(-1) = 1.5
    # gradient -K^T ((R phi) * (1 - phi^2)): R phi = (1.5, -1.5, 0.5),
    # (1 - phi^2) = (0.75, 0.75, 1) -> (1.125, -1.125, 0.5); K^T -> (1.625, -0.625)
    cost, grad = smoothed_cost(a, K, R)
    assert cost == pytest.approx(-1.5, abs=1e-6)
    np.testing.assert_allclose(grad, [-1.625, 0.625], atol=1e-6)


def test_code_loss_hand_computed():
    B = np.array([[1, -1], [1, 1]])
    S0 = np.array([[1.0, -1.0], [-1.0, 1.0]])
    # B B^T = [[2, 0], [0, 2]], r S0 = [[2, -2], [-2, 2]]: residue [[0, 2], [2, 0]] -> 8
    assert code_loss(B, S0) == pytest.approx(8.0, abs=1e-6)
    assert code_loss(np.array([[1, 1], [-1, -1]]), S0) == pytest.approx(0.0, abs=1e-6)


def test_gradient_is_finite_and_matches_finite_differences():
    rng = np.random.default_rng(0)
    K = rng.normal(0, 1, (20, 6))
    R = rng.normal(0, 1, (20, 20))
    R = R + R.T
    a = rng.normal(0, 0.5, 6)
    cost, grad = smoothed_cost(a, K, R)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    err = scipy.optimize.check_grad(
        lambda v: smoothed_cost(v, K, R)[0], lambda v: smoothed_cost(v, K, R)[1], a
    )
    assert err < 1e-5 * max(1.0, np.linalg.norm(grad))


def test_greedy_bits_improve_on_their_spectral_initialisation(blobs):
    X, y = blobs(per_class=30, dim=40, noise=1.0)
    m = build("ksh", 16, n_anchors=40, n_labeled=100).fit(X, y)
    assert len(m.history_) == 16
    for h in m.history_:
        # the sigmoid-smoothed cost decreases from the spectral initialisation, and the
        # binary code kept is never worse than the initialisation's
        assert h["refined_cost"] < h["init_cost"]
        assert h["score"] >= h["init_score"]
    assert any(h["refined"] for h in m.history_)
    spectral = build("ksh", 16, n_anchors=40, n_labeled=100, max_iter=0).fit(X, y)
    assert not any(h["refined"] for h in spectral.history_)
    assert m.code_loss_ < spectral.code_loss_


def test_kernel_width_is_the_mean_squared_distance_to_the_anchors(blobs):
    X, y = blobs(per_class=30, dim=40, noise=1.0)
    m = build("ksh", 8, n_anchors=30, n_labeled=60).fit(X, y)
    assert m.anchors.shape == (30, X.shape[1])
    d2 = ((X[:, None, :].astype(np.float64) - m.anchors[None]) ** 2).sum(-1)
    assert m.sigma == pytest.approx(d2.mean(), rel=1e-9)
    Kx = np.exp(-d2 / (2 * m.sigma))
    np.testing.assert_allclose(m.kmean, Kx.mean(0), atol=1e-9)
    np.testing.assert_allclose(m.encode(X).value, (Kx - Kx.mean(0)) @ m.A, rtol=1e-4, atol=1e-4)
