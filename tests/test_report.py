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


def test_a_cell_stopped_at_its_cap_is_marked_and_one_stopped_by_patience_is_not(
    tmp_path, metric_files, report_data
):
    patience = {"stopped": "patience", "max_epochs": 150}
    models = [
        report_data.model(m, b, s, **patience)
        for m in report_data.methods
        for b in report_data.bits
        for s in report_data.seeds
        if (m, b, s) != ("dmch", 64, 1)
    ]
    # dmch at 64 bits ran to its cap in split 1, its score still climbing
    models.append(
        report_data.model("dmch", 64, 1, stopped="cap", max_epochs=150, still_rising=True)
    )
    csv, md, meta = report_data.table(metric_files, model_paths=models)
    text = md.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| dmch |"))
    cells = row.strip("|").split("|")
    assert cells[2].strip().endswith("†") and not cells[1].strip().endswith("†")  # 16 | 64
    assert "†" not in next(line for line in text.splitlines() if line.startswith("| milan |"))
    # the values themselves are unchanged, and the footnote names the cell and its cap
    v = [report_data.value("dmch", 64, s, "map_all") for s in report_data.seeds]
    assert f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f} †" in text
    assert (
        "† stopped at its cap (max_epochs) in at least one split, not by its patience, so it "
        "may not have converged: dmch 64 bits (max_epochs=150; 1 of 3 splits, the validation "
        "score still rising in 1). Raise a cap with a variant's `params: {max_epochs: N}`"
    ) in text
    assert text.count("† stopped at its cap") == 1  # one section (one ranking)
    m = json.loads(meta.read_text())
    assert m["models"] == models and m["inputs"] == metric_files
    assert m["stopped_at_cap"]["cells"] == [
        {
            "dataset": "ucmd",
            "backbone": "efficientnet_lite0",
            "protocol": "dmch_60_40",
            "method": "dmch",
            "bits": 64,
            "n_splits": 3,
            "n_cap": 1,
            "n_rising": 1,
            "max_epochs": [150],
            "seeds": [1],
        }
    ]
    # the CSV table is the public contract: the same with or without the model files
    plain_csv, plain_md, _ = report_data.table(metric_files, name="plain")
    assert plain_csv.read_text().replace("\nplain,", "\nexp,") == csv.read_text()
    assert "†" not in plain_md.read_text()
    # the CLI takes the model files before "--"
    from rshash.cli import main

    out = report_data.outputs("cli")
    argv = ["table", "--experiment", "exp", "--csv", out[0], "--md", out[1], "--meta", out[2]]
    assert main([*map(str, argv), "--models", *models, "--", *metric_files]) == 0
    assert out[1].read_text() == text


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
