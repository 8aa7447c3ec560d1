"""One training job: fit a method on a split's train part, write model and codes.

The model stays in memory between fitting and encoding, so one job writes
both ``models/{cell}.npz`` and ``codes/{cell}.parquet``.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from rshash import RshashError
from rshash.codes import write_codes
from rshash.data.splits import read_split
from rshash.features import read_features
from rshash.methods import build


def train_cell(features_path, split_path, method: str, bits: int, seed: int,
               params: dict | None, model_out, codes_out, threads: int = 1) -> dict:
    """Fit ``method`` (a registered base method) and write its model and codes."""
    start = time.perf_counter()
    feats = read_features(features_path)
    split = read_split(split_path)
    index = {image_id: i for i, image_id in enumerate(feats.image_id)}
    missing = [i for i in split.image_id.unique() if i not in index]
    if missing:
        raise RshashError(f"{split_path}: {len(missing)} image(s) not in {features_path}, "
                          f"e.g. {missing[0]}")
    rows = split.image_id.map(index).to_numpy()
    train_rows = rows[(split.role == "train").to_numpy()]
    if len(train_rows) == 0:
        raise RshashError(f"{split_path}: no train images")
    with threadpool_limits(limits=threads):
        model = build(method, bits, seed=seed, threads=threads, **(params or {}))
        model.fit(feats.features[train_rows], feats.label[train_rows] if model.supervised else None)
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        enc = model.encode(feats.features[unique_rows])
    seconds = time.perf_counter() - start
    model.save(model_out, extra={"features": str(features_path), "split": str(split_path),
                                 "backbone": feats.attrs.get("backbone")})
    pick = lambda a: None if a is None else a[inverse]  # noqa: E731
    write_codes(
        codes_out,
        image_id=split.image_id.to_numpy(),
        label=feats.label[rows],
        role=split.role.to_numpy(),
        packed=np.packbits(enc.bits.astype(bool), axis=1)[inverse],
        value=enc.value[inverse],
        bits=bits,
        class_prob=pick(enc.class_prob),
        predicted_label=pick(enc.predicted_label),
        metadata={"rshash.method": method, "rshash.backbone": str(feats.attrs.get("backbone")),
                  "rshash.train_seconds": f"{seconds:.3f}"},
    )
    return {"seconds": seconds, "n_train": int(len(train_rows))}
