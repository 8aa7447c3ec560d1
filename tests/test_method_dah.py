"""dah: the pair-balanced loss, cubic quantization and straight-through class term, the
attention module against eq. 1-4 written literally, the DAH-A variant, the class head,
and retrieval quality on real conv maps. (Determinism and persistence: the contract in
test_methods.py.)"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from rshash import RshashError  # noqa: E402
from rshash.evaluate import evaluate_arrays  # noqa: E402
from rshash.methods import build, method_info  # noqa: E402
from rshash.methods.dah import (  # noqa: E402
    _network,
    balanced_pair_loss,
    cubic_quantization_loss,
    dah_loss,
    straight_through_sign,
)


def toy_maps(n_classes=3, per_class=12, c=16, hw=(3, 4), seed=0):
    """Non-negative sparse maps (like post-ReLU6 conv maps) with a class signal."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    proto = rng.random((n_classes, c, 1, 1)) * 2
    X = np.maximum(proto[y] + rng.normal(0, 1, (len(y), c, *hw)), 0)
    return X.astype(np.float16), y


def map_all(q, yq, d, yd):
    return evaluate_arrays(np.packbits(q.bits, 1), yq, np.packbits(d.bits, 1), yd)["map_all"]


def test_registered_as_a_maps_method_with_class_head():
    info = method_info("dah")
    assert info.inputs == ("maps",) and info.class_head
    assert "category_weighted" in info.rankings()


def test_loss_hand_computed():
    h = torch.tensor([[0.5, 0.5], [0.5, -0.5], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    logits = torch.zeros(3, 2)  # uniform: cross-entropy log 2
    # pairs: (0,1) similar, I = 0.25 - 0.25 = 0 -> log(1 + e^0) - 0 = log 2;
    # (0,2), (1,2) dissimilar, I = -0.5 -> log(1 + e^-0.5) each.
    # |Omega| = 3, |Omega_1| = 1, |Omega_2| = 2: w = 3 (similar), 1.5 (dissimilar)
    pair_sum = 3 * math.log(2) + 1.5 * 2 * math.log1p(math.exp(-0.5))
    pair_mean = pair_sum / 3  # = log 2 + log(1 + e^-0.5)
    # cubic: rows (1-.5)^3 * 2 = .25, .25, (1-1)^3 + (1-0)^3 = 1 -> mean 1.5 / 3 = 0.5
    quant = 0.5
    assert balanced_pair_loss(h, y).item() == pytest.approx(pair_sum, abs=1e-6)
    assert balanced_pair_loss(h, y, "mean").item() == pytest.approx(pair_mean, abs=1e-6)
    assert cubic_quantization_loss(h).item() == pytest.approx(quant, abs=1e-6)
    expected = pair_sum + 2.0 * quant + 0.5 * math.log(2)
    assert dah_loss(h, logits, y, alpha=2.0, beta=0.5).item() == pytest.approx(expected, abs=1e-6)
    expected = pair_mean + quant + math.log(2)
    assert dah_loss(h, logits, y, pair_reduction="mean").item() == pytest.approx(expected, abs=1e-6)


def test_pair_weights_balance_similar_and_dissimilar_pairs():
    g = torch.Generator().manual_seed(0)
    h = torch.tanh(torch.randn(10, 8, generator=g))
    y = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5, 6, 7])  # 3 similar pairs, 42 dissimilar
    i, j = torch.triu_indices(10, 10, offset=1)
    inner = (h[i] * h[j]).sum(1)
    s = (y[i] == y[j]).float()
    per = F.softplus(inner) - s * inner
    balanced = per[s == 1].mean() + per[s == 0].mean()
    assert balanced_pair_loss(h, y, "mean").item() == pytest.approx(balanced.item(), abs=1e-6)
    assert balanced_pair_loss(h, y, "sum").item() == pytest.approx(45 * balanced.item(), rel=1e-6)
    # a batch of one class: only similar pairs, weight 1
    one = torch.zeros(10, dtype=torch.long)
    assert balanced_pair_loss(h, one, "mean").item() == pytest.approx(
        (F.softplus(inner) - inner).mean().item(), abs=1e-6
    )


def test_loss_gradients_finite_and_nonzero():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(12, 16, generator=g, requires_grad=True)
    theta = torch.randn(16, 4, generator=g, requires_grad=True)
    y = torch.arange(12) % 4
    h = torch.tanh(z)
    loss = dah_loss(h, straight_through_sign(h) @ theta, y)
    loss.backward()
    for grad in (z.grad, theta.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_straight_through_sign():
    h = torch.tensor([[0.3, -0.2, 0.0]], requires_grad=True)
    b = straight_through_sign(h)
    assert b.tolist() == [[1.0, -1.0, -1.0]]
    (b * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert h.grad.tolist() == [[1.0, 2.0, 3.0]]  # identity gradient


@pytest.mark.parametrize("kernel", [1, 3])
def test_attention_equals_the_literal_equations(kernel):
    torch.manual_seed(0)
    n, c, hh, ww = 5, 32, 3, 4
    net = _network(
        c,
        hh,
        ww,
        bits=8,
        n_classes=3,
        attention=True,
        reduction=4,
        spatial_kernel=kernel,
        gate_bias=0.0,
    )
    with torch.no_grad():  # non-trivial gates (the default starts them uniform)
        for p in list(net.channel_mlp.parameters()) + list(net.spatial_conv.parameters()):
            p.normal_(0, 0.3)
    g = torch.randn(n, c, hh, ww, dtype=torch.float64).float()
    # eq. 1-4 as printed, on [n, C, h, w]
    a_ch = torch.sigmoid(net.channel_mlp(g.amax((2, 3)) + g.mean((2, 3))))
    g_ch = a_ch[:, :, None, None] * g
    a_sp = torch.sigmoid(
        net.spatial_conv(torch.cat([g_ch.amax(1, keepdim=True), g_ch.mean(1, keepdim=True)], 1))
    )
    literal = (a_sp * g_ch).mean((2, 3))
    channels_last = g.flatten(2).transpose(1, 2).contiguous()
    fast = net.attend(channels_last)
    assert torch.allclose(fast, literal, atol=1e-6)
    # and the same gradient to the attention parameters
    grads_fast = torch.autograd.grad(fast.sum(), list(net.channel_mlp.parameters()))
    grads_lit = torch.autograd.grad(literal.sum(), list(net.channel_mlp.parameters()))
    for a, b in zip(grads_fast, grads_lit):
        assert torch.allclose(a, b, atol=1e-5)


def test_attention_false_is_average_pooling_into_the_hash_layer():
    X, y = toy_maps()
    m = build("dah", 8, seed=0, max_epochs=3, batch_size=12, attention=False).fit(X, y)
    assert not any("channel_mlp" in k or "spatial" in k for k in m.net.state_dict())
    pooled = ((X.astype(np.float32) - m.norm.mu[:, None, None]) / m.norm.sd[:, None, None]).mean(
        (2, 3)
    )
    w = m.net.hash_layer.weight.detach().numpy()
    b = m.net.hash_layer.bias.detach().numpy()
    np.testing.assert_allclose(m.encode(X).value, np.tanh(pooled @ w.T + b), atol=1e-5)
    # with attention the network has the attention module and other outputs
    ma = build("dah", 8, seed=0, max_epochs=3, batch_size=12).fit(X, y)
    assert any("channel_mlp" in k for k in ma.net.state_dict())
    assert not np.allclose(ma.encode(X).value, m.encode(X).value)


def test_class_head_and_codes(class_head_accuracy):
    X, y = toy_maps()
    m = build("dah", 16, seed=0, max_epochs=5, batch_size=12).fit(X, y)
    e = m.encode(X)
    assert e.bits.dtype == np.uint8 and e.bits.shape == (len(X), 16)
    np.testing.assert_array_equal(e.bits, (e.value > 0).astype(np.uint8))
    assert np.all(np.abs(e.value) <= 1)
    class_head_accuracy(e, y)
    # class_prob is the softmax of the classifier on the binary codes sign(h)
    theta = m.net.classifier.weight.detach().numpy()
    codes = np.where(e.value > 0, 1.0, -1.0)
    expected = torch.softmax(torch.from_numpy(codes @ theta.T), 1).numpy()
    np.testing.assert_allclose(e.class_prob, expected, atol=1e-5)


def test_input_checks():
    X, y = toy_maps()
    with pytest.raises(RshashError, match="conv maps"):
        build("dah", 8, max_epochs=1).fit(X.mean((2, 3)), y)
    m = build("dah", 8, max_epochs=1, batch_size=12).fit(X, y)
    with pytest.raises(RshashError, match="shape"):
        m.encode(X[:, :, :2])
    with pytest.raises(RshashError, match="input_norm"):
        build("dah", 8, input_norm="l2")
    with pytest.raises(RshashError, match="pair_reduction"):
        build("dah", 8, pair_reduction="max")


@pytest.fixture(scope="session")
def demo_maps(demo_extract):
    """The demo dataset of tests/conftest.py (10 classes x 30 synthetic tiles at noise 25) through
    EfficientNet-Lite0 as last conv maps [N, 1280, 7, 7], split by dmch_60_40 seed 0."""
    arrays, labels, parts = demo_extract("maps")
    out = {}
    for role, rows in parts.items():
        out[f"X_{role}"], out[f"y_{role}"] = arrays["maps"][rows], labels[rows]
    return out


def test_retrieval_quality_on_demo_maps(demo_maps):
    d = demo_maps
    assert d["X_train"].shape[1:] == (1280, 7, 7) and d["X_train"].dtype == np.float16
    m = build("dah", 32, seed=0, epochs=100).fit(d["X_train"], d["y_train"])
    q, db = m.encode(d["X_query"]), m.encode(d["X_database"])
    score = map_all(q, d["y_query"], db, d["y_database"])
    # lsh on the pooled features (the maps' spatial average is the pooled feature)
    pooled = {k: d[k].astype(np.float32).mean((2, 3)) for k in ("X_train", "X_query", "X_database")}
    lsh = build("lsh", 32, seed=0).fit(pooled["X_train"])
    base = map_all(
        lsh.encode(pooled["X_query"]),
        d["y_query"],
        lsh.encode(pooled["X_database"]),
        d["y_database"],
    )
    assert score >= base + 0.2, (score, base)
    print("dah", score, "lsh", base, "accuracy", (q.predicted_label == d["y_query"]).mean())
    # the class head learns slowly at the default rate (module docstring), but well above
    # chance (0.1)
    assert (q.predicted_label == d["y_query"]).mean() > 0.25
