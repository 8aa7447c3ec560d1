"""Regression guard on the real UC Merced copy (1 seed, 32 bits, lsh/itq/milan).

A floor, not the goal: the full experiment is `snakemake results/tables/ucmd.csv`.
"""

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def test_ucmd_floors(repo, tmp_path, ucmd_data_dir, snakemake):
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["data_dir"] = str(ucmd_data_dir)
    cfg["targets"] = ["ucmd_regression"]  # the default target names the demo, left out here
    cfg["experiments"] = {
        "ucmd_regression": {
            "datasets": ["ucmd"],
            "backbones": ["efficientnet_lite0"],
            "protocols": ["dmch_60_40"],
            "methods": ["lsh", "itq", "milan"],
            "bits": [32],
            "seeds": [0],
        }
    }
    # a floor: milan capped at 100 epochs (its default 500 stops on validation; this
    # keeps the guard to about a minute of training)
    cfg["variants"]["milan"]["params"] = {"max_epochs": 100}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(repo, tmp_path, "results/tables/ucmd_regression.csv")
    manifest = pd.read_parquet(tmp_path / "results/manifests/ucmd.parquet")
    assert len(manifest) == 2100 and manifest.label.nunique() == 21
    table = pd.read_csv(tmp_path / "results/tables/ucmd_regression.csv")
    score = table.set_index(["method", "metric"])["mean"]
    assert score["itq", "map_all"] > score["lsh", "map_all"]
    assert score["itq", "map_at_20"] > score["lsh", "map_at_20"]
    assert score["milan", "map_at_20"] >= 0.75
