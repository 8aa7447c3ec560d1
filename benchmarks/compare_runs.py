"""Two runs of one experiment side by side: did a change move the results?

Reads the metrics files of each run (``results/metrics/...``) and prints, per
method x bits x ranking cell, the mean and the spread (sample standard deviation)
over the split seeds both runs have, the difference, and whether it lies within
the cell's seed spread (``|after - before| <= max(sd before, sd after)``). With
``--cost``, the two runs' Snakemake benchmark files give the CPU seconds of
extraction, training and evaluation, per trained method and in all; the model headers of the second
run give the epochs its trained methods ran and their best validation scores.

Usage: python benchmarks/compare_runs.py BEFORE AFTER --experiment ucmd
       [--metric map_all] [--cost]

BEFORE and AFTER are the results/ folders of the two runs (e.g. one from a git
worktree of the old commit).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rshash.digest import read_npz_header


def metrics(results: Path, experiment: str, metric: str) -> pd.DataFrame:
    """One row per metrics file of the experiment's dataset: cell keys, seed, value."""
    rows = []
    for path in sorted((results / "metrics" / experiment).glob("*/*/*/*/split*/*.json")):
        backbone, protocol, method, bits, split = path.parts[-6:-1]
        value = json.loads(path.read_text())["metrics"].get(metric)
        rows.append(
            dict(
                backbone=backbone,
                protocol=protocol,
                method=method,
                bits=int(bits),
                ranking=path.stem,
                seed=int(split.removeprefix("split")),
                value=value,
            )
        )
    return pd.DataFrame(rows)


def epochs(results: Path, experiment: str) -> pd.DataFrame:
    """Epochs run, best epoch and best validation score of each trained cell."""
    rows = []
    for path in sorted((results / "models" / experiment).glob("*/*/*/*/split*.npz")):
        header = read_npz_header(path, "model file")
        if header.get("best_val") is None:
            continue
        protocol, method, bits = path.parts[-4:-1]
        rows.append(
            dict(
                protocol=protocol,
                method=method,
                bits=int(bits),
                epochs_run=header["epochs_run"],
                best_epoch=header["best_epoch"],
                best_val=header["best_val"],
            )
        )
    return pd.DataFrame(rows)


def cpu(results: Path, experiment: str) -> pd.DataFrame:
    """CPU seconds of each job of the experiment's dataset, from its Snakemake benchmark
    file (``cpu_time``, user + system): stage and method."""
    rows = []
    for stage in ("extract_features", "train_method", "evaluate_ranking"):
        for path in sorted((results / "benchmarks" / stage / experiment).rglob("*.tsv")):
            parts = path.relative_to(results / "benchmarks" / stage / experiment).parts
            method = parts[2] if stage != "extract_features" else ""
            seconds = pd.to_numeric(pd.read_csv(path, sep="\t")["cpu_time"], errors="coerce")
            rows.append(dict(stage=stage.split("_")[0], method=method, cpu=seconds.sum()))
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--experiment", required=True, help="the dataset folder under metrics/")
    ap.add_argument("--metric", default="map_all")
    ap.add_argument("--cost", action="store_true", help="also compare the CPU seconds")
    a = ap.parse_args()
    keys = ["backbone", "protocol", "method", "bits", "ranking"]
    b, f = (metrics(r, a.experiment, a.metric) for r in (a.before, a.after))
    both = b.merge(f, on=[*keys, "seed"], suffixes=("_b", "_a"))
    if both.empty:
        raise SystemExit("no cell with the same split seed in both runs")
    cells = both.groupby(keys, sort=False).agg(
        n=("seed", "size"),
        before=("value_b", "mean"),
        sd_before=("value_b", "std"),
        after=("value_a", "mean"),
        sd_after=("value_a", "std"),
    )
    cells["diff"] = cells.after - cells.before
    spread = np.maximum(cells.sd_before.fillna(0), cells.sd_after.fillna(0))
    cells["within"] = cells["diff"].abs() <= spread
    ep = epochs(a.after, a.experiment)
    if not ep.empty:
        per = ep.groupby(["protocol", "method", "bits"]).agg(
            epochs=("epochs_run", "mean"), best=("best_epoch", "mean"), val=("best_val", "mean")
        )
        cells = cells.join(per, on=["protocol", "method", "bits"])
    cells = cells.sort_index(level=["method", "bits", "ranking"])
    pd.set_option("display.width", 200, "display.max_rows", 500)
    print(f"{a.metric}, mean and sd over split seeds: {a.before} -> {a.after}\n")
    print(cells.round(4).to_string())
    moved = cells[~cells.within]
    print(f"\n{len(cells)} cells, {len(moved)} outside their seed spread")
    if a.cost:
        cb, ca = cpu(a.before, a.experiment), cpu(a.after, a.experiment)
        print("\nCPU seconds (all runs), per stage and per trained method:")
        for stage in ("extract", "train", "evaluate"):
            tb, ta = cb[cb.stage == stage].cpu.sum(), ca[ca.stage == stage].cpu.sum()
            print(f"  {stage:<9} {tb:9.0f} -> {ta:9.0f}  ({ta / tb:.2f}x)")
        total_b, total_a = cb.cpu.sum(), ca.cpu.sum()
        print(f"  {'all':<9} {total_b:9.0f} -> {total_a:9.0f}  ({total_a / total_b:.2f}x)")
        tr = lambda c: c[c.stage == "train"].groupby("method").cpu.sum()  # noqa: E731
        by = pd.DataFrame({"before": tr(cb), "after": tr(ca)})
        by["ratio"] = by.after / by.before
        print(by.round(2).sort_values("after", ascending=False).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
