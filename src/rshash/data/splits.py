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
# The share of each class's train part held out as the validation part on which the
# trained methods stop (rshash.methods.convergence); a protocol's val_fraction overrides it.
VAL_FRACTION = 0.2


# The protocol fields each step reads, so a job's params hold exactly what its output
# depends on (a protocol's source, seeds or mAP cut-offs rerun no manifest or split).
CLASS_SIZE_KEYS = ("train_fraction", "val_fraction")  # check_class_sizes
SPLIT_KEYS = (*CLASS_SIZE_KEYS, "database")  # make_split


def make_split(
    manifest: pd.DataFrame, protocol: dict, seed: int, name: str = "protocol"
) -> pd.DataFrame:
    """Split per class: ``train_fraction`` of each class is the train part, the rest queries.

    ``database`` is ``train`` (the train part) or ``query`` (the query part
    itself; with ``leave_one_out`` evaluation removes each query from it).
    ``val_fraction`` (default VAL_FRACTION) of each class's train part is its validation
    part (role ``val``; the rest has role ``train``): the trained methods fit on the
    ``train`` rows and stop on the ``val`` rows, the closed-form ones fit on both. The
    train part's rows are listed class by class, train then val, so the train and val
    rows in file order are the train part in its seeded order, and the validation part
    changes neither the train part, the queries, nor the database and its order.
    """
    database = protocol.get("database", "train")
    check_class_sizes(manifest, protocol, name)
    rng = np.random.default_rng(seed)
    part, query = [], []  # part: (image_id, role) of the train part, class by class
    for _, group in manifest.groupby("label", sort=True):
        ids = group.image_id.to_numpy()
        n_fit, n_val, _ = _class_counts(len(ids), protocol)
        perm = rng.permutation(ids)
        part.extend((i, "train") for i in perm[:n_fit])
        part.extend((i, "val") for i in perm[n_fit : n_fit + n_val])
        query.extend(perm[n_fit + n_val :])
    if database == "train":
        db = [i for i, _ in part]
    elif database == "query":
        db = list(query)
    else:
        raise RshashError(
            f"protocols.{name}.database: must be 'train' or 'query', got {database!r}"
        )
    db_order = rng.permutation(len(db))
    frames = [
        pd.DataFrame({"image_id": [i for i, _ in part], "role": [r for _, r in part]}),
        pd.DataFrame({"image_id": query, "role": "query"}),
    ]
    split = pd.concat(frames, ignore_index=True).assign(db_order=-1)
    db_rows = pd.DataFrame({"image_id": db, "role": "database", "db_order": db_order})
    split = pd.concat([split, db_rows], ignore_index=True)
    split["db_order"] = split.db_order.astype("int64")
    return split


def train_part(split: pd.DataFrame) -> pd.Series:
    """Whether each row is in the train part (role train or val)."""
    return split.role.isin(("train", "val"))


def _class_counts(n: int, protocol: dict) -> tuple[int, int, int]:
    """(train, val, query) images of a class of ``n`` images under ``protocol``."""
    n_train = int(round(float(protocol["train_fraction"]) * n))
    n_val = int(round(float(protocol.get("val_fraction", VAL_FRACTION)) * n_train))
    return n_train - n_val, n_val, n - n_train


def check_class_sizes(manifest: pd.DataFrame, protocol: dict, name: str = "protocol") -> None:
    """Raise RshashError naming the class when one is too small for ``protocol``:
    every class needs at least one train (after the validation part) and one query
    image. Cheap, so the manifest step runs it before any heavy job."""
    for class_name, n in manifest.class_name.value_counts().sort_index().items():
        n_train, n_val, n_query = _class_counts(int(n), protocol)
        if n_train < 1 or n_query < 1:
            val = f" and val_fraction {protocol.get('val_fraction', VAL_FRACTION)}"
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
