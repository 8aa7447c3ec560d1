"""One training job end to end: the features files a method declares, codes with
every split row, and rotated query copies for methods that read rotations."""

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.codes import read_codes
from rshash.data.splits import make_split, write_split
from rshash.evaluate import evaluate_cell
from rshash.features import read_arrays, write_arrays
from rshash.train import train_cell

N_CLASSES, PER_CLASS = 3, 12


def write_h5(path, image_id, label, **arrays):
    write_arrays(path, image_id, label, arrays, {"backbone": "efficientnet_lite0"})


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    image_id = [f"c{c}/img{i:02d}" for c, i in zip(label, range(len(label)))]
    centres = [rng.normal(0, 3, (N_CLASSES, d)) for d in (4, 6, 10)]
    layers = [
        c[label] + rng.normal(0, 1, (len(label), c.shape[1])).astype(np.float32) for c in centres
    ]
    rot = [np.stack([x + rng.normal(0, 0.3, x.shape) for _ in range(3)], 1) for x in layers]
    write_h5(tmp_path / "f.h5", image_id, label, features=layers[2].astype(np.float32))
    write_h5(
        tmp_path / "f_layers.h5",
        image_id,
        label,
        **{f"layer{i}": x.astype(np.float32) for i, x in enumerate(layers)},
    )
    write_h5(
        tmp_path / "f_rot.h5",
        image_id,
        label,
        features=rot[2].astype(np.float32),
        **{f"layer{i}": x.astype(np.float32) for i, x in enumerate(rot)},
    )
    manifest = pd.DataFrame({"image_id": image_id, "label": label})
    split = make_split(
        manifest.assign(class_name=[f"c{c}" for c in label]),
        {"train_fraction": 0.5, "database": "train"},
        seed=0,
    )
    write_split(split, tmp_path / "split0.parquet")
    return tmp_path, split


def test_method_reading_layers_and_rotations_gets_rotated_query_codes(files):
    root, split = files
    extra = {"layers": root / "f_layers.h5", "rot": root / "f_rot.h5"}
    train_cell(
        root / "f.h5",
        root / "split0.parquet",
        "pbffn",
        8,
        0,
        {"max_epochs": 2, "batch_size": 8, "width": 8},
        root / "m.npz",
        root / "c.parquet",
        extra=extra,
    )
    codes = read_codes(root / "c.parquet")
    queries = split[split.role == "query"].image_id
    rotated = codes.image_id[codes.role == "rotated"]
    assert sorted(rotated) == sorted(f"{q}@rot{d}" for q in queries for d in (90, 180, 270))
    assert (codes.role != "rotated").sum() == len(split)
    assert codes.class_prob is not None and codes.predicted_label is not None
    result = evaluate_cell(root / "c.parquet", root / "split0.parquet", root / "m.json")
    assert 0 <= result["metrics"]["rotation_top3"] <= 1
    assert result["n_database"] == (split.role == "database").sum()


def test_features_file_from_another_manifest_is_named(files):
    root, _ = files
    arrays, _ = read_arrays(root / "f_rot.h5")
    write_h5(
        root / "f_rot.h5",
        [f"other{i}" for i in range(N_CLASSES * PER_CLASS)],
        np.zeros(N_CLASSES * PER_CLASS, dtype=np.int64),
        **arrays,
    )
    with pytest.raises(RshashError, match="f_rot.h5: images differ"):
        train_cell(
            root / "f.h5",
            root / "split0.parquet",
            "pbffn",
            8,
            0,
            {"max_epochs": 1},
            root / "m.npz",
            root / "c.parquet",
            extra={"layers": root / "f_layers.h5", "rot": root / "f_rot.h5"},
        )
    assert not (root / "m.npz").exists() and not (root / "c.parquet").exists()
    with pytest.raises(RshashError, match="needs the 'layers' features file"):
        train_cell(
            root / "f.h5",
            root / "split0.parquet",
            "pbffn",
            8,
            0,
            {},
            root / "m.npz",
            root / "c.parquet",
        )
