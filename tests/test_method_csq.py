"""csq: hash centres (Hadamard / Bernoulli), the central-similarity loss. (Determinism,
persistence and the quality floor: the contract in test_methods.py.)"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rshash import RshashError  # noqa: E402
from rshash.methods.csq import csq_loss, hash_centers  # noqa: E402


def hamming(C):
    return (C[:, None, :] != C[None, :, :]).sum(2)[np.triu_indices(len(C), 1)]


@pytest.mark.parametrize("n_classes,bits", [(21, 32), (21, 16), (2, 8), (16, 8)])
def test_hadamard_centres_are_distinct_binary_and_far_apart(n_classes, bits):
    C = hash_centers(n_classes, bits, np.random.default_rng(0))
    assert C.shape == (n_classes, bits) and C.dtype == np.float32
    assert set(np.unique(C)) == {-1.0, 1.0}
    assert hamming(C).min() >= bits // 2  # Hadamard rows: K/2 apart (K for h and -h)
    # deterministic: no randomness in the Hadamard case
    np.testing.assert_array_equal(C, hash_centers(n_classes, bits, np.random.default_rng(5)))


@pytest.mark.parametrize("n_classes,bits", [(21, 8), (10, 24), (45, 48)])
def test_bernoulli_centres_when_no_hadamard_fits(n_classes, bits):
    # K = 8 with 21 > 2K classes, or K not a power of two: Bernoulli(0.5) bits
    C = hash_centers(n_classes, bits, np.random.default_rng(0))
    assert C.shape == (n_classes, bits)
    assert set(np.unique(C)) == {-1.0, 1.0}
    assert len(np.unique(C, axis=0)) == n_classes  # distinct
    assert 0.35 * bits < hamming(C).mean() < 0.65 * bits  # about K/2 apart on average
    assert not np.array_equal(C, hash_centers(n_classes, bits, np.random.default_rng(1)))


def test_too_many_classes_for_the_code_length():
    with pytest.raises(RshashError, match="300 classes"):
        hash_centers(300, 8, np.random.default_rng(0))


def test_loss_hand_computed():
    u = torch.tensor([[0.6, -0.2]])
    c = torch.tensor([[1.0, -1.0]])
    # (u + 1) / 2 = (0.8, 0.4) against targets (1, 0): BCE = -(log 0.8 + log 0.6) / 2
    # quantization: ((0.6 - 1)^2 + (0.2 - 1)^2) / 2 = (0.16 + 0.64) / 2 = 0.4, times 1e-4
    expected = -(math.log(0.8) + math.log(0.6)) / 2 + 1e-4 * 0.4
    assert csq_loss(u, c, lam=1e-4).item() == pytest.approx(expected, abs=1e-6)


def test_gradients_are_finite():
    torch.manual_seed(0)
    z = torch.randn(6, 16, requires_grad=True)
    centers = torch.from_numpy(hash_centers(3, 16, np.random.default_rng(0)))
    csq_loss(torch.tanh(z), centers[[0, 1, 2, 0, 1, 2]], lam=1e-4).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_codes_land_on_their_class_centre(demo_features, demo_encoded):
    """(Its quality floor on demo_features: tests/test_methods.py.)"""
    d = demo_features
    csq, q, db = demo_encoded("csq")
    # train codes sit on (nearest to) the centre of their own class
    centre_bits = (csq.centers > 0).astype(np.uint8)
    ham = (db.bits[:, None, :] != centre_bits[None, :, :]).sum(2)
    assert (ham.argmin(1) == d["y_database"]).mean() > 0.95
