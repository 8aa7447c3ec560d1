"""The compute-cost table: hand-written Snakemake benchmark TSVs -> tables/{experiment}_cost.csv."""

import math

import pandas as pd
import pytest

from rshash import RshashError
from rshash.cli import main
from rshash.report.cost import COLUMNS, build_cost, identify

BACKBONES = ["efficientnet_lite0", "resnet50"]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(root, rel, *rows):
    """Write a benchmark TSV at root/benchmarks/rel; rows are (seconds, max_rss or 'NA')."""
    path = root / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{s}\t0:00:{int(s):02d}\t{rss}\t900.5\t{rss}\t{rss}\t1.2\t0.3\t85.0\t{s}\n"
        if rss != "NA"
        else f"{s}\t0:00:{int(s):02d}\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n"
        for s, rss in rows
    ]
    path.write_text(HEADER + "".join(lines))
    return path


CELL = "demo/efficientnet_lite0/dmch_60_40/{method}/{bits}/split{seed}"


@pytest.fixture
def files(tmp_path):
    paths = [
        bench(tmp_path, "extract_features/demo/efficientnet_lite0.tsv", (40.0, 2000.0)),
        bench(tmp_path, "extract_features/demo/efficientnet_lite0_maps.tsv", (55.5, 3000.0)),
        bench(
            tmp_path, f"train_method/{CELL.format(method='itq', bits=16, seed=0)}.tsv", (2.0, 300.0)
        ),
        bench(
            tmp_path, f"train_method/{CELL.format(method='itq', bits=16, seed=1)}.tsv", (4.0, 500.0)
        ),
        # two repeats in one file count as two runs
        bench(
            tmp_path,
            f"train_method/{CELL.format(method='itq', bits=32, seed=0)}.tsv",
            (3.0, 400.0),
            (5.0, 410.0),
        ),
        bench(
            tmp_path,
            f"evaluate_ranking/{CELL.format(method='itq', bits=16, seed=0)}/hamming.tsv",
            (1.0, "NA"),
        ),
        bench(
            tmp_path,
            f"evaluate_ranking/{CELL.format(method='itq', bits=16, seed=1)}/hamming.tsv",
            (3.0, 250.0),
        ),
    ]
    return tmp_path, paths


def test_identify_reads_stage_and_cell_from_the_path():
    assert identify("r/benchmarks/extract_features/ucmd/efficientnet_lite0_rot.tsv", BACKBONES) == {
        "stage": "extract",
        "dataset": "ucmd",
        "backbone": "efficientnet_lite0",
        "protocol": "",
        "method": "",
        "bits": pd.NA,
        "detail": "rot",
    }
    ident = identify(
        f"benchmarks/evaluate_ranking/{CELL.format(method='dmch', bits=64, seed=2)}"
        "/coarse_to_fine.tsv",
        BACKBONES,
    )
    assert (ident["stage"], ident["method"], ident["bits"], ident["detail"]) == (
        "evaluate",
        "dmch",
        64,
        "coarse_to_fine",
    )
    with pytest.raises(RshashError, match="other/x.tsv"):
        identify("results/benchmarks/other/x.tsv", BACKBONES)
    with pytest.raises(RshashError, match="no known backbone"):
        identify("benchmarks/extract_features/demo/alexnet.tsv", BACKBONES)


def test_cost_table_aggregates_seconds_and_peak_memory_over_seeds(files, tmp_path):
    _, paths = files
    out = tmp_path / "tables" / "demo_cost.csv"
    build_cost("demo", paths, out, BACKBONES)
    table = pd.read_csv(out, keep_default_na=False)  # empty key cells stay ""
    assert list(table.columns) == COLUMNS
    rows = {(r.stage, r.method, r.bits and int(r.bits), r.detail): r for r in table.itertuples()}
    assert list(rows) == [
        ("extract", "", "", "features"),
        ("extract", "", "", "maps"),
        ("train", "itq", 16, ""),
        ("train", "itq", 32, ""),
        ("evaluate", "itq", 16, "hamming"),
    ]
    assert (table.experiment == "demo").all()
    maps = rows[("extract", "", "", "maps")]
    assert (maps.n_runs, maps.seconds_mean, maps.max_rss_mb_max) == (1, 55.5, 3000.0)
    t16 = rows[("train", "itq", 16, "")]
    assert (t16.n_runs, t16.seconds_mean, t16.seconds_max) == (2, 3.0, 4.0)
    assert (t16.n_rss, t16.max_rss_mb_mean, t16.max_rss_mb_max) == (2, 400.0, 500.0)
    t32 = rows[("train", "itq", 32, "")]
    assert (t32.n_runs, t32.seconds_mean, t32.max_rss_mb_mean) == (2, 4.0, 405.0)
    # an NA memory sample is counted out (n_rss), not averaged as 0
    ev = rows[("evaluate", "itq", 16, "hamming")]
    assert (ev.n_runs, ev.seconds_mean, ev.n_rss, ev.max_rss_mb_mean) == (2, 2.0, 1, 250.0)
    assert t16.protocol == "dmch_60_40" and t16.backbone == "efficientnet_lite0"


def test_cli_cost_verb_writes_the_same_table(files, tmp_path):
    _, paths = files
    lib, cli = tmp_path / "lib.csv", tmp_path / "cli.csv"
    build_cost(
        "demo", paths, lib, BACKBONES + ["inception_v3", "resnet50", "vgg16", "efficientnet_lite2"]
    )
    assert main(["cost", "--experiment", "demo", "--out", str(cli), *map(str, paths)]) == 0
    assert cli.read_text() == lib.read_text()


def test_all_memory_missing_leaves_the_memory_cells_empty(tmp_path):
    path = bench(
        tmp_path, f"train_method/{CELL.format(method='lsh', bits=16, seed=0)}.tsv", (0.5, "NA")
    )
    table = build_cost("demo", [path], tmp_path / "c.csv", BACKBONES)
    assert table.n_rss[0] == 0 and math.isnan(table.max_rss_mb_mean[0])


@pytest.mark.parametrize(
    "content, why",
    [
        ("", "not a benchmark TSV"),
        ("s\th:m:s\n", "no column max_rss"),
        (HEADER, "no benchmark rows"),
        (HEADER + "abc\t0:00:01\t1\t1\t1\t1\t1\t1\t1\t1\n", "non-numeric"),
    ],
)
def test_bad_benchmark_file_is_named_and_leaves_no_table(tmp_path, content, why):
    path = (
        tmp_path / "benchmarks/train_method" / (CELL.format(method="lsh", bits=16, seed=0) + ".tsv")
    )
    path.parent.mkdir(parents=True)
    path.write_text(content)
    out = tmp_path / "c.csv"
    with pytest.raises(RshashError, match=why) as err:
        build_cost("demo", [path], out, BACKBONES)
    assert str(path) in str(err.value)
    assert not out.exists() and list(tmp_path.glob(".c.csv*")) == []


def test_missing_file_and_no_files_are_errors(tmp_path):
    with pytest.raises(RshashError, match="not found"):
        build_cost(
            "demo", [tmp_path / "benchmarks/train_method/x.tsv"], tmp_path / "c.csv", BACKBONES
        )
    with pytest.raises(RshashError, match="no benchmark files"):
        build_cost("demo", [], tmp_path / "c.csv", BACKBONES)


def model(root, method, bits, seed, **header):
    """A model file at root/models/{cell}.npz whose header is ``header`` (what training
    records: epochs_run, stopped, ...)."""
    from rshash.digest import write_npz

    path = root / "models" / (CELL.format(method=method, bits=bits, seed=seed) + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, {"method": method, "bits": bits, "seed": seed, "params": {}, **header}, {})
    return path


def test_training_rows_count_the_splits_stopped_at_their_cap(tmp_path):
    trained = {"refit_epochs": 40, "max_epochs": 150}
    at_cap = {"epochs_run": 150, "stopped": "cap", **trained}
    paths = [
        *(
            bench(tmp_path, f"train_method/{CELL.format(method=m, bits=16, seed=s)}.tsv", (1.0, 9))
            for m in ("dmch", "csq", "itq")
            for s in (0, 1, 2)
        ),
        # dmch: two of three splits ran to the cap, one stopped by patience
        model(tmp_path, "dmch", 16, 0, still_rising=True, **at_cap),
        model(tmp_path, "dmch", 16, 1, epochs_run=90, stopped="patience", **trained),
        model(tmp_path, "dmch", 16, 2, still_rising=False, **at_cap),
        *(
            model(tmp_path, "csq", 16, s, epochs_run=60, stopped="patience", **trained)
            for s in (0, 1, 2)
        ),
        *(model(tmp_path, "itq", 16, s) for s in (0, 1, 2)),  # closed form: no stop
    ]
    out = tmp_path / "c.csv"
    build_cost("demo", paths, out, BACKBONES)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)  # the cells as written
    assert list(table.columns) == COLUMNS
    rows = {r.method: r for r in table.itertuples()}
    assert (rows["dmch"].n_stopped_cap, rows["dmch"].stopped_cap_share) == ("2", "0.6667")
    assert (rows["dmch"].epochs_mean, rows["dmch"].epochs_max) == ("130.0000", "150.0000")
    assert (rows["csq"].n_stopped_cap, rows["csq"].stopped_cap_share) == ("0", "0.0000")
    assert (rows["itq"].n_stopped_cap, rows["itq"].stopped_cap_share) == ("", "")
