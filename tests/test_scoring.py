"""The one-pass statistics (rshash.scoring) against a plain-Python ranking and the
numpy metric definitions (rshash.metrics)."""

import numpy as np
import pytest

from rshash.metrics import (
    average_precision_all,
    hamming_pr,
    hamming_pr_from_counts,
    nmrr,
    nmrr_cap,
    nmrr_from_ranks,
)
from rshash.scoring import score_distances, score_hamming, score_ranked


def tied_case(seed: int, bits: int, nq: int = 37, ndb: int = 150, pool: int = 5):
    """Codes drawn from a small pool (heavy ties), labels 0..3 in the database and
    0..4 for queries (label 4 has no relevant item), the first 12 queries copies of
    database items left out of their own ranking."""
    rng = np.random.default_rng([seed, bits])
    codes = rng.integers(0, 2, (pool, bits))
    db01 = codes[rng.integers(0, pool, ndb)]
    q01 = codes[rng.integers(0, pool, nq)]
    db_labels = rng.integers(0, 4, ndb)
    q_labels = rng.integers(0, 5, nq)
    exclude = np.full(nq, -1)
    n_out = min(12, nq)
    exclude[:n_out] = rng.choice(ndb, n_out, replace=False)
    q01[:n_out], q_labels[:n_out] = db01[exclude[:n_out]], db_labels[exclude[:n_out]]
    return np.packbits(q01, axis=1), np.packbits(db01, axis=1), q_labels, db_labels, exclude


def python_ranking(q_packed, db_packed, exclude):
    """Each query's database indices sorted by (Hamming distance, index), left-out item
    dropped, and the distances, with plain Python."""
    rankings, distances = [], []
    for i, q in enumerate(q_packed):
        d = [
            sum(bin(a ^ b).count("1") for a, b in zip(q.tolist(), row.tolist()))
            for row in db_packed
        ]
        items = sorted(
            (j for j in range(len(db_packed)) if j != exclude[i]), key=lambda j: (d[j], j)
        )
        rankings.append(items)
        distances.append(d)
    return rankings, np.array(distances)


def relevant_counts(q_labels, db_labels, exclude):
    n = (db_labels[None, :] == q_labels[:, None]).sum(1)
    left_out = (exclude >= 0) & (db_labels[np.maximum(exclude, 0)] == q_labels)
    return n - left_out


def check(scores, rankings, q_labels, db_labels, exclude, n_rel, gtm, width):
    for i, items in enumerate(rankings):
        rel = db_labels[items] == q_labels[i]
        assert scores.ap_sum[i] / max(n_rel[i], 1) == pytest.approx(
            average_precision_all(rel[None], n_rel[i : i + 1])[0], abs=1e-12
        )
        top = scores.top[i]
        assert top[: len(items)].tolist() == items[:width]
        assert (top[len(items) :] == -1).all()
        assert nmrr_from_ranks(
            scores.rank_sum[i : i + 1], scores.n_within[i : i + 1], n_rel[i : i + 1], gtm
        )[0] == pytest.approx(nmrr(rel[None], n_rel[i : i + 1], gtm)[0], abs=1e-12)


@pytest.mark.parametrize("bits", [8, 16, 24, 64, 72, 128, 200, 256])
@pytest.mark.parametrize("threads", [1, 2])
def test_score_hamming_matches_python_ranking(bits, threads):
    qp, dp, ql, dl, exclude = tied_case(0, bits)
    n_rel = relevant_counts(ql, dl, exclude)
    gtm = int(n_rel.max())
    rankings, dist = python_ranking(qp, dp, exclude)
    for width in (1, 20, 149, 150, 400):  # past the ranking: -1 padding
        scores = score_hamming(qp, dp, ql, dl, nmrr_cap(n_rel, gtm), width, exclude, threads)
        check(scores, rankings, ql, dl, exclude, n_rel, gtm, width)
    assert scores.counts.shape == (len(qp), bits + 1)
    keep = np.arange(len(dl))[None, :] != exclude[:, None]
    for i in range(len(qp)):
        expected = hamming_pr(dist[i][keep[i]][None], (dl == ql[i])[keep[i]][None], bits)
        got = hamming_pr_from_counts(scores.counts[i : i + 1], scores.relevant[i : i + 1])
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert scores.counts[i].sum() == keep[i].sum()


def test_score_ranked_reads_any_ranking():
    """A random order (not by distance) scores as its own ranking, left-out item dropped."""
    qp, dp, ql, dl, exclude = tied_case(1, 16)
    rng = np.random.default_rng(1)
    ranked = np.stack([rng.permutation(len(dl)) for _ in ql])
    n_rel = relevant_counts(ql, dl, exclude)
    gtm = int(n_rel.max())
    rankings = [[j for j in row if j != exclude[i]] for i, row in enumerate(ranked.tolist())]
    for threads in (1, 2):
        for width in (5, 150):
            scores = score_ranked(ranked, ql, dl, nmrr_cap(n_rel, gtm), width, exclude, threads)
            check(scores, rankings, ql, dl, exclude, n_rel, gtm, width)
    assert scores.counts is None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threads", [1, 2])
def test_score_distances_matches_python_ranking(seed, threads):
    """Real-valued distances with heavy exact ties (few distinct values, among them the
    left-out item's), or none, ranked by (distance, index) in plain Python."""
    rng = np.random.default_rng(seed)
    nq, ndb = 23, int(rng.integers(2, 90))
    if seed % 3 == 2:
        dist = rng.random((nq, ndb))
    else:
        dist = rng.integers(0, 1 + seed, (nq, ndb)) * 0.75
    db_labels = rng.integers(0, 3, ndb)
    q_labels = rng.integers(0, 4, nq)
    exclude = np.where(rng.random(nq) < 0.5, rng.integers(0, ndb, nq), -1)
    n_rel = relevant_counts(q_labels, db_labels, exclude)
    gtm = max(int(n_rel.max()), 1)
    rankings = [
        sorted((j for j in range(ndb) if j != exclude[i]), key=lambda j, i=i: (dist[i, j], j))
        for i in range(nq)
    ]
    for width in (1, 7, ndb, ndb + 5):
        scores = score_distances(
            dist, q_labels, db_labels, nmrr_cap(n_rel, gtm), width, exclude, threads
        )
        check(scores, rankings, q_labels, db_labels, exclude, n_rel, gtm, width)
    assert scores.counts is None


def test_score_distances_refuses_non_finite_values():
    dist = np.array([[0.5, np.nan, 1.0]])
    with pytest.raises(ValueError, match="NaN or infinity"):
        score_distances(dist, [0], [0, 1, 0], [2], 3)
    with pytest.raises(ValueError, match="NaN or infinity"):
        score_distances(np.array([[0.5, np.inf, 1.0]]), [0], [0, 1, 0], [2], 3)


def test_hand_example():
    """Query 0000 against codes at distances 1, 0, 2, 0 (labels 1, 1, 0, 0), query label 1:
    ranking 1, 3, 0, 2 (ties by index) with relevance 1, 0, 1, 0."""
    db = np.packbits(
        np.array([[1, 0, 0, 0, 0, 0, 0, 0], [0] * 8, [1, 1, 0, 0, 0, 0, 0, 0], [0] * 8]), axis=1
    )
    q = np.zeros((1, 1), np.uint8)
    scores = score_hamming(q, db, [1], [1, 1, 0, 0], k_cap=[2], width=3)
    assert scores.top.tolist() == [[1, 3, 0]]
    assert scores.ap_sum[0] == pytest.approx(1 / 1 + 2 / 3)
    assert (scores.rank_sum[0], scores.n_within[0]) == (1, 1)  # rank 3 is past K = 2
    assert scores.counts[0, :3].tolist() == [2, 1, 1]
    assert scores.relevant[0, :3].tolist() == [1, 1, 0]
    # leaving item 1 out: ranking 3, 0, 2 with relevance 0, 1, 0
    scores = score_hamming(q, db, [1], [1, 1, 0, 0], k_cap=[2], width=3, exclude=[1])
    assert scores.top.tolist() == [[3, 0, 2]]
    assert scores.ap_sum[0] == pytest.approx(1 / 2)
    assert scores.counts[0, :3].tolist() == [1, 1, 1]


def test_bad_arguments_are_named():
    qp, dp, ql, dl, exclude = tied_case(2, 8, nq=4, ndb=10)
    cap = np.ones(4, np.int64)
    with pytest.raises(ValueError, match="exclude"):
        score_hamming(qp, dp, ql, dl, cap, 5, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="q_labels"):
        score_hamming(qp, dp, ql[:3], dl, cap, 5)
    with pytest.raises(ValueError, match="database labels"):
        score_hamming(qp, dp, ql, dl[:9], cap, 5)
    with pytest.raises(ValueError, match="must be packed codes of shape"):
        score_hamming(qp, np.zeros((10, 2), np.uint8), ql, dl, cap, 5)
    with pytest.raises(ValueError, match="outside"):
        score_ranked(np.full((4, 10), 10), ql, dl, cap, 5)
