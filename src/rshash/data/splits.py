"""Seeded, stratified splits of a manifest under a protocol preset.

``splits/{dataset}/{protocol}/split{seed}.parquet``: image_id, role in
{train, val, query, database}, one row per role, and ``db_order``: for
database rows a seeded permutation 0..n_db-1 that breaks distance ties
(never class-sorted order, which would leak labels into ties); -1 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from rshash import RshashError
from rshash.digest import read_parquet, write_parquet

ROLES = ("train", "val", "query", "database")


def make_split(
    manifest: pd.DataFrame, protocol: dict, seed: int, name: str = "protocol"
) -> pd.DataFrame:
    """Split per class: ``train_fraction`` of each class trains, the rest queries.

    ``database`` is ``train`` (the train part) or ``query`` (the query part
    itself; with ``leave_one_out`` evaluation removes each query from it).
    ``val_fraction`` carves a validation part out of the train part for
    training-only model selection; it stays in the database.
    """
    database = protocol.get("database", "train")
    check_class_sizes(manifest, protocol, name)
    rng = np.random.default_rng(seed)
    train, val, query = [], [], []
    for _, group in manifest.groupby("label", sort=True):
        ids = group.image_id.to_numpy()
        n_fit, n_val, _ = _class_counts(len(ids), protocol)
        perm = rng.permutation(ids)
        train.extend(perm[:n_fit])
        val.extend(perm[n_fit : n_fit + n_val])
        query.extend(perm[n_fit + n_val :])
    if database == "train":
        db = train + val
    elif database == "query":
        db = list(query)
    else:
        raise RshashError(
            f"protocols.{name}.database: must be 'train' or 'query', got {database!r}"
        )
    db_order = rng.permutation(len(db))
    frames = [
        pd.DataFrame({"image_id": ids, "role": role, "db_order": -1})
        for role, ids in (("train", train), ("val", val), ("query", query))
    ]
    frames.append(pd.DataFrame({"image_id": db, "role": "database", "db_order": db_order}))
    split = pd.concat(frames, ignore_index=True)
    split["db_order"] = split.db_order.astype("int64")
    return split


def _class_counts(n: int, protocol: dict) -> tuple[int, int, int]:
    """(train, val, query) images of a class of ``n`` images under ``protocol``."""
    n_train = int(round(float(protocol["train_fraction"]) * n))
    n_val = int(round(float(protocol.get("val_fraction") or 0.0) * n_train))
    return n_train - n_val, n_val, n - n_train


def check_class_sizes(manifest: pd.DataFrame, protocol: dict, name: str = "protocol") -> None:
    """Raise RshashError naming the class when one is too small for ``protocol``:
    every class needs at least one train (after the validation part) and one query
    image. Cheap, so the manifest step runs it before any heavy job."""
    for class_name, n in manifest.class_name.value_counts().sort_index().items():
        n_train, n_val, n_query = _class_counts(int(n), protocol)
        if n_train < 1 or n_query < 1:
            val = (
                f" and val_fraction {protocol['val_fraction']}"
                if protocol.get("val_fraction")
                else ""
            )
            raise RshashError(
                f"protocols.{name}: class '{class_name}' has {n} images, too few for "
                f"train_fraction {protocol['train_fraction']}{val} (gives {n_train} train, "
                f"{n_val} val, {n_query} query; needs at least one train and one query)"
            )


def write_split(split: pd.DataFrame, path: str | Path) -> None:
    write_parquet(path, pa.Table.from_pandas(split, preserve_index=False))


def read_split(path: str | Path) -> pd.DataFrame:
    df = read_parquet(path, "split file").to_pandas()
    missing = [c for c in ("image_id", "role", "db_order") if c not in df.columns]
    if missing:
        raise RshashError(f"{path}: not an rshash split (no column {', '.join(missing)})")
    return df
