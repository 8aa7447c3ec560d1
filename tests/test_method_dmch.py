"""dmch: BatchAll mining and loss against brute force, the four loss terms, what each
ablation switch changes, the class head. (Determinism, persistence and the quality
floor: the contract in test_methods.py.)"""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from rshash import RshashError  # noqa: E402
from rshash.methods import build, method_info  # noqa: E402
from rshash.methods.dmch import (  # noqa: E402
    balance_loss,
    batch_all_triplet_loss,
    batch_all_triplets,
    category_loss,
    dmch_loss,
    mean_positive,
    push_loss,
    random_triplets,
    triplet_losses,
)

VARIANTS = ("dmch", "dmch_ntri", "dmch_nbatchall", "dmch_ncat", "dmch_npush", "dmch_nbal")


def brute_force(emb, labels, margin):
    """Triple loop over every (a, p, n): the BatchAll loss and its positive count."""
    e, y = emb.tolist(), labels.tolist()
    d = lambda i, j: sum((u - v) ** 2 for u, v in zip(e[i], e[j]))  # noqa: E731
    losses = [
        max(0.0, d(a, p) - d(a, n) + margin)
        for a, p, n in itertools.product(range(len(y)), repeat=3)
        if a != p and y[a] == y[p] and y[n] != y[a]
    ]
    positive = [v for v in losses if v > 0]
    return (sum(positive) / len(positive) if positive else 0.0), len(positive), len(losses)


def params_of(variant):
    """The variant's parameters as config.yaml defines them."""
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    entry = cfg["variants"][variant]
    assert entry["method"] == "dmch"
    return entry.get("params") or {}


# -- mining and the BatchAll loss ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_all_loss_matches_a_brute_force_triple_loop(seed):
    g = torch.Generator().manual_seed(seed)
    emb = torch.rand(7, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 0])
    # margin 0.2: a mixture of zero and positive triplets on points in the unit cube
    loss, count = batch_all_triplet_loss(emb, labels, margin=0.2)
    expected, n_pos, n_all = brute_force(emb, labels, 0.2)
    assert 0 < n_pos < n_all  # the test exercises the filtering
    assert count == n_pos
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_batch_all_triplets_are_every_valid_triplet_once():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    a, p, n = batch_all_triplets(labels)
    got = sorted(zip(a.tolist(), p.tolist(), n.tolist()))
    y = labels.tolist()
    want = sorted(
        (i, j, k)
        for i, j, k in itertools.product(range(6), repeat=3)
        if i != j and y[i] == y[j] and y[k] != y[i]
    )
    assert got == want
    # P x K batch: P K (K - 1) (P K - K) triplets (paper sec. 3.3); 3 x 30 -> 156,600
    pk = torch.arange(3).repeat_interleave(30)
    assert len(batch_all_triplets(pk)[0]) == 3 * 30 * 29 * 60


def test_batch_all_loss_without_positive_triplets_is_zero_with_a_gradient():
    emb = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]], requires_grad=True)
    loss, count = batch_all_triplet_loss(emb, torch.tensor([0, 0, 1, 1]), margin=0.2)
    assert count == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_mean_positive_ignores_the_zero_losses():
    loss, count = mean_positive(torch.tensor([0.0, 0.3, 0.0, 0.1]))
    assert count == 2 and loss.item() == pytest.approx(0.2)


def test_random_triplets_one_valid_triplet_per_anchor():
    labels = torch.arange(3).repeat_interleave(5)
    a, p, n = random_triplets(labels, np.random.default_rng(0))
    assert a.tolist() == list(range(15))
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    a2, p2, n2 = random_triplets(labels, np.random.default_rng(1))
    assert not (torch.equal(p, p2) and torch.equal(n, n2))


def test_triplet_losses_hand_computed():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # anchor 0, positive 1 (d = 1), negative 2 (d = 4): max(0, 1 - 4 + 0.2) = 0
    # anchor 1, positive 0 (d = 1), negative 2 (d = 5): 0; swapped roles: 4 - 1 + 0.2 = 3.2
    idx = (torch.tensor([0, 1, 0]), torch.tensor([1, 0, 2]), torch.tensor([2, 2, 1]))
    torch.testing.assert_close(triplet_losses(emb, *idx, 0.2), torch.tensor([0.0, 0.0, 3.2]))


# -- the other terms and the weighted sum ---------------------------------------------------


def test_push_balance_and_category_terms_hand_computed():
    f = torch.tensor([[0.9, 0.1], [0.5, 0.7]])
    # push: -1/K mean ||f - .5||^2 = -(0.32 + 0.04) / 2 / 2
    assert push_loss(f).item() == pytest.approx(-0.09)
    # balance: mean (row mean - .5)^2 = (0 + 0.01) / 2
    assert balance_loss(f).item() == pytest.approx(0.005)
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert category_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected)


def _batch(seed=0, bits=8, n_classes=3, per_class=4):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n_classes * per_class, bits, generator=g, requires_grad=True)
    logits = torch.randn(n_classes * per_class, n_classes, generator=g, requires_grad=True)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return f, logits, labels


def test_loss_is_the_weighted_sum_of_the_four_terms():
    f, logits, labels = _batch()
    tri, _ = batch_all_triplet_loss(torch.nn.functional.normalize(f, dim=1), labels, 0.2)
    expected = (
        tri + 0.5 * category_loss(logits, labels) + 0.001 * push_loss(f) + 2.0 * balance_loss(f)
    )
    total, terms = dmch_loss(
        f, logits, labels, batch_all_triplets(labels), 0.2, cat_weight=0.5, push=0.001, balance=2.0
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"tri", "n_triplets", "n_positive", "cat", "push", "bal"}
    assert terms["n_triplets"] == 3 * 4 * 3 * 8
    # normalize=False: eq. 2 on the raw sigmoid outputs
    raw, _ = dmch_loss(
        f,
        logits,
        labels,
        batch_all_triplets(labels),
        0.2,
        use_cat=False,
        push=0.0,
        balance=0.0,
        normalize=False,
    )
    assert raw.item() == pytest.approx(batch_all_triplet_loss(f, labels, 0.2)[0].item())


def test_each_switch_removes_its_term_and_nothing_else():
    f, logits, labels = _batch(seed=3)
    trip = batch_all_triplets(labels)
    tri = batch_all_triplet_loss(torch.nn.functional.normalize(f, dim=1), labels, 0.2)[0]
    cat, push, bal = category_loss(logits, labels), push_loss(f), balance_loss(f)

    def loss(**kw):
        return dmch_loss(f, logits, labels, trip, 0.2, **kw)[0].item()

    full = (tri + cat + 0.001 * push + bal).item()
    assert loss() == pytest.approx(full, rel=1e-6)
    # nTri: the other terms alone
    assert loss(use_triplet=False) == pytest.approx((cat + 0.001 * push + bal).item(), rel=1e-6)
    assert dmch_loss(f, logits, labels, None, 0.2, use_triplet=False)[0].item() == pytest.approx(
        loss(use_triplet=False)
    )
    # nCat / nPush / nBal
    assert loss(use_cat=False) == pytest.approx(full - cat.item(), rel=1e-6)
    assert loss(push=0.0) == pytest.approx(full - 0.001 * push.item(), rel=1e-6)
    assert loss(balance=0.0) == pytest.approx(full - bal.item(), rel=1e-6)
    # nCat: no gradient reaches the classifier's logits
    total, _ = dmch_loss(f, logits, labels, trip, 0.2, use_cat=False)
    total.backward()
    assert logits.grad is None and f.grad.abs().sum() > 0


def test_random_mining_averages_over_all_its_triplets():
    f, logits, labels = _batch(seed=4)
    e = torch.nn.functional.normalize(f, dim=1)
    trip = random_triplets(labels, np.random.default_rng(0))
    per = triplet_losses(e, *trip, 0.2)
    assert (per == 0).any() and (per > 0).any()
    total, terms = dmch_loss(
        f, logits, labels, trip, 0.2, use_cat=False, push=0.0, balance=0.0, only_positive=False
    )
    assert total.item() == pytest.approx(per.mean().item(), rel=1e-6)  # zeros included
    assert terms["n_triplets"] == len(labels)
    assert terms["n_positive"] == int((per > 0).sum())


# -- the method ------------------------------------------------------------------------------


def test_registry_defaults_and_bad_parameters():
    assert method_info("dmch").class_head
    m = build("dmch", 32)
    assert (m.P, m.K, m.margin, m.push, m.lr, m.betas) == (3, 30, 0.2, 0.001, 1e-4, (0.5, 0.9))
    assert m.mining == "batch_all" and m.use_triplet and m.use_cat
    with pytest.raises(RshashError, match="mining"):
        build("dmch", 32, mining="hard")
    with pytest.raises(RshashError, match="unknown parameter"):
        build("dmch", 32, n_epochs=3)  # the policy has max_epochs and epochs


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_variants_switch_their_terms_during_training(variant, blobs):
    """Each ablation in config.yaml trains with exactly the terms it should."""
    X, y = blobs()
    params = {**params_of(variant), "max_epochs": 1, "images_per_class": 5}  # a short run
    m = build("dmch", 16, seed=0, **params).fit(X, y)
    terms = m.history[-1][2]
    want = {
        "dmch": {"tri", "cat", "push", "bal"},
        "dmch_ntri": {"cat", "push", "bal"},
        "dmch_nbatchall": {"tri", "cat", "push", "bal"},
        "dmch_ncat": {"tri", "push", "bal"},
        "dmch_npush": {"tri", "cat", "bal"},
        "dmch_nbal": {"tri", "cat", "push"},
    }[variant]
    assert set(terms) - {"n_triplets", "n_positive"} == want
    if "tri" in want:  # 3 classes x 5 images: BatchAll 3*5*4*10 triplets, random one per anchor
        assert terms["n_triplets"] == (15 if variant == "dmch_nbatchall" else 600)


def test_without_the_category_loss_the_class_head_is_untrained_and_not_reported(blobs):
    X, y = blobs()
    m = build("dmch", 16, seed=0, max_epochs=1, images_per_class=5, use_cat=False)
    m.fit(X, y)
    fresh = build("dmch", 16, seed=0, max_epochs=0, images_per_class=5).fit(X, y)
    np.testing.assert_array_equal(
        m.net.classifier.weight.detach(), fresh.net.classifier.weight.detach()
    )
    enc = m.encode(X)
    assert enc.class_prob is None and enc.predicted_label is None


def test_random_mining_is_seeded(blobs):
    X, y = blobs()
    kw = dict(max_epochs=5, images_per_class=5)
    r1 = build("dmch", 16, seed=1, mining="random", **kw).fit(X, y).encode(X).value
    r2 = build("dmch", 16, seed=1, mining="random", **kw).fit(X, y).encode(X).value
    np.testing.assert_array_equal(r1, r2)
    batch_all = build("dmch", 16, seed=1, **kw).fit(X, y).encode(X).value
    assert not np.array_equal(r1, batch_all)


def test_class_head_is_consistent_on_demo_features(
    demo_features, demo_encoded, class_head_accuracy
):
    """(Its quality floor on demo_features: tests/test_methods.py.)"""
    dmch, q, db = demo_encoded("dmch")
    assert class_head_accuracy(q, demo_features["y_query"]) > 0.25  # chance 0.1
    # the push term drives the sigmoid outputs away from 0.5; balance keeps bits half on
    assert np.abs(db.value - 0.5).mean() > 0.3
    assert 0.35 < db.bits.mean() < 0.65
