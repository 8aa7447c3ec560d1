"""Bounded memory: blockwise evaluation equals a whole-matrix evaluation, and
streamed extraction does not depend on batch size or decode workers."""

import numpy as np
import pytest

import rshash.evaluate as ev
import rshash.scoring as sc
from rshash.codes import pack_bits
from rshash.data.manifest import scan_folder, write_manifest
from rshash.data.synthetic import generate
from rshash.evaluate import Evaluation, evaluate_arrays
from rshash.features import extract, read_arrays, read_features
from rshash.metrics import compute

BITS = 16


def tied_codes(seed: int, nq: int = 23, ndb: int = 61):
    """Queries and database drawn from five codes (many ties), with class heads,
    leave-one-out rows and rotated copies."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, (5, BITS))
    qi, di = rng.integers(0, 5, nq), rng.integers(0, 5, ndb)
    prob = rng.dirichlet(np.ones(3), 5)

    def columns(idx):
        return {
            "packed": pack_bits(pool[idx]),
            "value": pool[idx] - 0.5,
            "class_prob": prob[idx],
            "predicted_label": prob[idx].argmax(1),
        }

    rot = rng.integers(0, 5, (nq, 3))
    rotated = {k: v.reshape(nq, 3, *v.shape[1:]) for k, v in columns(rot.ravel()).items()}
    exclude = np.where(rng.random(nq) < 0.5, rng.integers(0, ndb, nq), -1)
    return (
        columns(qi),
        rng.integers(0, 3, nq),
        columns(di),
        rng.integers(0, 3, ndb),
        exclude,
        rotated,
    )


def _same(a, b):
    """Equal nested metrics/curves (floats to rounding), query_ms aside."""
    if isinstance(a, Evaluation):
        _same((a.metrics, a.curves, a.not_applicable), (b.metrics, b.curves, b.not_applicable))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a.keys() - {"query_ms"}:
            _same(a[k], b[k])
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, str):
        assert a == b
    elif isinstance(a, list) or np.ndim(a):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12)
    else:
        assert a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("ranking", ["hamming", "euclidean", "coarse_to_fine", "category_weighted"])
def test_blockwise_equals_whole(ranking):
    q, ql, db, dl, exclude, rotated = tied_codes(1)
    params = {"top_m": 7} if ranking == "coarse_to_fine" else None
    kwargs = dict(
        ranking_params=params, exclude=exclude, bits=BITS, with_curves=True, rotated=rotated
    )
    whole = evaluate_arrays(q, ql, db, dl, ranking, block=len(ql), **kwargs)
    for block in (1, 4, 9):
        _same(evaluate_arrays(q, ql, db, dl, ranking, block=block, **kwargs), whole)


def test_whole_matches_a_full_matrix_reference():
    """The blockwise result equals ranking every query at once by (distance, index)."""
    q, ql, db, dl, _, _ = tied_codes(2)
    dist = (
        np.unpackbits(q["packed"], axis=1)[:, None, :]
        != np.unpackbits(db["packed"], axis=1)[None, :, :]
    ).sum(2)
    ranked = np.lexsort((np.broadcast_to(np.arange(len(dl)), dist.shape), dist), axis=1)
    rel = dl[ranked] == ql[:, None]
    expected = compute(rel, rel.sum(1))
    got = evaluate_arrays(q["packed"], ql, db["packed"], dl, block=5)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


@pytest.mark.parametrize("ranking", ["hamming", "euclidean", "category_weighted", "coarse_to_fine"])
def test_default_block_bounds_every_per_block_array(monkeypatch, ranking):
    """A query block's arrays (a distance matrix and its sorted copy, or a ranking; the
    top ranks; the Hamming histograms) hold at most BLOCK_ITEMS entries together, and
    the default blocks give the same metrics as one block."""
    q, ql, db, dl, exclude, _ = tied_codes(3)
    whole = evaluate_arrays(
        q, ql, db, dl, ranking, exclude=exclude, block=len(ql), with_curves=True
    )
    matrices, scores = [], []
    real = {
        name: getattr(sc, name) for name in ("score_distances", "score_ranked", "score_hamming")
    }

    def spy_matrix(name, copies):
        def spy(matrix, *args, **kwargs):
            matrices.append(copies * matrix.size)  # a distance matrix and its sorted copy
            return real[name](matrix, *args, **kwargs)

        return spy

    def spy_score(*args, **kwargs):
        out = real["score_hamming"](*args, **kwargs)
        scores.append((len(out.top), out.top.size + out.counts.size + out.relevant.size))
        return out

    monkeypatch.setattr(sc, "score_distances", spy_matrix("score_distances", 2))
    monkeypatch.setattr(sc, "score_ranked", spy_matrix("score_ranked", 1))
    monkeypatch.setattr(sc, "score_hamming", spy_score)
    monkeypatch.setattr(ev, "score_hamming", spy_score)
    monkeypatch.setattr(ev, "BLOCK_ITEMS", 10 * len(dl))
    _same(evaluate_arrays(q, ql, db, dl, ranking, exclude=exclude, with_curves=True), whole)
    if ranking == "hamming":
        assert matrices == []  # ranked and scored in one kernel, no matrix stored
    else:
        assert len(matrices) == len(scores)
    held = [size + (matrices[i] if matrices else 0) for i, (_, size) in enumerate(scores)]
    assert max(held) <= 10 * len(dl)
    assert sum(rows for rows, _ in scores) == len(ql) and len(scores) >= 4


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    generate(root / "images", n_classes=3, per_class=9, size=48, seed=2)
    write_manifest(scan_folder(root / "images"), root / "manifest.parquet")
    return root


@pytest.mark.parametrize("kind", ["features", "layers"])
def test_extraction_is_identical_across_batches_and_workers(tiles, kind):
    runs = {}
    for batch, workers in ((27, 0), (4, 0), (5, 2)):
        out = tiles / f"{kind}_{batch}_{workers}.h5"
        extract(
            tiles / "manifest.parquet",
            "efficientnet_lite0",
            out,
            threads=1,
            batch_size=batch,
            device="cpu",
            num_workers=workers,
            progress=False,
            kind=kind,
            input_size=64,
        )
        runs[batch, workers] = read_arrays(out)
    (one_batch, ids), *others = runs.values()
    assert list(ids) == list(scan_folder(tiles / "images").image_id)
    for arrays, other_ids in others:
        assert list(other_ids) == list(ids) and arrays.keys() == one_batch.keys()
        for name in arrays:
            # one batch of all images is the non-streaming computation; batch size may
            # change the float summation order of a convolution, nothing more
            np.testing.assert_allclose(arrays[name], one_batch[name], rtol=1e-4, atol=1e-5)
    if kind == "features":
        assert read_features(tiles / "features_4_0.h5").attrs["input_size"] == 64
