"""End to end, offline: the demo table built on a timm backbone whose random weights
sit in the Hugging Face cache as timm's own download would leave them; without them,
the dry run stops before any job, naming the model, the path and the fetch command."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

MODEL = "test_resnet.r160_in1k"


def _config(repo, work):
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["datasets"]["demo"]["synthetic"].update(n_classes=4, per_class=8, size=64)
    cfg["backbones"]["tiny"] = {"timm": MODEL, "input_size": 64, "batch_size": 16}
    cfg["experiments"]["demo"] = {
        "datasets": ["demo"],
        "backbones": ["tiny"],
        "protocols": ["dmch_60_40"],
        "seeds": [0],
        "methods": ["itq"],
        "bits": [16],
    }
    cfg["device"] = "cpu"
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_the_demo_builds_on_a_timm_backbone_from_the_hf_cache(
    repo, tmp_path, snakemake, timm_cache
):
    work, hf_home = tmp_path / "work", tmp_path / "hf"
    work.mkdir()
    _config(repo, work)
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}

    out = snakemake(repo, work, "-n", "results/tables/demo.csv", env=env, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and not (work / "results").exists()
    lines = [ln for ln in text.splitlines() if f"timm model '{MODEL}'" in ln]
    assert len(lines) == 1, text[-3000:]
    assert str(hf_home / "hub" / f"models--timm--{MODEL}") in lines[0]
    assert f"timm.create_model('{MODEL}', pretrained=True)" in lines[0]

    weights = timm_cache(hf_home, MODEL)
    snakemake(repo, work, env=env)  # the default target: the table and the cost table
    table = pd.read_csv(work / "results/tables/demo.csv")
    assert set(table.backbone) == {"tiny"} and set(table.method) == {"itq"}
    cost = pd.read_csv(work / "results/tables/demo_cost.csv")
    assert "tiny" in set(cost.backbone)
    with h5py.File(work / "results/features/demo/tiny.h5") as f:
        assert f["features"].shape == (32, 96) and f.attrs["input_size"] == 64
        assert MODEL in f.attrs["source"]
        from rshash.digest import file_sha256

        assert f.attrs["weights_sha256"] == file_sha256(weights)

    # the trained model remembers its backbone's source: indexing images needs no config
    model = work / "results/models/demo/tiny/dmch_60_40/itq/16/split0.npz"
    command = [sys.executable, "-m", "rshash.cli", "index", "build", "--model", str(model)]
    command += ["--images", str(work / "results/datasets/demo"), "--out", str(tmp_path / "i.npz")]
    subprocess.run(command, check=True, env=os.environ | env, capture_output=True)
    assert (tmp_path / "i.npz").is_file()
