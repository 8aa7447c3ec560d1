"""evaluate_cell end to end on tiny codes and split files."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.codes import pack_bits, write_codes
from rshash.evaluate import evaluate_arrays, evaluate_cell
from rshash.metrics import compute

BITS = 16


def write_files(tmp_path, labels, bits01, query, database, db_order, value=None):
    """Codes (train + query + database rows) and split for images ``img{i}``."""
    ids = np.array([f"img{i}" for i in range(len(labels))])
    train = [i for i in range(len(labels)) if i not in query]
    rows = [(i, "train") for i in train] + [(i, "query") for i in query] + \
           [(i, "database") for i in database]
    idx = np.array([i for i, _ in rows])
    value = bits01 - 0.5 if value is None else value
    codes_path, split_path = tmp_path / "codes.parquet", tmp_path / "split0.parquet"
    write_codes(codes_path, ids[idx], np.asarray(labels)[idx], [r for _, r in rows],
                pack_bits(bits01[idx]), value[idx], BITS)
    order_of = dict(zip(database, db_order))
    pd.DataFrame({"image_id": ids[idx], "role": [r for _, r in rows],
                  "db_order": [order_of[i] if r == "database" else -1 for i, r in rows]}
                 ).astype({"db_order": "int64"}).to_parquet(split_path, index=False)
    return codes_path, split_path


def reference_metrics(labels, dist, query, database, db_order, leave_one_out=False):
    """Rank each query by (distance, db_order) with plain Python, then score."""
    labels = np.asarray(labels)
    rels = []
    for q in query:
        items = [j for j in database if not (leave_one_out and j == q)]
        items.sort(key=lambda j: (dist(q, j), db_order[database.index(j)]))
        rels.append([labels[j] == labels[q] for j in items])
    rel = np.array(rels, bool)
    return compute(rel, rel.sum(1))


def random_cell(seed, n=40):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    bits01 = rng.integers(0, 2, (4, BITS))[rng.integers(0, 4, n)]  # four codes: heavy ties
    perm = rng.permutation(n)
    query, database = sorted(perm[:12].tolist()), perm[12:].tolist()
    db_order = rng.permutation(len(database)).tolist()
    return labels, bits01, query, database, db_order


@pytest.mark.parametrize("ranking", ["hamming", "euclidean"])
def test_cell_matches_reference(tmp_path, ranking):
    labels, bits01, query, database, db_order = random_cell(0)
    value = bits01 + np.random.default_rng(1).normal(0, 0.3, bits01.shape)
    codes_path, split_path = write_files(tmp_path, labels, bits01, query, database, db_order, value)
    out = tmp_path / "metrics" / f"{ranking}.json"
    result = evaluate_cell(codes_path, split_path, out, ranking=ranking,
                           cell={"method": "x", "bits": BITS}, config={"a": 1}, block=5)
    assert json.loads(out.read_text()) == result
    assert set(result) == {"cell", "ranking", "n_queries", "n_database", "metrics", "provenance"}
    assert result["cell"] == {"method": "x", "bits": BITS} and result["ranking"] == ranking
    assert (result["n_queries"], result["n_database"]) == (len(query), len(database))
    assert result["provenance"]["config_hash"] is not None
    metrics = result["metrics"]
    assert set(metrics) == {"map_all", "map_at_20", "query_ms"} | {
        f"{m}_at_{k}" for m in "pr" for k in (5, 10, 20, 50, 100)}
    assert metrics["query_ms"] >= 0
    if ranking == "hamming":
        def dist(a, b):
            return int((bits01[a] != bits01[b]).sum())
    else:
        v = value.astype(np.float32).astype(np.float64)

        def dist(a, b):
            return float(np.linalg.norm(v[a] - v[b]))
    expected = reference_metrics(labels, dist, query, database, db_order)
    for name, value_ in expected.items():
        assert metrics[name] == pytest.approx(value_), name


def test_leave_one_out(tmp_path):
    labels, bits01, query, _, _ = random_cell(2)
    database = list(query)
    db_order = np.random.default_rng(3).permutation(len(database)).tolist()
    codes_path, split_path = write_files(tmp_path, labels, bits01, query, database, db_order)
    result = evaluate_cell(codes_path, split_path, tmp_path / "m.json")

    def dist(a, b):
        return int((bits01[a] != bits01[b]).sum())
    expected = reference_metrics(labels, dist, query, database, db_order, leave_one_out=True)
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value), name


def test_ties_follow_db_order(tmp_path):
    """Identical codes: only db_order decides where the one relevant item ranks."""
    labels = [0, 0, 1, 1, 1, 1]  # image 0 queries; image 1 is its only relevant item
    bits01 = np.zeros((6, BITS), int)
    query, database = [0], [1, 2, 3, 4, 5]
    for position in range(len(database)):
        db_order = [position] + [p for p in range(len(database)) if p != position]
        case = tmp_path / str(position)
        case.mkdir()
        paths = write_files(case, labels, bits01, query, database, db_order)
        metrics = evaluate_cell(*paths, case / "m.json")["metrics"]
        assert metrics["map_all"] == pytest.approx(1 / (position + 1))
        assert metrics["p_at_5"] == pytest.approx(1 / 5)


def test_missing_image_names_both_files(tmp_path):
    labels, bits01, query, database, db_order = random_cell(4)
    codes_path, split_path = write_files(tmp_path, labels, bits01, query, database, db_order)
    split = pd.read_parquet(split_path)
    extra = pd.DataFrame({"image_id": ["ghost"], "role": ["database"], "db_order": [len(database)]})
    pd.concat([split, extra], ignore_index=True).to_parquet(split_path, index=False)
    with pytest.raises(RshashError) as err:
        evaluate_cell(codes_path, split_path, tmp_path / "m.json")
    assert str(codes_path) in str(err.value) and str(split_path) in str(err.value)
    assert "ghost" in str(err.value)
    assert not (tmp_path / "m.json").exists()


def test_block_size_does_not_change_metrics():
    rng = np.random.default_rng(5)
    q, db = pack_bits(rng.integers(0, 2, (17, 24))), pack_bits(rng.integers(0, 2, (50, 24)))
    ql, dl = rng.integers(0, 3, 17), rng.integers(0, 3, 50)
    exclude = np.where(rng.random(17) < 0.5, rng.integers(0, 50, 17), -1)
    whole = evaluate_arrays(q, ql, db, dl, block=1000, exclude=exclude)
    for block in (1, 4):
        parts = evaluate_arrays(q, ql, db, dl, block=block, exclude=exclude)
        for name in whole.keys() - {"query_ms"}:
            assert parts[name] == pytest.approx(whole[name]), name


def test_evaluate_does_not_import_torch():
    code = "import sys, rshash.evaluate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
