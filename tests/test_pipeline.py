"""End-to-end: snakemake runs a small demo in a temporary directory."""

import pandas as pd
import pytest
import yaml

from rshash.report.tables import COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, snakemake):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path_factory.mktemp("demo")
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["datasets"]["demo"]["synthetic"].update(per_class=12, size=64)
    cfg["variants"]["milan"].setdefault("params", {})["max_epochs"] = 30
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(repo, work, "results/tables/demo.csv")
    return repo, work, cfg


def test_demo_table_has_every_method_and_bit_length(demo_run):
    _, work, _ = demo_run
    table = pd.read_csv(work / "results/tables/demo.csv")
    assert list(table.columns) == COLUMNS
    maps = table[table.metric == "map_all"].set_index(["method", "bits"])
    assert sorted(maps.index) == [(m, b) for m in ("itq", "lsh", "milan") for b in (16, 32)] + [
        ("raw", 0)
    ]
    assert (maps.n_splits == 2).all() and maps["mean"].between(0, 1).all()
    # far above chance (about 0.1 for 10 balanced classes): labels and codes line up.
    # Which method wins is tests/test_demo.py's job, on the full-size demo: on this
    # 64 px, 7-per-class miniature a 300-iteration milan does not beat lsh.
    assert (maps["mean"] > 0.4).all()
    assert set(table[table.method == "raw"].ranking) == {"euclidean"}
    for suffix in (".md", ".meta.json", ".paired.csv"):
        assert (work / f"results/tables/demo{suffix}").stat().st_size > 0
    paired = pd.read_csv(work / "results/tables/demo.paired.csv")
    assert set(paired.reference_method) == {"lsh"} and (paired.n_pairs == 2).all()
    plots = work / "results/plots/demo"
    assert len(list((plots / "tsne").rglob("*.png"))) == 6
    assert len(list((plots / "retrieval").rglob("*.png"))) == 7
    assert len(list((plots / "pr_hamming").rglob("*.png"))) == 2
    assert len(list((plots / "p_at_k").rglob("*.png"))) == 2
    assert len(list((plots / "ap_per_class").rglob("*.png"))) == 1


def test_rerun_plans_nothing_and_one_changed_variant_reruns_only_its_cells(
    demo_run, snakemake, planned
):
    repo, work, cfg = demo_run
    out = snakemake(repo, work, "-n", "results/tables/demo.csv")
    assert planned(out.stdout + out.stderr) == {}
    cfg["variants"]["milan"].setdefault("params", {})["margin"] = 0.3
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(repo, work, "-n", "results/tables/demo.csv")
    jobs = planned(out.stdout + out.stderr)
    assert jobs == {
        "train_method": 4,
        "evaluate_ranking": 4,
        "plot_tsne": 2,
        "plot_retrieval": 2,
        "plot_curves": 4,
        "plot_ap_per_class": 1,
        "build_table": 1,
    }
    for block in (out.stdout + out.stderr).split("rule ")[1:]:
        if block.split(":")[0] in (
            "train_method",
            "evaluate_ranking",
            "plot_tsne",
            "plot_retrieval",
        ):
            assert "method=milan" in block


def test_report_html_has_every_table_and_plot(demo_run, snakemake):
    repo, work, _ = demo_run
    snakemake(repo, work, "--report", "report.html", "results/tables/demo.csv")
    html = (work / "report.html").read_text(errors="replace")
    assert len(html) > 10_000
    for name in (
        "demo.csv",
        "demo.paired.csv",
        "pr_hamming",
        "p_at_k",
        "ap_per_class",
        "retrieval",
        "tsne",
    ):
        assert name in html, name
