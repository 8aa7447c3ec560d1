"""dsh: the pairwise contrastive loss with margin 2K and the |b| - 1 regularizer.
(Determinism, persistence and the quality floor: the contract in test_methods.py.)"""

import pytest

torch = pytest.importorskip("torch")

from rshash.methods import build  # noqa: E402
from rshash.methods.dsh import dsh_loss  # noqa: E402


def test_loss_hand_computed():
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    # K = 2, m = 2K = 4. pairs: (0,1) similar, ||.||^2 = 2 -> 0.5 * 2 = 1
    # (0,2) and (1,2) dissimilar, ||.||^2 = 1 -> 0.5 * max(4 - 1, 0) = 1.5 each
    # || |b| - 1 ||_1 per image: 1, 1, 0 -> mean 2/3, times alpha 0.01
    expected = (1 + 1.5 + 1.5) / 3 + 0.01 * 2 / 3
    assert dsh_loss(b, y, margin=4.0, alpha=0.01).item() == pytest.approx(expected, abs=1e-6)
    # dissimilar pairs beyond the margin and codes at +-1 cost nothing
    far = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert dsh_loss(far, torch.tensor([0, 1]), margin=4.0, alpha=0.01).item() == 0.0


def test_default_margin_is_twice_the_code_length():
    assert build("dsh", 16).margin == 32.0
    assert build("dsh", 64).margin == 128.0
    assert build("dsh", 16, margin=5).margin == 5.0


def test_gradients_are_finite():
    torch.manual_seed(0)
    b = torch.randn(8, 16, requires_grad=True)
    dsh_loss(b, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), margin=32.0, alpha=0.01).backward()
    assert torch.isfinite(b.grad).all() and b.grad.abs().sum() > 0


def test_same_class_codes_are_closer_on_demo_features(demo_features, demo_encoded):
    """(Its quality floor on demo_features: tests/test_methods.py.)"""
    d = demo_features
    dsh, q, db = demo_encoded("dsh")
    # same-class database codes are closer than other-class ones (in Hamming distance)
    ham = (q.bits[:, None, :] != db.bits[None, :, :]).sum(2)
    same = d["y_query"][:, None] == d["y_database"][None, :]
    assert ham[same].mean() < 0.5 * ham[~same].mean()
