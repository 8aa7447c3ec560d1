"""pcah: codes are the signs of scikit-learn's centred PCA projection. (Determinism,
persistence and retrieval quality on real features: test_methods.py.)"""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from rshash import RshashError
from rshash.methods import build


def test_codes_are_the_sign_of_sklearn_pca_projection(blobs):
    X, _ = blobs(per_class=30, dim=40)
    Xq = blobs(per_class=30, dim=40, seed=1)[0]
    m = build("pcah", 16).fit(X)
    ref = PCA(n_components=16, svd_solver="full").fit(X.astype(np.float64))
    proj = ref.transform(Xq.astype(np.float64))
    enc = m.encode(Xq)
    np.testing.assert_allclose(enc.value, proj, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(enc.bits, (proj > 0).astype(np.uint8))
    assert enc.bits.shape == (len(Xq), 16) and enc.bits.dtype == np.uint8
    assert enc.value.dtype == np.float32


def test_projections_are_uncorrelated_with_decreasing_variance_on_train(blobs):
    X, _ = blobs(per_class=30, dim=40)
    v = build("pcah", 16).fit(X).encode(X).value.astype(np.float64)
    np.testing.assert_allclose(v.mean(0), 0, atol=1e-4)
    C = np.cov(v, rowvar=False)
    np.testing.assert_allclose(C - np.diag(np.diag(C)), 0, atol=1e-3 * C.max())
    assert np.all(np.diff(np.diag(C)) <= 1e-6)


def test_more_bits_than_the_pca_rank_is_an_error(blobs):
    X, _ = blobs(per_class=2, dim=40)  # 8 rows
    with pytest.raises(RshashError, match="PCA rank"):
        build("pcah", 16).fit(X)
