"""Relevance feedback on the demo: mAP@20 before and after one round.

The demo dataset (config.yaml's ``demo``: 10 synthetic classes x 50 tiles, noise 15),
its EfficientNet-Lite0 features, the dmch_60_40 split (seed 0): the methods are fitted
on the train part, which is also the database, and every held-out query is searched.
One round of feedback, as a user gives it in ``rshash serve``: each of the query's
top 20 is marked relevant (its class is the query's) or not, and the ranking is
redone with Rocchio's rule (rshash.archive.query.search). mAP@20 is the pipeline's
(rshash.metrics.average_precision_at), on the new top 20, marked images included, as
the user sees them.

Usage: python benchmarks/feedback.py [--methods lsh itq] [--bits 16 32] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rshash.archive.query import ALPHA, BETA, GAMMA, search
from rshash.archive.store import Index, Rows, Segment
from rshash.metrics import average_precision_at, precision_at

TOP = 20


def demo_features(cache: Path):
    """(features, labels, train rows, query rows) of the demo dataset."""
    from rshash.data.manifest import scan_folder, write_manifest
    from rshash.data.splits import make_split
    from rshash.data.synthetic import generate
    from rshash.features import extract, read_arrays

    if not (cache / "features.h5").exists():
        generate(cache / "images", n_classes=10, per_class=50, size=96, seed=0, noise=15.0)
        write_manifest(scan_folder(cache / "images"), cache / "manifest.parquet")
        extract(
            cache / "manifest.parquet",
            "efficientnet_lite0",
            cache / "features.h5",
            threads=2,
            device="cpu",
            progress=False,
        )
    from rshash.data.manifest import read_manifest

    manifest = read_manifest(cache / "manifest.parquet")
    arrays, image_id = read_arrays(cache / "features.h5")
    split = make_split(manifest, {"train_fraction": 0.6, "database": "train"}, seed=0)
    row = {k: i for i, k in enumerate(image_id)}
    db = split[split.role == "database"].sort_values("db_order").image_id.map(row).to_numpy()
    query = split[split.role == "query"].image_id.map(row).to_numpy()
    return arrays["features"], manifest.label.to_numpy().astype(np.int64), db, query


def one_round(method: str, bits: int, X, y, db, query) -> tuple[np.ndarray, ...]:
    from rshash.methods import build

    model = build(method, bits, seed=0)
    model.fit(X[db], y[db] if model.supervised else None)
    packed_db = np.packbits(model.encode(X[db]).bits.astype(bool), axis=1)
    packed_q = np.packbits(model.encode(X[query]).bits.astype(bool), axis=1)
    rows = Rows(packed_db, np.array([str(i) for i in db]), np.full(len(db), ""), y[db])
    index = Index({"bits": bits, "class_names": []}, [Segment.from_rows("demo", rows)])
    before, after = np.zeros((len(query), TOP), bool), np.zeros((len(query), TOP), bool)
    for i, q in enumerate(packed_q):
        q = q[None]
        (first,) = search(index, q, TOP)
        rel = y[db][first.rows] == y[query[i]]
        ids = rows.image_id[first.rows]
        (second,) = search(index, q, TOP, relevant=ids[rel], not_relevant=ids[~rel])
        before[i] = rel
        after[i] = y[db][second.rows] == y[query[i]]
    return before, after


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["lsh", "itq"])
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32])
    p.add_argument("--cache", help="a folder to keep the demo's images and features in")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(a.cache or tmp)
        cache.mkdir(parents=True, exist_ok=True)
        X, y, db, query = demo_features(cache)
        print(
            f"demo: {len(query)} queries, {len(db)} database images; Rocchio weights "
            f"{ALPHA}, {BETA}, {GAMMA}; one round of feedback on the top {TOP}"
        )
        print(
            f"{'method':<8}{'bits':>5}{'mAP@20 before':>15}{'after':>8}"
            f"{'P@20 before':>13}{'after':>8}"
        )
        for method in a.methods:
            for bits in a.bits:
                before, after = one_round(method, bits, X, y, db, query)
                print(
                    f"{method:<8}{bits:>5}"
                    f"{average_precision_at(before, TOP).mean():>15.4f}"
                    f"{average_precision_at(after, TOP).mean():>8.4f}"
                    f"{precision_at(before, TOP).mean():>13.4f}"
                    f"{precision_at(after, TOP).mean():>8.4f}"
                )


if __name__ == "__main__":
    main()
