"""Statistics over split seeds (rshash.report.stats): means and sample standard
deviations of the long table, the paired comparison and its 95% interval."""

import math

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.report.metrics_files import read_metrics
from rshash.report.stats import summarize
from rshash.report.tables import COLUMNS, build_table


def test_csv_columns_means_stds_and_order(tmp_path, metric_files, report_data):
    csv, _, _ = report_data.table(metric_files, protocols={"dmch_60_40": report_data.protocol})
    df = pd.read_csv(csv)
    assert list(df.columns) == COLUMNS
    # the columns the design fixes (the end-to-end tests check the library's COLUMNS)
    assert COLUMNS == (
        "experiment dataset backbone protocol method bits ranking metric mean std n_splits".split()
    )
    # 2 methods x 2 bits x 1 ranking x 5 scalar metrics; the curve is not a row
    assert len(df) == 2 * 2 * 5
    assert set(df["metric"]) == {"map_all", "map_at_20", "p_at_5", "p_at_10", "query_ms"}
    assert (df["experiment"] == "exp").all()
    assert (df["n_splits"] == 3).all()
    for row in df.itertuples(index=False):
        values = [report_data.value(row.method, row.bits, s, row.metric) for s in report_data.seeds]
        assert row.mean == pytest.approx(np.mean(values), rel=1e-12)
        assert row.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert row.std != pytest.approx(np.std(values, ddof=0), rel=1e-9)
    # methods in order of first appearance, bits numeric, metrics in file order
    assert list(dict.fromkeys(df["method"])) == ["milan", "dmch"]
    assert list(df[df["method"] == "milan"]["bits"].drop_duplicates()) == [16, 64]
    first = df[(df["method"] == "milan") & (df["bits"] == 16)]
    assert list(first["metric"]) == ["map_all", "map_at_20", "p_at_5", "p_at_10", "query_ms"]


def test_single_split_has_nan_std(tmp_path, report_data):
    paths = [
        report_data.write("milan", 32, 0, metrics={"map_all": 0.5}),
        report_data.write("milan", 32, 1, ranking="coarse_to_fine", metrics={"map_all": 0.7}),
        report_data.write("milan", 32, 2, ranking="coarse_to_fine", metrics={"map_all": 0.8}),
    ]
    csv, md, _ = report_data.table(paths)
    df = pd.read_csv(csv)
    one = df[df["ranking"] == "hamming"].iloc[0]
    assert one["n_splits"] == 1 and math.isnan(one["std"]) and one["mean"] == 0.5
    two = df[df["ranking"] == "coarse_to_fine"].iloc[0]
    assert two["n_splits"] == 2 and two["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert "0.500" in md.read_text() and "0.500 ±" not in md.read_text()


def test_paired_comparison_against_scipy_and_by_hand(tmp_path, metric_files, report_data):
    """Paired differences per seed, mean and 95% t-interval; a real-valued reference
    (bits 0) pairs with every bit length; a row without reference is listed, not dropped."""
    from scipy import stats

    files = list(metric_files)
    raw = {s: {"map_all": 0.5 + 0.01 * s, "p_at_10": 0.4} for s in report_data.seeds}
    files += [
        report_data.write("raw", 0, s, ranking="euclidean", metrics=raw[s])
        for s in report_data.seeds
    ]
    csv, md, meta = report_data.outputs()
    paired_csv = tmp_path / "tables" / "exp.paired.csv"
    build_table("exp", files, csv, md, meta, reference={"method": "raw"}, out_paired=paired_csv)
    paired = pd.read_csv(paired_csv)
    row = paired[
        (paired.method == "milan") & (paired.bits == 16) & (paired.metric == "map_all")
    ].iloc[0]
    d = np.array(
        [
            report_data.value("milan", 16, s, "map_all") - raw[s]["map_all"]
            for s in report_data.seeds
        ]
    )
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert row.reference_bits == 0 and row.reference_ranking == "euclidean"
    assert row.n_pairs == 3
    assert row.mean_diff == pytest.approx(d.mean())
    assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # only metrics both sides have are paired; the reference itself is not a row
    assert set(paired.metric) == {"map_all", "p_at_10"}
    assert "raw" not in set(paired.method)
    assert len(paired) == len(report_data.methods) * len(report_data.bits) * 2
    text = md.read_text()
    assert "Paired comparison with raw" in text and "95%" in text

    # two seeds by hand: differences 0.1 and 0.3 -> mean 0.2, sd 0.1414, t(0.975, 1) = 12.706
    one = [
        report_data.write("a", 8, s, metrics={"map_all": v}, root=tmp_path / "h")
        for s, v in ((0, 0.6), (1, 0.8))
    ]
    one += [
        report_data.write("b", 8, s, metrics={"map_all": v}, root=tmp_path / "h")
        for s, v in ((0, 0.5), (1, 0.5))
    ]
    one += [report_data.write("a", 16, 0, metrics={"map_all": 0.9}, root=tmp_path / "h")]
    csv, md, meta = report_data.outputs(root=tmp_path / "h")
    build_table(
        "h",
        one,
        csv,
        md,
        meta,
        reference={"method": "b", "ranking": "hamming"},
        out_paired=tmp_path / "h.paired.csv",
    )
    paired = pd.read_csv(tmp_path / "h.paired.csv").set_index("bits")
    assert paired.loc[8, "mean_diff"] == pytest.approx(0.2)
    assert paired.loc[8, "ci_high"] - 0.2 == pytest.approx(
        12.7062 * 0.141421 / np.sqrt(2), rel=1e-4
    )
    assert paired.loc[16, "n_pairs"] == 0 and math.isnan(paired.loc[16, "mean_diff"])
    assert "no reference row" in md.read_text()


def test_unknown_reference_is_an_error(tmp_path, metric_files, report_data):
    csv, md, meta = report_data.outputs()
    with pytest.raises(RshashError, match="reference lsh"):
        build_table("exp", metric_files, csv, md, meta, reference={"method": "lsh"})
    assert not csv.exists()


def test_explicit_comparisons_pair_variants_and_rankings(tmp_path, report_data):
    """An ablation against its full method, a re-ranking against Hamming ranking."""
    files = []
    for s, (full, ablated, c2f) in enumerate(
        [(0.9, 0.8, 0.92), (0.8, 0.75, 0.83), (0.85, 0.7, 0.86)]
    ):
        files.append(report_data.write("dmch", 32, s, metrics={"map_all": full}))
        files.append(report_data.write("dmch_ncat", 32, s, metrics={"map_all": ablated}))
        files.append(
            report_data.write("dmch", 32, s, ranking="coarse_to_fine", metrics={"map_all": c2f})
        )
    csv, md, meta = report_data.outputs()
    comparisons = [
        {"method": "dmch_ncat", "reference": "dmch"},
        {
            "method": "dmch",
            "ranking": "coarse_to_fine",
            "reference": "dmch",
            "reference_ranking": "hamming",
        },
    ]
    build_table("abl", files, csv, md, meta, comparisons=comparisons, out_paired=tmp_path / "p.csv")
    paired = pd.read_csv(tmp_path / "p.csv").set_index(["method", "ranking"])
    assert len(paired) == 2
    assert paired.loc[("dmch_ncat", "hamming"), "mean_diff"] == pytest.approx(-0.1)
    assert paired.loc[("dmch", "coarse_to_fine"), "mean_diff"] == pytest.approx(0.02)
    assert paired.loc[("dmch", "coarse_to_fine"), "reference_ranking"] == "hamming"
    with pytest.raises(RshashError, match="comparison row dah"):
        build_table(
            "abl", files, csv, md, meta, comparisons=[{"method": "dah", "reference": "dmch"}]
        )


def test_summary_is_numpy_mean_and_std_to_the_last_digit(report_data):
    """Ten seeds and a null metric: mean and std are exactly numpy's (not pandas' own
    groupby reductions, which skip NaN and round differently)."""
    rng = np.random.default_rng(7)
    values = {s: rng.uniform(0, 1, 3) for s in range(10)}
    paths = [
        report_data.write(
            "milan",
            16,
            s,
            metrics={"map_all": v[0], "p_at_10": v[1], "anmrr": None if s == 4 else v[2]},
        )
        for s, v in values.items()
    ]
    df = summarize("exp", read_metrics(paths, "exp")).set_index("metric")
    for i, metric in enumerate(("map_all", "p_at_10")):
        v = np.array([values[s][i] for s in range(10)])
        assert df.loc[metric, "mean"] == float(np.mean(v))
        assert df.loc[metric, "std"] == float(np.std(v, ddof=1))
    assert math.isnan(df.loc["anmrr", "mean"]) and math.isnan(df.loc["anmrr", "std"])
    assert (df["n_splits"] == 10).all()
