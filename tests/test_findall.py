"""Find-all (rshash.archive.findall): each rule against a small case computed by hand or by
a plain reference, the threshold's semantics, and the merge of chip footprints."""

import numpy as np
import pytest

from rshash import RshashError
from rshash.archive import findall
from rshash.archive.findall import RULES, find_all, merge_footprints, score
from rshash.archive.query import ALPHA, BETA, GAMMA, feedback_score


def packed(bits_rows):
    return np.packbits(np.array(bits_rows, dtype=bool), axis=1)


CODES = packed(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],  # 0: the query
        [0, 0, 0, 0, 0, 0, 0, 1],  # 1: relevant
        [1, 1, 1, 1, 1, 1, 1, 1],  # 2: not relevant
        [0, 0, 0, 0, 0, 0, 1, 1],  # 3
        [1, 1, 1, 1, 0, 0, 0, 0],  # 4
    ]
)


def test_rocchio_of_the_query_alone_is_the_share_of_agreeing_bits():
    s = findall.rocchio(CODES, None, [0])
    np.testing.assert_allclose(s, [1, 7 / 8, 0, 6 / 8, 4 / 8])


def test_rocchio_is_feedback_score_on_a_scale_of_bits():
    s = findall.rocchio(CODES, None, [0], [1], [2])
    # chip 3: d(q) = 2, d(relevant) = 1, d(rejected) = 6, by hand
    fs3 = ALPHA * 2 + BETA * 1 - GAMMA * 6
    assert s[3] == pytest.approx(1 - fs3 / ((ALPHA + BETA - GAMMA) * 8))
    bits = np.unpackbits(CODES, axis=1).astype(int)
    dist = np.abs(bits[[0, 1, 2]][:, None] - bits[None]).sum(-1)
    expected = 1 - feedback_score(dist, 1, 1) / ((ALPHA + BETA - GAMMA) * 8)
    np.testing.assert_allclose(s, expected)
    # the order a search's feedback gives: lower feedback score first
    assert list(np.argsort(-s, kind="stable")) == list(np.argsort(feedback_score(dist, 1, 1)))


def test_rocchio_without_a_query_uses_the_relevant_chips_for_it():
    s = findall.rocchio(CODES, None, [], [1])
    np.testing.assert_allclose(s, findall.rocchio(CODES, None, [1]))


def toy(seed=0, n=1000, d=5):
    """A linearly separable set: class 1 around +3 on the first axis, class 0 around -3;
    20 of ``n`` chips positive (a small share, as in an archive)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) < 20
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 0] += np.where(y, 3.0, -3.0)
    return X, y


def reference_fit(Z, y, w, l2):
    """Newton's method on the probe's objective (a plain reference for L-BFGS)."""
    A = np.hstack([Z, np.ones((len(Z), 1))])
    theta = np.zeros(A.shape[1])
    reg = np.full(A.shape[1], l2)
    reg[-1] = 0
    for _ in range(50):
        m = y * (A @ theta)
        p = 1 / (1 + np.exp(m))
        grad = A.T @ (-w * y * p) + reg * theta
        hess = (A * (w * p * (1 - p))[:, None]).T @ A + np.diag(reg)
        theta -= np.linalg.solve(hess, grad)
    return theta[:-1], theta[-1]


def test_logistic_fit_matches_a_newton_reference():
    X, y = toy()
    s = np.where(y, 1.0, -1.0)
    w = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    coef, b = findall._fit_logistic(X, s, w, l2=0.1)
    ref_coef, ref_b = reference_fit(X.astype(np.float64), s, w, 0.1)
    np.testing.assert_allclose(coef, ref_coef, atol=1e-4)
    assert b == pytest.approx(ref_b, abs=1e-4)


def test_probe_features_separates_a_separable_set_from_a_few_marks():
    X, y = toy()
    # a rejected chip weighed as a pseudo-negative: two random rejections at the default
    # 50x would outweigh the 100 pseudo-negatives of this small toy
    s = findall.probe_features(None, X, [0], [1, 2, 3], [150, 151], pseudo=100, rejected=1)
    assert s.min() >= 0 and s.max() <= 1  # a probability
    assert s[y].min() > s[~y].max()  # the ranking separates


def test_probe_features_equals_the_reference_fit_on_its_own_sample():
    X, y = toy(n=200)
    n = len(X)  # pseudo >= the unmarked chips: every unmarked chip is a pseudo-negative
    s = findall.probe_features(None, X, [0], [1, 2], [3], pseudo=n, l2=0.5, rejected=3)
    pos, neg = np.array([0, 1, 2]), np.arange(3, n)
    Z = X[np.concatenate([pos, neg])].astype(np.float64)
    mean, std = Z.mean(0), Z.std(0)
    sign = np.r_[np.ones(3), -np.ones(len(neg))]
    w_neg = np.r_[3.0, np.ones(len(neg) - 1)]  # the rejected chip 3 weighs 3 pseudo-negatives
    w = np.r_[np.full(3, 0.5 / 3), 0.5 * w_neg / w_neg.sum()]
    coef, b = reference_fit((Z - mean) / std, sign, w, 0.5)
    expected = 1 / (1 + np.exp(-(((X - mean) / std) @ coef + b)))
    np.testing.assert_allclose(s, expected, atol=1e-4)


def test_probe_features_reads_a_memory_mapped_matrix_in_chunks(tmp_path):
    X, _ = toy()
    np.save(tmp_path / "f.npy", X)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    a = findall.probe_features(None, X, [0], [1], [100])
    b = findall.probe_features(None, mapped, [0], [1], [100], chunk=7)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_probe_codes_scores_by_byte_tables_as_by_unpacked_bits():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (50, 4), dtype=np.uint8)
    coef, b = rng.normal(size=32), 0.3
    np.testing.assert_allclose(
        findall.linear_on_codes(codes, coef, b), findall.unpack_signs(codes) @ coef + b
    )


def test_probe_codes_separates_codes_that_differ_in_their_first_bits():
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2, (1000, 16)).astype(bool)
    y = np.arange(1000) < 10
    bits[:, :4] = y[:, None]
    s = findall.probe_codes(np.packbits(bits, axis=1), None, [0], [1, 2], [50], pseudo=100)
    assert s[y].min() > s[~y].max()


def test_pseudo_negatives_are_seeded_and_never_marked():
    marks = np.array([0]), np.array([5]), np.array([7])
    rows, sign, w = findall._training_rows(1000, *marks, 30, 0, rejected=10)
    again, _, _ = findall._training_rows(1000, *marks, 30, 0, rejected=10)
    np.testing.assert_array_equal(rows, again)
    assert list(rows[:3]) == [0, 5, 7] and len(set(rows)) == 33
    assert w[sign > 0].sum() == pytest.approx(0.5) == w[sign < 0].sum()
    assert w[2] == pytest.approx(10 * w[3])  # the rejected chip against a pseudo-negative
    everything, _, _ = findall._training_rows(10, *marks, 30, 0)  # fewer chips than asked
    assert sorted(everything[3:]) == [1, 2, 3, 4, 6, 8, 9]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_is_deterministic_and_refuses_bad_marks(rule):
    X, _ = toy(n=40)
    codes = np.packbits(X > 0, axis=1)
    a = score(rule, codes, X, [0], [1], [30])
    np.testing.assert_array_equal(a, score(rule, codes, X, [0], [1], [30]))
    assert a.shape == (40,) and a.dtype == np.float64
    with pytest.raises(RshashError, match="relevant_rows: row 40 out of range"):
        score(rule, codes, X, [0], [40])
    with pytest.raises(RshashError, match="not_relevant_rows: row 1 is also"):
        score(rule, codes, X, [0], [1], [1])
    with pytest.raises(RshashError, match="query_rows: find-all needs"):
        score(rule, codes, X, [], [], [3])


def test_an_unknown_rule_is_named():
    with pytest.raises(RshashError, match="rule: unknown find-all rule 'svm'"):
        score("svm", CODES, None, [0])


def test_find_all_returns_marked_first_then_at_or_above_the_threshold_never_rejected():
    s = np.array([0.9, 0.2, 0.5, 0.7, 0.5, 0.95, 0.1])
    rows, got = find_all(s, 0.5, relevant_rows=[1, 0], not_relevant_rows=[5])
    # relevant first by score (0, then 1 below the threshold), then >= 0.5 with ties by row
    assert list(rows) == [0, 1, 3, 2, 4]
    np.testing.assert_array_equal(got, s[rows])
    everything, _ = find_all(s, -np.inf, not_relevant_rows=[5])
    assert list(everything) == [0, 3, 2, 4, 1, 6]
    assert len(find_all(s, 0.99)[0]) == 0


@pytest.mark.parametrize("threshold", [np.nan, np.inf])
def test_find_all_refuses_a_threshold_no_chip_can_meet(threshold):
    with pytest.raises(RshashError, match="threshold: must be a number"):
        find_all(np.zeros(3), threshold)


def test_find_all_refuses_rows_out_of_range_and_bad_scores():
    with pytest.raises(RshashError, match="relevant_rows: row -1 out of range"):
        find_all(np.zeros(3), 0.5, relevant_rows=[-1])
    with pytest.raises(RshashError, match="scores: a finite score"):
        find_all(np.array([0.1, np.nan]), 0.5)


def test_adjacent_chips_merge_into_one_polygon_per_patch():
    block = [[x, y, x + 1, y + 1] for x in (0, 1) for y in (0, 1)]  # a 2 x 2 block
    (square,) = merge_footprints(block)
    assert square.area == pytest.approx(4) and square.equals(square.envelope)
    assert square.bounds == (0, 0, 2, 2)
    apart = merge_footprints(block + [[5, 5, 6, 6], [6, 6, 7, 7]])  # corners touch
    assert [p.area for p in apart] == [4, 1, 1]
    offset = merge_footprints([[0, 0, 2, 2], [1, 1, 3, 3]])  # overlapping offset chips
    assert len(offset) == 1 and offset[0].area == pytest.approx(7)
    assert merge_footprints(np.zeros((0, 4))) == []
