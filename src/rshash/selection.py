"""Training-only model selection: score settings on a validation part of the train split.

The train part of a split is divided per class into a fitting part and a
validation part (``val_fraction``); each setting is fitted on the first and
scored with the validation images as queries against the fitting part as
database. Query images of the split are never touched.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from rshash.data.splits import read_split, train_part
from rshash.evaluate import evaluate_arrays
from rshash.features import read_features
from rshash.methods import build, get_method
from rshash.methods.convergence import Validation


def train_validation(labels: np.ndarray, val_fraction: float, seed: int):
    """Per-class split of train rows into (fit, validation) row positions."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, int(round(val_fraction * len(rows))))
        val.extend(rows[:n_val])
        fit.extend(rows[n_val:])
    return np.sort(fit), np.sort(val)


def grid_search(
    features_path,
    split_path,
    method: str,
    bits: int,
    base: dict,
    grid: dict[str, list],
    val_fraction: float = 0.2,
    seed: int = 0,
    threads: int = 1,
    metric: str = "map_at_20",
):
    """Yield (params, metrics, seconds) for every combination of ``grid`` over ``base``."""
    feats = read_features(features_path)
    split = read_split(split_path)
    index = {k: i for i, k in enumerate(feats.image_id)}
    train = split[train_part(split)].image_id.map(index).to_numpy()  # train and val rows
    X, y = feats.features[train], feats.label[train]
    fit, val = train_validation(y, val_fraction, seed)
    keys = list(grid)
    trained = get_method(method).trained()
    for values in itertools.product(*(grid[k] for k in keys)):
        params = {**base, **dict(zip(keys, values))}
        start = time.perf_counter()
        # a trained method stops on the same validation part it is scored on (as the
        # pipeline stops on the split's val rows), and is scored as it stopped: its refit
        # would fit the validation part too; a closed-form one just fits
        stopped = {"refit": False} if trained else {}
        model = build(method, bits, seed=seed, threads=threads, **params, **stopped)
        val_part = Validation(X[val], y[val]) if trained else None
        model.fit(X[fit], y[fit] if model.supervised else None, validation=val_part)
        q, d = model.encode(X[val]), model.encode(X[fit])
        result = evaluate_arrays(np.packbits(q.bits, 1), y[val], np.packbits(d.bits, 1), y[fit])
        yield params, result, time.perf_counter() - start
