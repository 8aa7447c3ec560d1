"""dhcnn: the eta mix of the DPSH pairwise term and the cross-entropy (both extremes reduce
to one term), the linear hash layer, the class head. (Determinism, persistence and the
quality floor: the contract in test_methods.py.)"""

import math

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
F = torch.nn.functional

from rshash import RshashError  # noqa: E402
from rshash.methods import build  # noqa: E402
from rshash.methods.dhcnn import dhcnn_loss  # noqa: E402
from rshash.methods.dpsh import dpsh_loss, pairwise_likelihood_loss  # noqa: E402


def batch(seed=0, n=8, k=6, c=3):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, k, generator=g, requires_grad=True)
    logits = torch.randn(n, c, generator=g, requires_grad=True)
    y = torch.arange(n) % c
    return u, logits, y


def test_loss_hand_computed():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits = torch.zeros(3, 2)  # uniform: CE = log 2
    y = torch.tensor([0, 0, 1])
    pair = (math.log(2) + 2 * math.log1p(math.exp(0.5))) / 3
    quant = (1 + 1 + 0) / 3  # b = sgn(u) with sgn(0) = -1: ||u - b||^2 = 1, 1, 0
    expected = 0.2 * (pair + 25 / 100 * quant) + 0.8 * math.log(2)
    loss = dhcnn_loss(u, logits, y, eta=0.2, beta=25, n_train=100)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_eta_zero_is_the_cross_entropy_alone():
    u, logits, y = batch()
    loss = dhcnn_loss(u, logits, y, eta=0.0, beta=25, n_train=50)
    assert loss.item() == F.cross_entropy(logits, y).item()
    loss.backward()
    # the hash layer's output gets no gradient except through the classifier (absent here)
    assert u.grad is None and logits.grad.abs().sum() > 0


def test_eta_one_is_the_dpsh_term_alone():
    u, logits, y = batch()
    loss = dhcnn_loss(u, logits, y, eta=1.0, beta=25, n_train=50)
    assert loss.item() == dpsh_loss(u, y, 25, 50).item()
    # the pairwise likelihood is the one dpsh uses (shared), plus beta / N quantization
    assert loss.item() > pairwise_likelihood_loss(u, y).item()
    loss.backward()
    assert logits.grad is None and u.grad.abs().sum() > 0


def test_eta_mixes_linearly():
    u, logits, y = batch(seed=3)
    both = [dhcnn_loss(u, logits, y, eta=e, beta=25, n_train=50).item() for e in (0.0, 1.0)]
    for eta in (0.2, 0.5, 0.9):
        mixed = dhcnn_loss(u, logits, y, eta=eta, beta=25, n_train=50).item()
        assert mixed == pytest.approx((1 - eta) * both[0] + eta * both[1], abs=1e-6)
    # beta 0 drops the quantization term
    assert dhcnn_loss(u, logits, y, eta=1.0, beta=0, n_train=50).item() == pytest.approx(
        pairwise_likelihood_loss(u, y).item(), abs=1e-7
    )
    with pytest.raises(RshashError):
        dhcnn_loss(u, logits, y, eta=1.5, beta=25, n_train=50)
    with pytest.raises(RshashError):
        build("dhcnn", 16, eta=-0.1)


def test_variants_in_config_set_eta(repo):
    variants = yaml.safe_load((repo / "config.yaml").read_text())["variants"]
    for name, eta in (("dhcnn", 0.2), ("dhcnn_eta0", 0.0), ("dhcnn_eta1", 1.0)):
        v = variants[name]
        assert v["method"] == "dhcnn"
        assert build("dhcnn", 32, **v.get("params", {})).eta == eta


def test_linear_hash_layer_and_class_head(blobs):
    X, y = blobs()
    m = build("dhcnn", 16, seed=0, max_epochs=3, batch_size=20).fit(X, y)
    linears = [mod for mod in m.net.hash_layer.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(linears) == 1  # u = W_h f + v_h, no hidden layer by default
    W, v = linears[0].weight.detach().numpy(), linears[0].bias.detach().numpy()
    enc = m.encode(X)
    np.testing.assert_allclose(enc.value, m.norm(X) @ W.T + v, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(enc.bits, (enc.value > 0).astype(np.uint8))
    # t = softmax(W_s u + v_s): the classifier reads u (not the binary code)
    Ws, vs = (p.detach().numpy() for p in (m.net.classifier.weight, m.net.classifier.bias))
    logits = enc.value.astype(np.float64) @ Ws.T + vs
    prob = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(enc.class_prob, prob / prob.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(enc.predicted_label, enc.class_prob.argmax(1))
    # milan's MLP can go in front of the hash layer
    deep = build("dhcnn", 16, seed=0, max_epochs=1, batch_size=20, hidden=[64, 32]).fit(X, y)
    assert sum(isinstance(mod, torch.nn.Linear) for mod in deep.net.hash_layer.modules()) == 3


def test_divergence_is_an_error(blobs):
    X, y = blobs()
    with pytest.raises(RshashError, match="diverged"):
        build("dhcnn", 16, seed=0, max_epochs=50, batch_size=20, lr=50.0, eta=1.0).fit(X, y)


def test_class_head_is_consistent_on_demo_features(
    demo_features, demo_encoded, class_head_accuracy
):
    """(Its quality floor on demo_features: tests/test_methods.py.)"""
    dh, q, db = demo_encoded("dhcnn")
    assert class_head_accuracy(q, demo_features["y_query"]) > 0.25  # chance 0.1; measured 0.38
