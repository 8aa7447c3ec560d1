"""Regenerate benchmarks/search_scale_calibration.json: the within-class Hamming
distance histogram of a trained ``csq`` model's 64-bit database codes on UC Merced.

benchmarks/search_scale.py draws its clustered codes from this histogram (each
code's distance to its cluster centre), so the synthetic archive has the
neighbourhood structure of real trained codes. One cheap run, not the workflow:
efficientnet_lite0 features of the 2,100 images (about a minute on 2 cores),
the dmch_60_40 split (seed 0), csq at 64 bits (seed 0) fitted on the train part,
its database codes (the train part) and held-out codes (the query part)
encoded, and their distances to their class centre and within their class
counted.

Usage: python benchmarks/search_scale_calibration.py \
    [--images /work/shared/datasets/UCMerced_LandUse/Images] [--workdir /tmp/rshash-calib] \
    [--out benchmarks/search_scale_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROTOCOL = {"train_fraction": 0.6, "database": "train"}  # config.yaml's dmch_60_40


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", default="/work/shared/datasets/UCMerced_LandUse/Images")
    p.add_argument("--workdir", default="/tmp/rshash-calib")
    p.add_argument("--out", default=str(HERE / "search_scale_calibration.json"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    from rshash import methods
    from rshash.codes import pack_bits
    from rshash.data.manifest import read_dataset, write_manifest
    from rshash.data.splits import make_split, train_part
    from rshash.features import extract, read_features
    from rshash.hamming import BinaryIndex

    tic = time.perf_counter()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    manifest, features = work / "manifest.parquet", work / "features.h5"
    df, _ = read_dataset(a.images)
    if not features.exists():
        write_manifest(df, manifest)
        extract(manifest, "efficientnet_lite0", features, threads=a.threads, progress=False)
    f = read_features(features)
    row = {image_id: i for i, image_id in enumerate(f.image_id)}
    label = df.set_index("image_id").label
    split = make_split(df, PROTOCOL, seed=0, name="dmch_60_40")
    fit = split[train_part(split)]
    X = f.features[[row[i] for i in fit.image_id]]
    y = label.loc[fit.image_id].to_numpy()
    model = methods.build("csq", 64, seed=0, threads=a.threads).fit(X, y)

    def codes_of(part):
        rows = [row[i] for i in part.image_id]
        return pack_bits(model.encode(f.features[rows]).bits), label.loc[part.image_id].to_numpy()

    db, db_label = codes_of(split[split.role == "database"].sort_values("db_order"))
    held, held_label = codes_of(split[split.role == "query"])
    classes = np.unique(db_label)
    # a class's centre: the bitwise majority of its database codes (csq's hash centre)
    bits = np.unpackbits(db, axis=1)
    centre = {
        c: np.packbits(2 * bits[db_label == c].sum(0) > (db_label == c).sum()) for c in classes
    }

    def to_centre(codes, labels):
        centres = np.stack([centre[c] for c in labels])
        return np.bincount(np.unpackbits(codes ^ centres, axis=1).sum(1), minlength=65)

    def pairs(codes, labels, same_class):
        d = BinaryIndex(64).add(codes).distances(codes).astype(np.int64)
        same = labels[:, None] == labels[None, :]
        pick = (same & ~np.eye(len(codes), dtype=bool)) if same_class else ~same
        return np.bincount(d[pick], minlength=65)

    def mean(h):
        return float((np.arange(len(h)) * h).sum() / h.sum())

    hist = {
        "database_within_class": pairs(db, db_label, True),
        "database_between_class": pairs(db, db_label, False),
        "database_to_centre": to_centre(db, db_label),
        "held_out_within_class": pairs(held, held_label, True),
        "held_out_to_centre": to_centre(held, held_label),
    }
    doc = {
        "what": "Hamming distance histograms (index = distance, 0..64) of csq 64-bit codes on "
        "UC Merced: efficientnet_lite0 features, dmch_60_40 split seed 0, csq seed 0 fitted "
        "on the train part. Pairs are ordered pairs of distinct images; a class centre is the "
        "bitwise majority of its database codes. The database (train part) codes collapse "
        "onto the centres (distance 0); the held-out (query) codes are what an archive of "
        "images the model never saw looks like, so benchmarks/search_scale.py draws each "
        "clustered code's distance to its centre from held_out_to_centre.",
        "regenerate": "python benchmarks/search_scale_calibration.py (about 3 CPU-minutes)",
        "bits": 64,
        "database": int(len(db)),
        "held_out": int(len(held)),
        "classes": int(len(classes)),
        **{k: v.tolist() for k, v in hist.items()},
        "means": {k: round(mean(v), 3) for k, v in hist.items()},
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{a.out}: mean distances {doc['means']} ({time.perf_counter() - tic:.0f} s)")


if __name__ == "__main__":
    main()
