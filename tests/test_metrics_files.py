"""Reading and validating metrics files (rshash.report.metrics_files): one reader for
tables and figures, every problem one RshashError naming the file, no output left."""

import json

import pytest

from rshash import RshashError
from rshash.report.figures import plot_curves
from rshash.report.metrics_files import read_metrics
from rshash.report.tables import build_table


def test_duplicate_cell_is_an_error(tmp_path, metric_files, report_data):
    dup = tmp_path / "copy.json"
    dup.write_text(open(metric_files[4]).read())
    csv, md, meta = report_data.outputs()
    with pytest.raises(RshashError, match="same cell") as exc:
        build_table("exp", metric_files + [str(dup)], csv, md, meta)
    assert str(dup) in str(exc.value) and metric_files[4] in str(exc.value)
    assert not csv.exists() and not md.exists() and not meta.exists()


def _broken(change) -> str:
    """A metrics document, valid until ``change(doc)`` edits it, as JSON text."""
    cell = {"dataset": "ucmd", "backbone": "b", "protocol": "p", "method": "milan", "bits": 16}
    doc = {"cell": {**cell, "seed": 0}, "ranking": "hamming", "metrics": {"map_all": 1.0}}
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    "content, why",
    [
        ("{not json", "not valid JSON"),
        (_broken(lambda d: d.pop("cell")), "no 'cell'"),
        (_broken(lambda d: d["cell"].pop("seed")), "no 'seed'"),
        (_broken(lambda d: d["cell"].update(bits="many")), "bits"),
        (_broken(lambda d: d["metrics"].update(map_all="high")), "map_all"),
        (_broken(lambda d: d.pop("ranking")), "ranking"),
    ],
)
def test_malformed_file_is_named(tmp_path, metric_files, content, why, report_data):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    csv, md, meta = report_data.outputs()
    with pytest.raises(RshashError, match=why) as exc:
        build_table("exp", metric_files + [str(bad)], csv, md, meta)
    assert str(bad) in str(exc.value)
    assert not csv.exists()


def test_missing_file_is_named(tmp_path, metric_files, report_data):
    missing = str(tmp_path / "nope" / "hamming.json")
    csv, md, meta = report_data.outputs()
    with pytest.raises(RshashError, match="not found") as exc:
        build_table("exp", [missing] + metric_files, csv, md, meta)
    assert missing in str(exc.value)


def test_figures_read_through_the_same_reader(tmp_path, metric_files):
    """A file the table refuses, a figure refuses with the same message, and no PNG."""
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"cell": {"dataset": "ucmd"}, "ranking": "hamming", "metrics": {"map_all": 1.0}})
    )
    out = tmp_path / "plots" / "pr.png"
    with pytest.raises(RshashError, match="cell has no 'backbone'") as exc:
        plot_curves(metric_files + [str(bad)], "pr_hamming", out, "t")
    assert str(bad) in str(exc.value)
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "curves, why",
    [
        ([1, 2], "'curves' is not a JSON object"),
        ({"pr_hamming": [0.5, 0.6]}, "curve 'pr_hamming' is not a JSON object"),
        ({"pr_hamming": {"precision": [0.5, 0.6]}}, "curve 'pr_hamming' has no 'recall'"),
    ],
)
def test_malformed_curve_is_named(tmp_path, report_data, curves, why):
    bad = report_data.write("milan", 16, 0, curves=curves)
    out = tmp_path / "pr.png"
    with pytest.raises(RshashError, match=why) as exc:
        plot_curves([bad], "pr_hamming", out, "t")
    assert bad in str(exc.value)
    assert not out.exists()


def test_no_files_is_an_error():
    with pytest.raises(RshashError, match="experiment 'x': no metrics files given"):
        read_metrics([], "experiment 'x'")
