"""Each job's params hold exactly what its output depends on: after a first run, a
change that no output depends on plans nothing, and one that some outputs depend on
plans only those (a protocol's source or unused seeds, an added mAP cut-off, decoding
workers, a method's default stated explicitly)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

TABLE = "results/tables/tiny.csv"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, snakemake):
    """The shipped config with a tiny synthetic dataset and experiment (lsh and itq at 16
    bits, one split, no plots), built once."""
    repo = REPO
    work = tmp_path_factory.mktemp("reruns")
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["datasets"]["tiny"] = {
        "synthetic": {"n_classes": 3, "per_class": 10, "size": 32, "seed": 0}
    }
    cfg["experiments"] = {
        "tiny": {
            "datasets": ["tiny"],
            "backbones": ["efficientnet_lite0"],
            "protocols": ["dmch_60_40"],
            "seeds": [0],
            "methods": ["lsh", "itq"],
            "bits": [16],
            "plots": [],
        }
    }
    cfg["targets"] = ["tiny"]
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(repo, work, TABLE)
    return work, cfg


def _plan(repo, work, cfg, change, snakemake, planned):
    changed = copy.deepcopy(cfg)
    change(changed)
    (work / "config.yaml").write_text(yaml.safe_dump(changed))
    try:
        out = snakemake(repo, work, "-n", TABLE)
    finally:
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return planned(out.stdout + out.stderr)


@pytest.mark.parametrize(
    "change,jobs",
    [
        (lambda c: None, {}),
        # the tables record the protocol's fields (meta.json): only the table reruns
        (lambda c: c["protocols"]["dmch_60_40"].update(source="DMCH, Table 2"), {"build_table": 1}),
        (lambda c: c["protocols"]["dmch_60_40"]["seeds"].append(7), {"build_table": 1}),
        # a cut-off is a metric of every cell's evaluation; training stops on the first
        (
            lambda c: c["protocols"]["dmch_60_40"]["map_cutoffs"].append(10),
            {"evaluate_ranking": 2, "build_table": 1},
        ),
        (lambda c: c["backbones"]["efficientnet_lite0"].update(num_workers=2), {}),
        (lambda c: c["variants"]["itq"].update(params={"n_iter": 50}), {}),
        # what outputs do depend on still reruns them
        (
            lambda c: c["variants"]["itq"].update(params={"n_iter": 20}),
            {"train_method": 1, "evaluate_ranking": 1, "build_table": 1},
        ),
        # the manifest step checks every class is large enough for the fractions
        # (before the heavy extraction of a first run), so a fraction reruns it and
        # what reads the manifest
        (
            lambda c: c["protocols"]["dmch_60_40"].update(train_fraction=0.5),
            {
                "build_manifest": 1,
                "extract_features": 1,
                "make_split": 1,
                "train_method": 2,
                "evaluate_ranking": 2,
                "build_table": 1,
            },
        ),
    ],
)
def test_a_change_plans_only_what_depends_on_it(tiny_run, repo, snakemake, planned, change, jobs):
    work, cfg = tiny_run
    assert _plan(repo, work, cfg, change, snakemake, planned) == jobs


def test_features_do_not_depend_on_decoding_workers(synthetic_features, tmp_path):
    """The extraction job's number of decoding workers is not in its params: the features
    are byte-identical for any (its batch size is, since a batch size changes the float
    summation order of a CPU convolution: features differ in the last bits)."""
    from rshash.features import read_features

    synthetic_features(tmp_path, ("w0.h5",), batch_size=7, n_classes=3, per_class=5, size=32)
    from rshash.features import extract

    extract(
        tmp_path / "manifest.parquet",
        "efficientnet_lite0",
        tmp_path / "w2.h5",
        threads=2,
        batch_size=7,
        device="cpu",
        num_workers=2,
        progress=False,
    )
    a = read_features(tmp_path / "w0.h5").features
    b = read_features(tmp_path / "w2.h5").features
    assert a.dtype == np.float32 and np.array_equal(a, b)
