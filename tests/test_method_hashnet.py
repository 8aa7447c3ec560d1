"""hashnet: the continuation schedule, the weighted pairwise cross-entropy with its similar
/ dissimilar re-weighting. (Determinism, persistence and the quality floor: the contract
in test_methods.py.)"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rshash.methods import build  # noqa: E402
from rshash.methods.base import load_model  # noqa: E402
from rshash.methods.hashnet import continuation_scale, hashnet_loss  # noqa: E402


def softplus(x):
    return math.log1p(math.exp(x))


def test_continuation_schedule():
    # beta = (1 + 0.005 t)^0.5, updated every 200 iterations (the released code)
    assert continuation_scale(1) == 1.0 and continuation_scale(199) == 1.0
    assert continuation_scale(200) == pytest.approx(math.sqrt(2))
    assert continuation_scale(399) == pytest.approx(math.sqrt(2))
    assert continuation_scale(2000) == pytest.approx(math.sqrt(11))
    assert continuation_scale(10000) == pytest.approx(math.sqrt(51))
    betas = [continuation_scale(t) for t in range(1, 5000, 50)]
    assert all(b2 >= b1 for b1, b2 in zip(betas, betas[1:]))


def test_loss_hand_computed():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    alpha = 0.5
    # similar: (0,1), <h,h> = 0 -> log 2; dissimilar: (0,2), (1,2), <h,h> = 1
    # -> log(1 + e^alpha) each. |S| / |S_1| = 3, |S| / |S_0| = 3/2, divided by |S| = 3:
    # mean over similar + mean over dissimilar
    expected = math.log(2) + softplus(alpha)
    assert hashnet_loss(h, y, alpha).item() == pytest.approx(expected, abs=1e-6)
    # a similar pair: log(1 + e^(alpha x)) - alpha x
    v = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert hashnet_loss(v, torch.tensor([2, 2]), 0.5).item() == pytest.approx(
        softplus(1.0) - 1.0, abs=1e-6
    )


def test_reweighting_balances_similar_and_dissimilar_pairs():
    torch.manual_seed(0)
    h = torch.tanh(torch.randn(12, 8))
    y = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # 1 similar pair of 66
    i, j = torch.triu_indices(12, 12, offset=1)
    ip = 0.7 * (h[i] * h[j]).sum(1)
    s = (y[i] == y[j]).float()
    losses = torch.nn.functional.softplus(ip) - s * ip
    w = torch.where(s > 0, len(s) / s.sum(), len(s) / (1 - s).sum())
    expected = (w * losses).sum() / len(s)  # the paper's weights, divided by |S|
    assert hashnet_loss(h, y, 0.7).item() == pytest.approx(expected.item(), abs=1e-6)
    assert hashnet_loss(h, y, 0.7).item() != pytest.approx(losses.mean().item(), abs=1e-3)
    # the single similar pair weighs as much as the 65 dissimilar ones together
    assert hashnet_loss(h, y, 0.7).item() == pytest.approx(
        losses[s > 0].mean().item() + losses[s == 0].mean().item(), abs=1e-6
    )
    # a batch with no similar pair: the dissimilar mean alone
    y_all = torch.arange(12)
    ip_all = 0.7 * (h[i] * h[j]).sum(1)
    assert hashnet_loss(h, y_all, 0.7).item() == pytest.approx(
        torch.nn.functional.softplus(ip_all).mean().item(), abs=1e-6
    )
    # labels or a similarity matrix
    S = (y[:, None] == y[None, :]).float()
    assert hashnet_loss(h, S, 0.7).item() == pytest.approx(hashnet_loss(h, y, 0.7).item())


def test_default_alpha_is_ten_over_bits():
    assert build("hashnet", 16).alpha == pytest.approx(10 / 16)
    assert build("hashnet", 64).alpha == pytest.approx(10 / 64)
    assert build("hashnet", 64, alpha=0.3).alpha == 0.3


def test_gradients_are_finite():
    z = (20.0 * torch.randn(8, 32)).requires_grad_()
    loss = hashnet_loss(torch.tanh(3.0 * z), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 10.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_scale_follows_the_schedule_and_round_trip(tmp_path, blobs):
    X, y = blobs()
    a = build("hashnet", 16, seed=1, max_epochs=110, batch_size=20).fit(X, y)
    b = build("hashnet", 16, seed=1, max_epochs=110, batch_size=20).fit(X, y)
    c = build("hashnet", 16, seed=2, max_epochs=110, batch_size=20).fit(X, y)
    assert a.scale == pytest.approx(math.sqrt(1 + 0.005 * 400))
    ea = a.encode(X)
    np.testing.assert_array_equal(ea.bits, b.encode(X).bits)
    np.testing.assert_array_equal(ea.value, b.encode(X).value)
    assert not np.array_equal(ea.value, c.encode(X).value)
    # value = tanh(beta z) at the final beta; bits = sgn
    z = a._forward(X)
    np.testing.assert_allclose(ea.value, np.tanh(a.scale * z), rtol=1e-5, atol=1e-6)
    assert np.abs(ea.value).max() <= 1.0
    np.testing.assert_array_equal(ea.bits, (ea.value > 0).astype(np.uint8))
    assert ea.class_prob is None and ea.predicted_label is None
    a.save(tmp_path / "m.npz")
    loaded, header = load_model(tmp_path / "m.npz")
    assert header["method"] == "hashnet" and loaded.scale == pytest.approx(a.scale)
    np.testing.assert_array_equal(loaded.encode(X).bits, ea.bits)
    np.testing.assert_array_equal(loaded.encode(X).value, ea.value)


def test_continuation_ends_near_binary_codes_on_demo_features(demo_encoded):
    """(Its quality floor, and same-class codes closer than others, on demo_features:
    tests/test_methods.py.)"""
    hn, q, db = demo_encoded("hashnet")
    # continuation: the relaxed codes end close to +-1 (measured mean | |h| - 1 | 0.03)
    assert np.abs(np.abs(db.value) - 1).mean() < 0.2
