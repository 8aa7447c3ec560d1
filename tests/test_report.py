"""Tables and plots from metrics files and codes files (numpy/pandas/matplotlib only)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.codes import pack_bits, write_codes
from rshash.report.plots import plot_tsne, subsample
from rshash.report.tables import COLUMNS, build_table

METHODS = ["milan", "dmch"]  # deliberately not alphabetical: the table keeps this order
BITS = [64, 16]  # deliberately not sorted: the table sorts bits numerically
SEEDS = [0, 1, 2]
PROTOCOL = {"train": 0.6, "query": "rest", "database": "train", "seeds": [0, 1, 2],
            "map_cutoffs": ["all", 20]}


def fake_value(method, bits, seed, metric):
    """Distinct, reproducible numbers per (method, bits, seed, metric)."""
    rng = np.random.default_rng([METHODS.index(method), bits, seed, len(metric), ord(metric[-1])])
    return float(rng.uniform(0.3, 0.95))


def write_metrics(root, method, bits, seed, ranking="hamming", metrics=None, dataset="ucmd"):
    cell = {"dataset": dataset, "backbone": "efficientnet_lite0", "protocol": "dmch_60_40",
            "method": method, "bits": bits, "seed": seed}
    if metrics is None:
        metrics = {m: fake_value(method, bits, seed, m)
                   for m in ("map_all", "map_at_20", "p_at_5", "p_at_10", "query_ms")}
        metrics["pr_hamming"] = {"precision": [0.5, 0.6], "recall": [0.1, 0.2]}  # a curve
    path = (root / "metrics" / dataset / "efficientnet_lite0" / "dmch_60_40" / method
            / str(bits) / f"split{seed}" / f"{ranking}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cell": cell, "ranking": ranking, "n_queries": 840,
                                "n_database": 1260, "metrics": metrics,
                                "provenance": {"git_commit": None}}))
    return str(path)


@pytest.fixture
def metric_files(tmp_path):
    return [write_metrics(tmp_path, m, b, s) for m in METHODS for b in BITS for s in SEEDS]


def outputs(tmp_path, name="exp"):
    d = tmp_path / "tables"
    return d / f"{name}.csv", d / f"{name}.md", d / f"{name}.meta.json"


def test_csv_columns_means_stds_and_order(tmp_path, metric_files):
    csv, md, meta = outputs(tmp_path)
    build_table("exp", metric_files, csv, md, meta, protocols={"dmch_60_40": PROTOCOL},
                config={"a": 1})
    df = pd.read_csv(csv)
    assert list(df.columns) == COLUMNS
    # 2 methods x 2 bits x 1 ranking x 5 scalar metrics; the curve is not a row
    assert len(df) == 2 * 2 * 5
    assert set(df["metric"]) == {"map_all", "map_at_20", "p_at_5", "p_at_10", "query_ms"}
    assert (df["experiment"] == "exp").all()
    assert (df["n_splits"] == 3).all()
    for row in df.itertuples(index=False):
        values = [fake_value(row.method, row.bits, s, row.metric) for s in SEEDS]
        assert row.mean == pytest.approx(np.mean(values), rel=1e-12)
        assert row.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert row.std != pytest.approx(np.std(values, ddof=0), rel=1e-9)
    # methods in order of first appearance, bits numeric, metrics in file order
    assert list(dict.fromkeys(df["method"])) == ["milan", "dmch"]
    assert list(df[df["method"] == "milan"]["bits"].drop_duplicates()) == [16, 64]
    first = df[(df["method"] == "milan") & (df["bits"] == 16)]
    assert list(first["metric"]) == ["map_all", "map_at_20", "p_at_5", "p_at_10", "query_ms"]


def test_markdown_has_formatted_cells_and_notes(tmp_path, metric_files):
    csv, md, meta = outputs(tmp_path)
    build_table("exp", metric_files, csv, md, meta)
    text = md.read_text()
    for method in METHODS:
        for bits in BITS:
            for metric in ("map_all", "map_at_20", "p_at_10"):
                v = [fake_value(method, bits, s, metric) for s in SEEDS]
                assert f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" in text
    # query_ms is not a headline metric
    q = [fake_value("milan", 16, s, "query_ms") for s in SEEDS]
    assert f"{np.mean(q):.3f} ± {np.std(q, ddof=1):.3f}" not in text
    assert "n = 3 splits" in text
    assert "| method | 16 bits | 64 bits |" in text
    assert "divides by the relevant items retrieved in the top k" in text
    assert "all relevant items" in text
    assert "database order" in text
    # rows: milan before dmch inside a table
    assert text.index("| milan |") < text.index("| dmch |")


def test_meta_json_fields(tmp_path, metric_files):
    csv, md, meta = outputs(tmp_path)
    build_table("exp", metric_files, csv, md, meta,
                protocols={"dmch_60_40": PROTOCOL, "unused": {"train": 0.5}},
                config={"experiment": "exp"})
    m = json.loads(meta.read_text())
    assert m["experiment"] == "exp"
    assert m["protocols"] == {"dmch_60_40": PROTOCOL}
    assert "database order" in m["tie_rule"]
    assert m["inputs"] == metric_files
    assert m["split_seeds"] == {"dmch_60_40": [0, 1, 2]}
    prov = m["provenance"]
    for key in ("git_commit", "config_hash", "packages", "python", "host", "seconds"):
        assert key in prov
    assert prov["config_hash"] is not None
    # no stray temporary files next to the outputs
    assert sorted(p.name for p in csv.parent.iterdir()) == sorted(
        [csv.name, md.name, meta.name])


def test_single_split_has_nan_std(tmp_path):
    paths = [write_metrics(tmp_path, "milan", 32, 0, metrics={"map_all": 0.5}),
             write_metrics(tmp_path, "milan", 32, 1, ranking="coarse_to_fine",
                           metrics={"map_all": 0.7}),
             write_metrics(tmp_path, "milan", 32, 2, ranking="coarse_to_fine",
                           metrics={"map_all": 0.8})]
    csv, md, meta = outputs(tmp_path)
    build_table("exp", paths, csv, md, meta)
    df = pd.read_csv(csv)
    one = df[df["ranking"] == "hamming"].iloc[0]
    assert one["n_splits"] == 1 and math.isnan(one["std"]) and one["mean"] == 0.5
    two = df[df["ranking"] == "coarse_to_fine"].iloc[0]
    assert two["n_splits"] == 2 and two["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert "0.500" in md.read_text() and "0.500 ±" not in md.read_text()


def test_duplicate_cell_is_an_error(tmp_path, metric_files):
    dup = tmp_path / "copy.json"
    dup.write_text(open(metric_files[4]).read())
    csv, md, meta = outputs(tmp_path)
    with pytest.raises(RshashError, match="same cell") as exc:
        build_table("exp", metric_files + [str(dup)], csv, md, meta)
    assert str(dup) in str(exc.value) and metric_files[4] in str(exc.value)
    assert not csv.exists() and not md.exists() and not meta.exists()


@pytest.mark.parametrize("content, why", [
    ("{not json", "not valid JSON"),
    (json.dumps({"ranking": "hamming", "metrics": {"map_all": 1.0}}), "no 'cell'"),
    (json.dumps({"cell": {"dataset": "ucmd", "backbone": "b", "protocol": "p",
                          "method": "milan", "bits": 16}, "ranking": "hamming",
                 "metrics": {"map_all": 1.0}}), "no 'seed'"),
    (json.dumps({"cell": {"dataset": "ucmd", "backbone": "b", "protocol": "p",
                          "method": "milan", "bits": "many", "seed": 0},
                 "ranking": "hamming", "metrics": {"map_all": 1.0}}), "bits"),
    (json.dumps({"cell": {"dataset": "ucmd", "backbone": "b", "protocol": "p",
                          "method": "milan", "bits": 16, "seed": 0},
                 "ranking": "hamming", "metrics": {"map_all": "high"}}), "map_all"),
    (json.dumps({"cell": {"dataset": "ucmd", "backbone": "b", "protocol": "p",
                          "method": "milan", "bits": 16, "seed": 0},
                 "metrics": {"map_all": 1.0}}), "ranking"),
])
def test_malformed_file_is_named(tmp_path, metric_files, content, why):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    csv, md, meta = outputs(tmp_path)
    with pytest.raises(RshashError, match=why) as exc:
        build_table("exp", metric_files + [str(bad)], csv, md, meta)
    assert str(bad) in str(exc.value)
    assert not csv.exists()


def test_missing_file_is_named(tmp_path, metric_files):
    missing = str(tmp_path / "nope" / "hamming.json")
    csv, md, meta = outputs(tmp_path)
    with pytest.raises(RshashError, match="not found") as exc:
        build_table("exp", [missing] + metric_files, csv, md, meta)
    assert missing in str(exc.value)


def test_report_does_not_import_torch():
    import subprocess

    code = ("import sys, rshash.report.tables, rshash.report.plots; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def write_fake_codes(path, n_query=60, n_classes=3, bits=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_query // n_classes)
    centers = rng.integers(0, 2, size=(n_classes, bits))
    flips = rng.random((n_query, bits)) < 0.1
    bits01 = np.where(flips, 1 - centers[labels], centers[labels])
    # a few database rows that must not be plotted
    db = rng.integers(0, 2, size=(5, bits))
    all_bits = np.vstack([bits01, db])
    role = ["query"] * n_query + ["database"] * 5
    label = np.concatenate([labels, np.zeros(5, int)])
    write_codes(path, [f"img{i}" for i in range(len(role))], label, role,
                pack_bits(all_bits), all_bits.astype(np.float32), bits)


def test_plot_tsne_writes_png(tmp_path):
    import matplotlib.image as mpimg

    codes = tmp_path / "codes.parquet"
    write_fake_codes(codes)
    out = tmp_path / "plots" / "tsne.png"
    plot_tsne(codes, out, "milan, 16 bits")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    # not a blank canvas: several distinct colours are drawn
    assert len(np.unique(img.reshape(-1, img.shape[2])[:, :3], axis=0)) > 20
    assert [p.name for p in out.parent.iterdir()] == ["tsne.png"]


def test_subsample_is_seeded_sorted_and_unique():
    a = subsample(1000, 100, seed=3)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, subsample(1000, 100, seed=3))
    assert not np.array_equal(a, subsample(1000, 100, seed=4))
    assert np.array_equal(subsample(50, 100), np.arange(50))


def test_plot_tsne_many_classes_uses_colorbar(tmp_path):
    import matplotlib.image as mpimg

    codes = tmp_path / "codes.parquet"
    write_fake_codes(codes, n_query=50, n_classes=25, bits=8)
    out = tmp_path / "many.png"
    plot_tsne(codes, out, "itq, 8 bits")
    assert mpimg.imread(out).shape[0] > 300


def test_plot_tsne_subsamples_deterministically(tmp_path):
    import matplotlib.image as mpimg

    codes = tmp_path / "codes.parquet"
    write_fake_codes(codes, n_query=90, n_classes=3)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_tsne(codes, a, "dmch, 16 bits", max_points=40, seed=1)
    plot_tsne(codes, b, "dmch, 16 bits", max_points=40, seed=1)
    assert np.array_equal(mpimg.imread(a), mpimg.imread(b))


def test_plot_tsne_needs_query_rows(tmp_path):
    codes = tmp_path / "codes.parquet"
    bits01 = np.zeros((3, 8), dtype=np.uint8)
    write_codes(codes, ["a", "b", "c"], [0, 1, 2], ["database"] * 3, pack_bits(bits01),
                bits01.astype(np.float32), 8)
    with pytest.raises(RshashError, match="query rows"):
        plot_tsne(codes, tmp_path / "x.png", "lsh, 8 bits")
    assert not (tmp_path / "x.png").exists()


def test_paired_comparison_against_scipy_and_by_hand(tmp_path, metric_files):
    """Paired differences per seed, mean and 95% t-interval; a real-valued reference
    (bits 0) pairs with every bit length; a row without reference is listed, not dropped."""
    from scipy import stats

    files = list(metric_files)
    raw = {s: {"map_all": 0.5 + 0.01 * s, "p_at_10": 0.4} for s in SEEDS}
    files += [write_metrics(tmp_path, "raw", 0, s, ranking="euclidean", metrics=raw[s])
              for s in SEEDS]
    csv, md, meta = outputs(tmp_path)
    paired_csv = tmp_path / "tables" / "exp.paired.csv"
    build_table("exp", files, csv, md, meta, reference={"method": "raw"}, out_paired=paired_csv)
    paired = pd.read_csv(paired_csv)
    row = paired[(paired.method == "milan") & (paired.bits == 16)
                 & (paired.metric == "map_all")].iloc[0]
    d = np.array([fake_value("milan", 16, s, "map_all") - raw[s]["map_all"] for s in SEEDS])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert row.reference_bits == 0 and row.reference_ranking == "euclidean"
    assert row.n_pairs == 3
    assert row.mean_diff == pytest.approx(d.mean())
    assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # only metrics both sides have are paired; the reference itself is not a row
    assert set(paired.metric) == {"map_all", "p_at_10"}
    assert "raw" not in set(paired.method)
    assert len(paired) == len(METHODS) * len(BITS) * 2
    text = md.read_text()
    assert "Paired comparison with raw" in text and "95%" in text

    # two seeds by hand: differences 0.1 and 0.3 -> mean 0.2, sd 0.1414, t(0.975, 1) = 12.706
    one = [write_metrics(tmp_path / "h", "a", 8, s, metrics={"map_all": v})
           for s, v in ((0, 0.6), (1, 0.8))]
    one += [write_metrics(tmp_path / "h", "b", 8, s, metrics={"map_all": v})
            for s, v in ((0, 0.5), (1, 0.5))]
    one += [write_metrics(tmp_path / "h", "a", 16, 0, metrics={"map_all": 0.9})]
    csv, md, meta = outputs(tmp_path / "h")
    build_table("h", one, csv, md, meta, reference={"method": "b", "ranking": "hamming"},
                out_paired=tmp_path / "h.paired.csv")
    paired = pd.read_csv(tmp_path / "h.paired.csv").set_index("bits")
    assert paired.loc[8, "mean_diff"] == pytest.approx(0.2)
    assert paired.loc[8, "ci_high"] - 0.2 == pytest.approx(12.7062 * 0.141421 / np.sqrt(2),
                                                           rel=1e-4)
    assert paired.loc[16, "n_pairs"] == 0 and math.isnan(paired.loc[16, "mean_diff"])
    assert "no reference row" in md.read_text()


def test_unknown_reference_is_an_error(tmp_path, metric_files):
    csv, md, meta = outputs(tmp_path)
    with pytest.raises(RshashError, match="reference lsh"):
        build_table("exp", metric_files, csv, md, meta, reference={"method": "lsh"})
    assert not csv.exists()


def test_explicit_comparisons_pair_variants_and_rankings(tmp_path):
    """An ablation against its full method, a re-ranking against Hamming ranking."""
    files = []
    for s, (full, ablated, c2f) in enumerate([(0.9, 0.8, 0.92), (0.8, 0.75, 0.83),
                                              (0.85, 0.7, 0.86)]):
        files.append(write_metrics(tmp_path, "dmch", 32, s, metrics={"map_all": full}))
        files.append(write_metrics(tmp_path, "dmch_ncat", 32, s, metrics={"map_all": ablated}))
        files.append(write_metrics(tmp_path, "dmch", 32, s, ranking="coarse_to_fine",
                                   metrics={"map_all": c2f}))
    csv, md, meta = outputs(tmp_path)
    comparisons = [{"method": "dmch_ncat", "reference": "dmch"},
                   {"method": "dmch", "ranking": "coarse_to_fine", "reference": "dmch",
                    "reference_ranking": "hamming"}]
    build_table("abl", files, csv, md, meta, comparisons=comparisons,
                out_paired=tmp_path / "p.csv")
    paired = pd.read_csv(tmp_path / "p.csv").set_index(["method", "ranking"])
    assert len(paired) == 2
    assert paired.loc[("dmch_ncat", "hamming"), "mean_diff"] == pytest.approx(-0.1)
    assert paired.loc[("dmch", "coarse_to_fine"), "mean_diff"] == pytest.approx(0.02)
    assert paired.loc[("dmch", "coarse_to_fine"), "reference_ranking"] == "hamming"
    with pytest.raises(RshashError, match="comparison row dah"):
        build_table("abl", files, csv, md, meta, comparisons=[{"method": "dah",
                                                               "reference": "dmch"}])
