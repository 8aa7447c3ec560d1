import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.data.splits import make_split

PROTOCOL = {"train_fraction": 0.6, "database": "train", "seeds": [0, 1, 2]}


def manifest(n_classes=5, per_class=10):
    rows = [
        (f"c{c}/img{i:02d}", f"/x/c{c}/img{i:02d}.jpg", c, f"c{c}")
        for c in range(n_classes)
        for i in range(per_class)
    ]
    return pd.DataFrame(rows, columns=["image_id", "path", "label", "class_name"])


def roles(split, role):
    return split.image_id[split.role == role].tolist()


def test_split_is_stratified_and_disjoint():
    m = manifest(5, 10)
    split = make_split(m, PROTOCOL, seed=0)
    part = split[split.role.isin(["train", "val"])]  # the train part: train and val rows
    train, query = part.image_id.tolist(), roles(split, "query")
    assert not set(train) & set(query)
    assert sorted(train + query) == sorted(m.image_id)
    label = dict(zip(m.image_id, m.label))
    assert np.bincount([label[i] for i in train]).tolist() == [6] * 5
    assert np.bincount([label[i] for i in query]).tolist() == [4] * 5
    assert roles(split, "database") == train  # database = the train part


def test_database_order_is_a_seeded_permutation_not_class_order():
    m = manifest(5, 10)
    split = make_split(m, PROTOCOL, seed=0)
    db = split[split.role == "database"]
    assert sorted(db.db_order) == list(range(len(db)))
    assert (split.db_order[split.role != "database"] == -1).all()
    ordered = db.sort_values("db_order").image_id.str.slice(0, 2).tolist()
    assert ordered != sorted(ordered)  # classes are interleaved, not sorted


def test_same_seed_same_split_other_seed_other_split():
    m = manifest()
    a, b, c = (make_split(m, PROTOCOL, s) for s in (0, 0, 1))
    pd.testing.assert_frame_equal(a, b)
    assert set(roles(a, "train")) != set(roles(c, "train"))
    assert not a.db_order.equals(c.db_order)


def test_val_fraction_is_carved_from_train_and_stays_in_database():
    split = make_split(manifest(3, 20), {**PROTOCOL, "val_fraction": 0.25}, seed=3)
    train, val, query = roles(split, "train"), roles(split, "val"), roles(split, "query")
    assert len(val) == 3 * 3 and len(train) == 3 * 9 and len(query) == 3 * 8
    assert not set(val) & set(train) and not set(val) & set(query)
    assert set(roles(split, "database")) == set(train) | set(val)


def test_query_database():
    split = make_split(manifest(), {**PROTOCOL, "database": "query"}, seed=0)
    assert sorted(roles(split, "database")) == sorted(roles(split, "query"))


def test_too_small_class_is_an_error_naming_protocol_and_class():
    m = manifest(3, 10)
    m = m[~((m.label == 2) & (m.image_id != "c2/img00"))]
    with pytest.raises(RshashError, match=r"protocols\.p.*'c2' has 1 images"):
        make_split(m, PROTOCOL, seed=0, name="p")
