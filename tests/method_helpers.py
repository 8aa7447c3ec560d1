"""Helpers shared by the method tests (imported by name: pytest puts tests/ on sys.path)."""

import numpy as np

from rshash.evaluate import evaluate_arrays


def blobs(n_classes=4, per_class=20, dim=32, seed=0):
    """Gaussian classes: well-separated centres plus noise of standard deviation 0.5."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(0, 1, (n_classes, dim))[y] + 0.5 * rng.normal(0, 1, (len(y), dim))
    return X.astype(np.float32), y


def map_all(q, yq, d, yd):
    """mAP@all of encoded queries ``q`` against an encoded database ``d`` (Hamming ranking)."""
    return evaluate_arrays(np.packbits(q.bits, 1), yq, np.packbits(d.bits, 1), yd)["map_all"]
