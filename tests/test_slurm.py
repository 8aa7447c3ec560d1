"""Cluster execution: the real workflow/profiles/slurm and snakemake-executor-plugin-slurm
against fake SLURM commands (tests/fake_slurm.py) that run each submitted job locally.

A tiny experiment (one split seed, itq and milan, 16 bits) runs once with the local
executor and once through the profile; every job must be submitted with the resources
its rule declares, the codes and metrics must equal the local run's, and both runs
write the cost table.
"""

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

TOOLS = ("sbatch", "srun", "sacct", "squeue", "scancel", "sinfo", "scontrol")
# The cost table brings every extraction, training and evaluation job along
# (the plots and the results table only add light jobs; test_pipeline runs those).
TARGETS = ["results/tables/tiny_cost.csv"]
CELLS = [f"demo/efficientnet_lite0/dmch_60_40/{m}/16/split0" for m in ("itq", "milan")]


def fake_slurm_bin(where: Path) -> Path:
    """A bin folder with one executable per SLURM command, each running fake_slurm.py."""
    fake = Path(__file__).with_name("fake_slurm.py")
    where.mkdir()
    for tool in TOOLS:
        script = where / tool
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" {tool} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return where


def tiny_config(repo: Path, small_experiment) -> dict:
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["datasets"]["demo"]["synthetic"].update(per_class=12, size=64)
    cfg["variants"]["milan"].setdefault("params", {})["max_epochs"] = 10
    cfg["experiments"]["tiny"] = small_experiment("demo", ["itq", "milan"])
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, snakemake, small_experiment):
    repo = Path(__file__).resolve().parents[1]
    local, cluster = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm")
    for work in (local, cluster):
        (work / "config.yaml").write_text(yaml.safe_dump(tiny_config(repo, small_experiment)))
    snakemake(repo, local, *TARGETS)

    calls = on_fake_slurm(snakemake, repo, cluster, tmp_path_factory.mktemp("fake_slurm"), TARGETS)
    return local, cluster, calls


def on_fake_slurm(snakemake, repo, work, state, targets, env=None) -> list[dict]:
    """Run ``targets`` in ``work`` through the real SLURM profile against the fake SLURM
    commands (their state in ``state``); every call they received."""
    env = {
        "PATH": f"{fake_slurm_bin(state / 'bin')}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_DIR": str(state),
        **(env or {}),
    }
    # no --cores: a cluster job gets the threads its rule declares, not this machine's
    snakemake(
        repo,
        work,
        "--profile",
        str(repo / "workflow/profiles/slurm"),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--latency-wait",
        "5",
        *targets,
        cores=None,
        env=env,
    )
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def submissions(calls) -> dict[str, list[dict]]:
    """sbatch options per rule (the plugin's --comment is rule_{name}[_wildcards_...])."""
    by_rule = {}
    for c in calls:
        if c["tool"] == "sbatch":
            rule = c["options"]["comment"].removeprefix("rule_").split("_wildcards_")[0]
            by_rule.setdefault(rule, []).append(c["options"])
    return by_rule


def test_every_job_went_through_sbatch_and_srun(runs):
    local, cluster, calls = runs
    subs = submissions(calls)
    assert {r: len(v) for r, v in subs.items()} == {
        "generate_demo": 1,
        "build_manifest": 1,
        "make_split": 1,
        "extract_features": 1,
        "train_method": 2,
        "evaluate_ranking": 2,
        "build_cost": 1,
    }
    sbatch_ids = {c["job_id"] for c in calls if c["tool"] == "sbatch"}
    srun_ids = {c["job_id"] for c in calls if c["tool"] == "srun"}
    assert srun_ids == sbatch_ids  # each job ran its rule as one job step
    assert any(c["tool"] == "sacct" and "--name" in c["argv"] for c in calls)
    names = {o["job_name"] for v in subs.values() for o in v}
    assert len(names) == 1  # one run id, which sacct is asked about
    assert all(o["workdir"] == str(cluster) for v in subs.values() for o in v)


def test_jobs_were_submitted_with_their_declared_resources(runs):
    _, _, calls = runs
    subs = submissions(calls)
    (extract,) = subs["extract_features"]
    # config device: auto -> one GPU requested; threads 8 -> 8 CPUs for the GPU job
    assert (extract["gpus"], extract["cpus_per_task"]) == ("1", 8)
    assert (extract["mem"], extract["time"]) == (16000, "120")
    for opts in subs["train_method"]:
        assert (opts["cpus_per_task"], opts["mem"], opts["time"], opts["gpus"]) == (
            1,
            4000,
            "60",
            None,
        )
        assert opts["ntasks"] == 1
    for opts in subs["evaluate_ranking"]:
        assert (opts["mem"], opts["time"]) == (4000, "30")
    # the profile's defaults reach the light rules; sinfo's default partition is used
    for opts in subs["build_cost"] + subs["make_split"]:
        assert (opts["mem"], opts["time"], opts["cpus_per_task"]) == (4000, "30", 1)
    assert {o["partition"] for v in subs.values() for o in v} == {"cpu"}
    # the job step asks for the GPU too; its threads are capped by the node's cores
    # (here this machine's: the job runs locally)
    extract_id = next(
        c["job_id"]
        for c in calls
        if c["tool"] == "sbatch" and c["options"]["comment"].startswith("rule_extract_features")
    )
    (step,) = [c for c in calls if c["tool"] == "srun" and c["job_id"] == extract_id]
    assert (step["options"]["gpus"], step["options"]["cpus_per_task"]) == (
        1,
        min(8, os.cpu_count()),
    )


def test_cluster_results_equal_the_local_run(runs):
    local, cluster, _ = runs
    for cell in CELLS:
        a = pd.read_parquet(local / f"results/codes/{cell}.parquet")
        b = pd.read_parquet(cluster / f"results/codes/{cell}.parquet")
        pd.testing.assert_frame_equal(a, b)
        ma = json.loads((local / f"results/metrics/{cell}/hamming.json").read_text())
        mb = json.loads((cluster / f"results/metrics/{cell}/hamming.json").read_text())
        timing = {"query_ms"}  # wall-clock, differs between any two runs
        assert {k: v for k, v in ma["metrics"].items() if k not in timing} == {
            k: v for k, v in mb["metrics"].items() if k not in timing
        }


def test_cost_table_lists_every_benchmarked_job(runs):
    for work in runs[:2]:
        cost = pd.read_csv(work / "results/tables/tiny_cost.csv", keep_default_na=False)
        keys = sorted(zip(cost.stage, cost.method, cost.bits.astype(str), cost.detail))
        assert keys == sorted(
            [
                ("extract", "", "", "features"),
                ("train", "itq", "16", ""),
                ("train", "milan", "16", ""),
                ("evaluate", "itq", "16", "hamming"),
                ("evaluate", "milan", "16", "hamming"),
            ]
        )
        assert (cost.n_runs == 1).all()
        seconds = cost.seconds_mean.astype(float)
        assert (seconds > 0).all() and np.allclose(seconds, cost.seconds_max.astype(float))
        extract = cost[cost.stage == "extract"].iloc[0]
        assert extract.n_rss == 1 and float(extract.max_rss_mb_max) > 100  # torch + a CNN
