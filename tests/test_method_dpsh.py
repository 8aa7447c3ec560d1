"""dpsh: the pairwise likelihood (shared with dhcnn), the quantization term and their
reduction, the paper's gradient. (Determinism, persistence and the quality floor: the
contract in test_methods.py.)"""

import math

import pytest

torch = pytest.importorskip("torch")

from rshash import RshashError  # noqa: E402
from rshash.methods.dpsh import dpsh_loss, pairwise_likelihood_loss, quantization_loss  # noqa: E402


def softplus(x):
    return math.log1p(math.exp(x))


def test_pairwise_likelihood_hand_computed():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    # theta = u_i.u_j / 2: (0,1) 0, similar -> log 2; (0,2) and (1,2) 0.5, dissimilar
    # -> log(1 + e^0.5) each; averaged over the 3 pairs
    expected = (math.log(2) + 2 * softplus(0.5)) / 3
    assert pairwise_likelihood_loss(u, y).item() == pytest.approx(expected, abs=1e-6)
    # a similar pair with theta = 1 costs log(1 + e) - 1
    v = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert pairwise_likelihood_loss(v, torch.tensor([3, 3])).item() == pytest.approx(
        softplus(1.0) - 1.0, abs=1e-6
    )


def test_similarity_matrix_and_labels_agree():
    torch.manual_seed(0)
    u = torch.randn(6, 8)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    S = (y[:, None] == y[None, :]).float()
    assert pairwise_likelihood_loss(u, S).item() == pytest.approx(
        pairwise_likelihood_loss(u, y).item(), abs=1e-6
    )
    assert pairwise_likelihood_loss(u, y.numpy()).item() == pytest.approx(
        pairwise_likelihood_loss(u, y).item(), abs=1e-6
    )
    with pytest.raises(RshashError):
        pairwise_likelihood_loss(u, torch.zeros(5, 5))
    with pytest.raises(RshashError):
        pairwise_likelihood_loss(u, y[:4])


def test_quantization_and_reduction():
    u = torch.tensor([[0.5, -2.0], [0.0, 1.0]])
    # b = sgn(u) with sgn(0) = -1: (1, -1) and (-1, 1); ||u - b||^2 = 1.25 and 1
    assert quantization_loss(u).item() == pytest.approx(1.125, abs=1e-6)
    y = torch.tensor([0, 1])
    # L = mean pair term + eta / N * mean quantization (the released code's reduction)
    expected = pairwise_likelihood_loss(u, y).item() + 10.0 / 500 * 1.125
    assert dpsh_loss(u, y, eta=10.0, n_train=500).item() == pytest.approx(expected, abs=1e-6)
    assert dpsh_loss(u, y, eta=0.0, n_train=500).item() == pytest.approx(
        pairwise_likelihood_loss(u, y).item(), abs=1e-7
    )
    # codes at +-1 cost nothing to quantize
    assert quantization_loss(torch.tensor([[1.0, -1.0]])).item() == 0.0


def test_gradient_matches_the_paper():
    """dL/du_i = 1/P * 1/2 sum_{j != i} (a_ij - s_ij) u_j + 2 eta / (N n) (u_i - b_i),
    a_ij = sigmoid(theta_ij), P the number of pairs (DPSH's gradient, our reduction)."""
    torch.manual_seed(0)
    n, k, N, eta = 7, 5, 100, 10.0
    u = torch.randn(n, k, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    dpsh_loss(u, y, eta, N).backward()
    U = u.detach()
    S = (y[:, None] == y[None, :]).double()
    A = torch.sigmoid(U @ U.T / 2)
    M = (A - S) * (1 - torch.eye(n, dtype=torch.float64))
    P = n * (n - 1) / 2
    B = torch.where(U > 0, 1.0, -1.0).double()
    expected = 0.5 * M @ U / P + 2 * eta / (N * n) * (U - B)
    torch.testing.assert_close(u.grad, expected)


def test_stable_for_large_inner_products():
    u = (30.0 * torch.ones(4, 16)).requires_grad_()  # theta = 7200
    y = torch.tensor([0, 0, 1, 1])
    loss = dpsh_loss(u, y, eta=10.0, n_train=4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all()
    # dissimilar pairs with theta = 7200 cost theta each: 4 of the 6 pairs
    assert loss.item() == pytest.approx(4 * 7200 / 6 + 10.0 / 4 * 16 * 29**2, rel=1e-6)


def test_dissimilar_codes_are_half_the_bits_apart_on_demo_features(
    demo_features, demo_encoded, hamming_by_class
):
    """(Its quality floor, and same-class codes closer than others, on demo_features:
    tests/test_methods.py.)"""
    d = demo_features
    dpsh, q, db = demo_encoded("dpsh")
    # the likelihood is satisfied once dissimilar codes are K/2 apart (theta <= 0)
    assert hamming_by_class(q, d["y_query"], db, d["y_database"])[1] > 0.45 * 32
