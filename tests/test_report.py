"""Experiment tables (rshash.report.tables): CSV, markdown and meta JSON of metrics
files, written whole or not at all (numpy/pandas only)."""

import json
import sys

import numpy as np

from rshash.provenance import config_hash


def test_markdown_has_formatted_cells_and_notes(tmp_path, metric_files, report_data):
    _, md, _ = report_data.table(metric_files)
    text = md.read_text()
    for method in report_data.methods:
        for bits in report_data.bits:
            for metric in ("map_all", "map_at_20", "p_at_10"):
                v = [report_data.value(method, bits, s, metric) for s in report_data.seeds]
                assert f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" in text
    # query_ms is not a headline metric
    q = [report_data.value("milan", 16, s, "query_ms") for s in report_data.seeds]
    assert f"{np.mean(q):.3f} ± {np.std(q, ddof=1):.3f}" not in text
    assert "n = 3 splits" in text
    assert "| method | 16 bits | 64 bits |" in text
    assert "divides by the relevant items retrieved in the top k" in text
    assert "all relevant items" in text
    assert "database order" in text
    # rows: milan before dmch inside a table
    assert text.index("| milan |") < text.index("| dmch |")


def test_meta_json_fields(tmp_path, metric_files, report_data):
    csv, md, meta = report_data.table(
        metric_files,
        protocols={"dmch_60_40": report_data.protocol, "unused": {"train": 0.5}},
    )
    m = json.loads(meta.read_text())
    assert m["experiment"] == "exp"
    assert m["protocols"] == {"dmch_60_40": report_data.protocol}
    assert "database order" in m["tie_rule"]
    assert m["inputs"] == metric_files
    assert m["split_seeds"] == {"dmch_60_40": [0, 1, 2]}
    prov = m["provenance"]
    for key in ("git_commit", "config_hash", "packages", "python", "host", "seconds"):
        assert key in prov
    # the hash of what the table was given
    protocols = {"dmch_60_40": report_data.protocol, "unused": {"train": 0.5}}
    assert prov["config_hash"] == config_hash(
        {"protocols": protocols, "reference": {}, "comparisons": []}
    )
    # no stray temporary files next to the outputs
    assert sorted(p.name for p in csv.parent.iterdir()) == sorted([csv.name, md.name, meta.name])


def test_report_does_not_import_torch():
    import subprocess

    code = (
        "import sys, rshash.report.tables, rshash.report.plots, rshash.report.figures; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_table_on_a_full_disk_is_one_line_and_leaves_nothing(
    tmp_path, metric_files, report_data, rshash_on_full_disk
):
    csv, md, meta = report_data.outputs()
    proc = rshash_on_full_disk(
        ["table", "--experiment", "exp", "--csv", csv, "--md", md, "--meta", meta, *metric_files],
        max_bytes=1024,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"rshash table: error: {csv}: cannot write: File too large"]
    assert list(csv.parent.iterdir()) == []  # no table, no hidden temporary file
