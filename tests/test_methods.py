"""lsh, itq and milan: losses on hand-computed cases, determinism, persistence,
and retrieval quality on data whose answer is known."""

import numpy as np
import pytest

from rshash import RshashError
from rshash.evaluate import evaluate_arrays
from rshash.methods import build, get_method
from rshash.methods.base import load_model
from rshash.methods.nets import ClassGroups


def blobs(n_classes=6, per_class=40, dim=64, spread=1.0, seed=0, nuisance=0.0):
    """Gaussian classes; ``nuisance`` adds a strong class-independent direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + spread * rng.normal(0, 1, (len(y), dim))
    if nuisance:
        X += nuisance * rng.normal(0, 1, (len(y), 1)) * rng.normal(0, 1, dim)
    return X.astype(np.float32), y


def map_all(method, X, y, Xq, yq):
    enc_db, enc_q = method.encode(X), method.encode(Xq)
    return evaluate_arrays(np.packbits(enc_q.bits, axis=1), yq, np.packbits(enc_db.bits, axis=1),
                           y, ranking="hamming")["map_all"]


def test_milan_loss_hand_computed():
    torch = pytest.importorskip("torch")
    from rshash.methods.milan import milan_loss

    a, p, n = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.8, 0.3]]), torch.tensor([[0.85, 0.2]])
    # triplet: pos 0.05, neg 0.0125 -> 0.05 - 0.0125 + 0.2 = 0.2375
    # push: mean ||f - .5||^2 = (0.32 + 0.13 + 0.2125) / 3, divided by K = 2
    # balance: mean (row mean - .5)^2 = (0 + 0.0025 + 0.000625) / 3
    expected = 0.2375 - 0.001 * (0.6625 / 3 / 2) + 1.0 * (0.003125 / 3)
    loss = milan_loss(a, p, n, torch.cat([a, p, n]), 0.2, 0.001, 1.0, normalize=False)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # with L2-normalised embeddings (the authors' code) the triplet term uses unit vectors
    unit = lambda t: t / t.norm(dim=1, keepdim=True)  # noqa: E731
    pos = (unit(a) - unit(p)).pow(2).sum().item()
    neg = (unit(a) - unit(n)).pow(2).sum().item()
    normed = milan_loss(a, p, n, torch.cat([a, p, n]), 0.2, 0.0, 0.0, normalize=True)
    assert normed.item() == pytest.approx(max(0.0, pos - neg + 0.2), abs=1e-6)


def test_milan_gradients_are_finite():
    torch = pytest.importorskip("torch")
    from rshash.methods.milan import milan_loss

    out = torch.rand(9, 16, requires_grad=True)
    f_a, f_p, f_n = out.split(3)
    milan_loss(f_a, f_p, f_n, out, 0.2, 0.001, 1.0).backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


def test_itq_rotation_is_orthogonal_and_lowers_quantization_error():
    X, _ = blobs(dim=32)
    itq = build("itq", 16, seed=0, n_iter=50).fit(X)
    np.testing.assert_allclose(itq.R @ itq.R.T, np.eye(16), atol=1e-5)
    V = (X - itq.mean) @ itq.P
    err = lambda R: np.linalg.norm(np.sign(V @ R) - V @ R)  # noqa: E731
    unrotated = build("itq", 16, seed=0, n_iter=0).fit(X)
    assert err(itq.R) < err(unrotated.R)


def test_lsh_is_sign_of_centred_random_projection():
    X, _ = blobs(dim=8)
    lsh = build("lsh", 8, seed=3).fit(X)
    enc = lsh.encode(X)
    np.testing.assert_array_equal(enc.bits, ((X - X.mean(0)) @ lsh.W > 0).astype(np.uint8))
    assert 0.3 < enc.bits.mean() < 0.7


@pytest.mark.parametrize("name,params", [("lsh", {}), ("itq", {}),
                                         ("milan", {"iterations": 200})])
def test_same_seed_same_codes_and_model_round_trip(tmp_path, name, params):
    X, y = blobs()
    a = build(name, 16, seed=1, **params).fit(X, y)
    b = build(name, 16, seed=1, **params).fit(X, y)
    c = build(name, 16, seed=2, **params).fit(X, y)
    np.testing.assert_array_equal(a.encode(X).value, b.encode(X).value)
    assert not np.array_equal(a.encode(X).value, c.encode(X).value)
    a.save(tmp_path / "m.npz")
    loaded, header = load_model(tmp_path / "m.npz")
    assert header["method"] == name and header["bits"] == 16
    np.testing.assert_array_equal(loaded.encode(X).bits, a.encode(X).bits)


def test_milan_beats_lsh_on_classes_hidden_by_a_nuisance_direction():
    X, y = blobs(n_classes=6, per_class=60, dim=64, spread=1.2, nuisance=6.0, seed=0)
    train = np.arange(len(y)) % 3 != 0
    query = ~train
    lsh = build("lsh", 32, seed=0).fit(X[train])
    milan = build("milan", 32, seed=0, iterations=1500, lr=1e-3).fit(X[train], y[train])
    m_lsh = map_all(lsh, X[train], y[train], X[query], y[query])
    m_milan = map_all(milan, X[train], y[train], X[query], y[query])
    assert m_milan > 0.9
    assert m_milan > m_lsh + 0.2


def test_unknown_method_and_parameter_are_errors():
    with pytest.raises(RshashError, match="unknown hashing method 'nope'"):
        get_method("nope")
    with pytest.raises(RshashError, match="milan.*unknown parameter.*epochs"):
        build("milan", 16, epochs=3)
    with pytest.raises(RshashError, match="multiple of 8"):
        build("lsh", 12)


@pytest.mark.parametrize("sampling", ["class_pair", "random"])
def test_milan_triplets_are_valid(sampling):
    y = np.array([0] * 5 + [1] * 3 + [2] * 7 + [3] * 2)
    m = build("milan", 8, sampling=sampling, triplets_per_batch=50)
    groups = ClassGroups(y, min_per_class=2)
    rng = np.random.default_rng(0)
    seen_neg = set()
    for _ in range(50):
        a, p, n = m._sample(rng, groups)
        assert (y[a] == y[p]).all() and (y[a] != y[n]).all()
        if sampling == "random":
            assert (a != p).all()
        else:
            assert len(set(y[a])) == 1 and len(set(y[n])) == 1
        seen_neg |= set(n.tolist())
    assert seen_neg == set(range(len(y)))  # every image serves as a negative
