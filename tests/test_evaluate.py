"""evaluate_cell end to end on tiny codes and split files."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.codes import pack_bits, write_codes
from rshash.data.splits import read_split, write_split
from rshash.evaluate import evaluate_arrays, evaluate_cell
from rshash.metrics import compute
from rshash.provenance import config_hash

BITS = 16


def write_files(
    tmp_path, labels, bits01, query, database, db_order, value=None, train=True, bits=BITS, **extra
):
    """Codes (train rows unless not ``train``, query and database rows) and split for images
    ``img{i}``. ``bits`` 0: real-valued codes, no packed column; ``extra``: optional columns
    (class_prob, predicted_label) given per image."""
    ids = np.array([f"img{i}" for i in range(len(labels))])
    train = [i for i in range(len(labels)) if i not in query] if train else []
    rows = (
        [(i, "train") for i in train]
        + [(i, "query") for i in query]
        + [(i, "database") for i in database]
    )
    idx = np.array([i for i, _ in rows])
    value = bits01 - 0.5 if value is None else value
    codes_path, split_path = tmp_path / "codes.parquet", tmp_path / "split0.parquet"
    write_codes(
        codes_path,
        ids[idx],
        np.asarray(labels)[idx],
        [r for _, r in rows],
        pack_bits(bits01[idx]) if bits else None,
        value[idx],
        bits,
        **{name: column[idx] for name, column in extra.items()},
    )
    order_of = dict(zip(database, db_order))
    write_split(
        pd.DataFrame(
            {
                "image_id": ids[idx],
                "role": [r for _, r in rows],
                "db_order": [order_of[i] if r == "database" else -1 for i, r in rows],
            }
        ).astype({"db_order": "int64"}),
        split_path,
    )
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
    result = evaluate_cell(
        codes_path,
        split_path,
        out,
        ranking=ranking,
        cell={"method": "x", "bits": BITS},
        block=5,
    )
    assert json.loads(out.read_text()) == result
    assert set(result) == {
        "cell",
        "ranking",
        "ranking_params",
        "protocol",
        "n_queries",
        "n_database",
        "leave_one_out",
        "metrics",
        "not_applicable",
        "curves",
        "provenance",
    }
    assert result["cell"] == {"method": "x", "bits": BITS} and result["ranking"] == ranking
    assert (result["n_queries"], result["n_database"]) == (len(query), len(database))
    # the hash of the cell, protocol and ranking parameters it was given
    config = {"cell": {"method": "x", "bits": BITS}, "protocol": {}, "ranking_params": {}}
    assert result["provenance"]["config_hash"] == config_hash(config)
    metrics = result["metrics"]
    assert set(metrics) == {"map_all", "map_at_20", "query_ms", "anmrr", "p_hamming_r2"} | {
        f"{m}_at_{k}" for m in "pr" for k in (5, 10, 20, 50, 100)
    }
    # every registry metric is either computed or listed with its reason
    assert set(result["not_applicable"]) == {"acc_query", "acc_retrieved_at_20", "rotation_top3"}
    assert set(result["curves"]) == {"p_at_k", "r_at_k", "ap_per_class", "pr_hamming"}
    assert metrics["query_ms"] >= 0
    # p_hamming_r2 and the radius curve: brute force over the (unranked) database
    ham = [[int((bits01[q] != bits01[j]).sum()) for j in database] for q in query]
    lab = np.asarray(labels)
    p2 = [
        np.mean([lab[j] == lab[q] for j, d in zip(database, h) if d <= 2]) if min(h) <= 2 else 0.0
        for q, h in zip(query, ham)
    ]
    assert metrics["p_hamming_r2"] == pytest.approx(np.mean(p2))
    assert result["curves"]["pr_hamming"]["precision"][2] == pytest.approx(np.mean(p2))
    assert result["curves"]["pr_hamming"]["recall"][BITS] == pytest.approx(1.0)
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
    # ap_per_class: the mean AP@all of each class's queries
    per_query_ap = [
        reference_metrics(labels, dist, [q], database, db_order)["map_all"] for q in query
    ]
    for c, ap in result["curves"]["ap_per_class"].items():
        expected_ap = np.mean([a for q, a in zip(query, per_query_ap) if labels[q] == int(c)])
        assert ap == pytest.approx(expected_ap)


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
    split = read_split(split_path)
    extra = pd.DataFrame({"image_id": ["ghost"], "role": ["database"], "db_order": [len(database)]})
    write_split(pd.concat([split, extra], ignore_index=True), split_path)
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
        for name in whole.metrics.keys() - {"query_ms"}:
            assert parts[name] == pytest.approx(whole[name]), name


def test_evaluate_does_not_import_torch():
    code = "import sys, rshash.evaluate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_protocol_cutoffs_and_class_head_metrics(tmp_path):
    labels, bits01, query, database, db_order = random_cell(6)
    rng = np.random.default_rng(6)
    prob = rng.dirichlet(np.ones(3), len(labels)).astype(np.float32)
    predicted = np.where(rng.random(len(labels)) < 0.7, labels, (labels + 1) % 3)
    codes_path, split_path = write_files(
        tmp_path,
        labels,
        bits01,
        query,
        database,
        db_order,
        train=False,
        class_prob=prob,
        predicted_label=predicted,
    )
    result = evaluate_cell(
        codes_path,
        split_path,
        tmp_path / "m.json",
        ranking="category_weighted",
        protocol={"map_cutoffs": ["all", 5], "train_fraction": 0.5},
    )
    metrics = result["metrics"]
    assert {"map_at_5", "map_at_20", "acc_query", "acc_retrieved_at_20"} <= set(metrics)
    assert metrics["acc_query"] == pytest.approx(np.mean(predicted[query] == labels[query]))
    # acc_retrieved_at_20: the predicted labels of each query's top 20, by plain loops
    shares = []
    for q in query:
        c = int(np.argmax(prob[q]))
        d = [int((bits01[q] != bits01[j]).sum()) * np.exp(1 - prob[j, c]) for j in database]
        top = sorted(range(len(database)), key=lambda i: (d[i], db_order[i]))[:20]
        shares.append(np.mean([predicted[database[i]] == labels[database[i]] for i in top]))
    assert metrics["acc_retrieved_at_20"] == pytest.approx(np.mean(shares))
    assert "acc_query" not in result["not_applicable"]


def test_real_valued_codes_have_no_hamming_metrics(tmp_path):
    labels, bits01, query, database, db_order = random_cell(8)
    value = np.random.default_rng(8).normal(size=(len(labels), 5)) + np.asarray(labels)[:, None]
    codes_path, split_path = write_files(
        tmp_path, labels, bits01, query, database, db_order, value, train=False, bits=0
    )
    result = evaluate_cell(codes_path, split_path, tmp_path / "m.json", ranking="euclidean")
    assert "p_hamming_r2" not in result["metrics"] and "pr_hamming" not in result["curves"]
    assert result["not_applicable"]["p_hamming_r2"].startswith("real-valued")
    v = value.astype(np.float32).astype(np.float64)
    expected = reference_metrics(
        labels, lambda a, b: float(np.linalg.norm(v[a] - v[b])), query, database, db_order
    )
    assert result["metrics"]["map_all"] == pytest.approx(expected["map_all"])
    with pytest.raises(RshashError, match="needs the 'packed' column"):
        evaluate_cell(codes_path, split_path, tmp_path / "h.json", ranking="hamming")
    assert not (tmp_path / "h.json").exists()


def test_rotation_top3_from_rotated_rows(tmp_path):
    """Query q0's copies sit at Hamming 0, 1 and 5; the database holds items at 1 and 2:
    ranking [copy0 (0), db0 (1, wins the tie), copy1 (1), ...] -> 2 of 3 copies in the top 3.
    Query q1's copies are all far (8): behind both database items, one copy still
    makes the top 3 -> 1/3."""
    code = lambda ones: [1] * ones + [0] * (BITS - ones)  # noqa: E731
    ids = [
        "q0",
        "q1",
        "d0",
        "d1",
        "q0@rot90",
        "q0@rot180",
        "q0@rot270",
        "q1@rot90",
        "q1@rot180",
        "q1@rot270",
    ]
    bits01 = np.array(
        [code(0), code(0), code(1), code(2), code(0), code(1), code(5), code(8), code(8), code(8)]
    )
    roles = ["query", "query", "database", "database"] + ["rotated"] * 6
    labels = [0, 1, 0, 1] + [0] * 3 + [1] * 3
    codes_path, split_path = tmp_path / "c.parquet", tmp_path / "s.parquet"
    write_codes(codes_path, ids, labels, roles, pack_bits(bits01), bits01 - 0.5, BITS)
    write_split(
        pd.DataFrame({"image_id": ids[:4], "role": roles[:4], "db_order": [-1, -1, 0, 1]}),
        split_path,
    )
    result = evaluate_cell(codes_path, split_path, tmp_path / "m.json")
    assert result["metrics"]["rotation_top3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert "rotation_top3" not in result["not_applicable"]
    # rotated rows never enter the database or the other metrics
    assert result["n_database"] == 2
    other = evaluate_cell(codes_path, split_path, tmp_path / "c2f.json", ranking="coarse_to_fine")
    assert "rotation_top3" in other["not_applicable"]


def test_rotation_top3_matches_a_full_ranking_with_ties():
    """Under Hamming, rotation_top3 equals ranking the whole database plus each query's
    copies (copies last, so they lose ties) by (distance, index), on codes from a
    pool of six (heavy ties)."""
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 2, (6, BITS))
    q, db, rot = (
        pool[rng.integers(0, 6, 30)],
        pool[rng.integers(0, 6, 9)],
        pool[rng.integers(0, 6, (30, 3))],
    )
    got = evaluate_arrays(
        {"packed": pack_bits(q)},
        np.zeros(30, int),
        {"packed": pack_bits(db)},
        np.zeros(9, int),
        "hamming",
        with_curves=True,
        rotated={"packed": pack_bits(rot.reshape(90, BITS)).reshape(30, 3, -1)},
    )
    expected = []
    for i in range(30):
        items = np.concatenate([db, rot[i]])
        dist = (items != q[i]).sum(1)
        first3 = sorted(range(len(items)), key=lambda j: (dist[j], j))[:3]
        expected.append(sum(j >= len(db) for j in first3) / 3)
    assert got["rotation_top3"] == pytest.approx(np.mean(expected))
    assert 0 < np.mean(expected) < 1
