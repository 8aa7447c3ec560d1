"""CONTRIBUTING.md's "Add a metric" recipe, followed literally: one ``Metric(...)`` entry
in the registry of ``src/rshash/metrics.py`` (in a copy of the package), and the metric
is in an evaluation's metrics JSON and accepted by the config check of the workflow."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

import rshash
from rshash.codes import pack_bits, write_codes
from rshash.data.splits import write_split
from rshash.evaluate import evaluate_arrays
from rshash.metrics import METRICS, Metric, register_metric

# The entry a contributor adds (CONTRIBUTING.md): relevant items in the top k.
ENTRY = '    Metric("hits_at_{k}", ("rel",), lambda q, k: q.rel[:, :k].sum(1), cutoffs="ks"),\n'


def _package_with_entry(tmp_path):
    """A copy of the rshash package whose registry has ENTRY after the others."""
    src = tmp_path / "src"
    shutil.copytree(os.path.dirname(rshash.__file__), src / "rshash")
    path = src / "rshash" / "metrics.py"
    text = path.read_text()
    end = "):\n    register_metric(_metric)\n"
    assert text.count(end) == 1, "the registry's tuple moved: update CONTRIBUTING and this test"
    path.write_text(text.replace(end, ENTRY + end))
    return src


def _cell(tmp_path):
    """A codes file and split: 6 queries against 20 database items, 8-bit codes."""
    rng = np.random.default_rng(0)
    n_q, n_db = 6, 20
    ids = np.array([f"i{k}" for k in range(n_q + n_db)])
    labels = rng.integers(0, 3, len(ids))
    bits01 = rng.integers(0, 2, (len(ids), 8))
    roles = ["query"] * n_q + ["database"] * n_db
    codes, split = tmp_path / "codes.parquet", tmp_path / "split.parquet"
    write_codes(codes, ids, labels, roles, pack_bits(bits01), bits01 - 0.5, 8)
    order = np.r_[np.full(n_q, -1), rng.permutation(n_db)]
    write_split(pd.DataFrame({"image_id": ids, "role": roles, "db_order": order}), split)
    # hits_at_5 by plain loops: rank by (Hamming distance, db_order)
    db = list(range(n_q, len(ids)))
    hits = []
    for q in range(n_q):
        ranked = sorted(db, key=lambda j: ((bits01[q] != bits01[j]).sum(), order[j]))
        hits.append(sum(labels[j] == labels[q] for j in ranked[:5]))
    return codes, split, float(np.mean(hits))


def test_add_metric_recipe(tmp_path, repo, snakemake):
    src = _package_with_entry(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    codes, split, expected = _cell(tmp_path)
    out = tmp_path / "metrics.json"
    script = (
        "from rshash.evaluate import evaluate_cell; "
        f"evaluate_cell({str(codes)!r}, {str(split)!r}, {str(out)!r})"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env=os.environ | env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(out.read_text())["metrics"]
    # one metric per cut-off of the evaluation (ks: 5, 10, 20, 50, 100), after the others
    assert [m for m in metrics if m.startswith("hits_at_")] == [
        f"hits_at_{k}" for k in (5, 10, 20, 50, 100)
    ]
    assert list(metrics)[-5:] == [f"hits_at_{k}" for k in (5, 10, 20, 50, 100)]
    assert metrics["hits_at_5"] == pytest.approx(expected)
    assert metrics["hits_at_20"] == pytest.approx(20 * metrics["p_at_20"])

    # the workflow's config check accepts it in a protocol's report_metrics with the
    # entry, and names it without
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["protocols"]["dmch_60_40"]["report_metrics"] = ["hits_at_5"]
    demo = config["experiments"]["demo"]
    config["experiments"] = {"demo": demo | {"seeds": [0], "methods": ["lsh"], "bits": [16]}}
    config["experiments"]["demo"].pop("reference", None)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    accepted = snakemake(repo, tmp_path, "-n", "results/tables/demo.csv", cores=None, env=env)
    assert "evaluate_ranking" in accepted.stdout
    refused = snakemake(repo, tmp_path, "-n", "results/tables/demo.csv", cores=None, check=False)
    assert refused.returncode != 0
    assert re.search(
        r"protocols\.dmch_60_40\.report_metrics\[0\]: 'hits_at_5' is not a registered metric",
        refused.stdout + refused.stderr,
    )


def test_register_metric_adds_to_every_evaluation(monkeypatch):
    """The same entry through the public registration function (a plugin's way)."""
    monkeypatch.setattr("rshash.metrics.METRICS", dict(METRICS))
    import rshash.evaluate

    monkeypatch.setattr(rshash.evaluate, "METRICS", rshash.metrics.METRICS)
    register_metric(Metric("hits_at_{k}", ("rel",), lambda q, k: q.rel[:, :k].sum(1), cutoffs=(2,)))
    with pytest.raises(ValueError, match="registered twice"):
        register_metric(Metric("hits_at_{k}", ("rel",), lambda q, k: q.rel.sum(1), cutoffs=(2,)))
    rng = np.random.default_rng(1)
    q, db = pack_bits(rng.integers(0, 2, (5, 8))), pack_bits(rng.integers(0, 2, (12, 8)))
    ql, dl = rng.integers(0, 2, 5), rng.integers(0, 2, 12)
    ev = evaluate_arrays(q, ql, db, dl)
    assert ev["hits_at_2"] == pytest.approx(2 * _p_at(q, ql, db, dl, 2))
    assert "hits_at_{k}" not in METRICS  # the module's own registry is left as it was


def _p_at(q, ql, db, dl, k):
    d = (np.unpackbits(q, axis=1)[:, None] != np.unpackbits(db, axis=1)[None]).sum(2)
    ranked = np.lexsort((np.broadcast_to(np.arange(len(dl)), d.shape), d), axis=1)
    return float((dl[ranked[:, :k]] == ql[:, None]).mean())


def test_entry_with_an_unknown_input_is_refused():
    with pytest.raises(ValueError, match="unknown input"):
        Metric("x", ("relevance",), lambda q: q.relevance)
    with pytest.raises(ValueError, match="needs cutoffs"):
        Metric("x_at_{k}", ("rel",), lambda q, k: q.rel[:, :k].sum(1))
