"""Compute cost of an experiment: Snakemake benchmark TSVs -> ``tables/{experiment}_cost.csv``.

The extraction, training and evaluation rules each write a Snakemake
``benchmark:`` file (tab-separated; columns ``s, h:m:s, max_rss, max_vms,
max_uss, max_pss, io_in, io_out, mean_load, cpu_time``; one row per repeat;
memory in MB; ``NA`` where Snakemake could not sample the process, e.g. a job
shorter than its sampling interval). Their paths mirror the outputs
(DESIGN.md layout), which is where a file's identity comes from:

    benchmarks/extract_features/{dataset}/{backbone}[_{kind}].tsv
    benchmarks/train_method/{dataset}/{backbone}/{protocol}/{method}/{bits}/split{seed}.tsv
    benchmarks/evaluate_ranking/{same cell}/{ranking}.tsv

``build_cost`` aggregates wall seconds and peak resident memory per stage x
dataset x backbone x protocol x method x bits (x features kind or ranking)
over split seeds and repeats: mean and max, with the number of runs and the
number of them with a memory figure, so a missing sample is visible rather
than silently averaged away; and the mean CPU seconds. Training rows also give
the epochs the trained methods ran (mean and max over split seeds; their model
files' headers, rshash.methods.convergence) and how many of their split seeds stopped
at the cap (``max_epochs``) rather than by patience, and what share (empty for a method
fitted in closed form). pandas only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.report.stops import CELL, read_stop

BENCHMARK_COLUMNS = [
    "s",
    "h:m:s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
]

KEYS = ["stage", "dataset", "backbone", "protocol", "method", "bits", "detail"]
COLUMNS = [
    "experiment",
    *KEYS,
    "n_runs",
    "seconds_mean",
    "seconds_max",
    "n_rss",
    "max_rss_mb_mean",
    "max_rss_mb_max",
    "cpu_seconds_mean",
    "epochs_mean",
    "epochs_max",
    "refit_epochs_mean",
    "n_stopped_cap",
    "stopped_cap_share",
]

_CELL = CELL  # the cell in a results path (rshash.report.stops)
_PATTERNS = {
    "extract": re.compile(r"extract_features/(?P<dataset>[^/]+)/(?P<file>[^/]+)\.tsv$"),
    "train": re.compile(rf"train_method/{_CELL}\.tsv$"),
    "evaluate": re.compile(rf"evaluate_ranking/{_CELL}/(?P<detail>[^/]+)\.tsv$"),
}


def identify(path, backbones) -> dict:
    """The stage and cell a benchmark file belongs to, read from its path.

    ``backbones`` are the known backbone names: an extraction file is
    ``{backbone}.tsv`` (the pooled features) or ``{backbone}_{kind}.tsv`` and a
    backbone name may itself contain underscores.
    """
    text = Path(path).as_posix()
    for stage, pattern in _PATTERNS.items():  # noqa: B007 (stage is read after the loop)
        m = pattern.search(text)
        if m:
            break
    else:
        raise RshashError(
            f"benchmark file {path}: not under benchmarks/extract_features, "
            "train_method or evaluate_ranking in the results layout"
        )
    ident = {k: "" for k in KEYS} | {"stage": stage, "bits": pd.NA}
    ident.update({k: v for k, v in m.groupdict().items() if k not in ("file", "seed")})
    if stage == "extract":
        ident.update(_backbone_and_kind(path, m["file"], backbones))
    else:
        ident["bits"] = int(ident["bits"])
        ident["detail"] = ident["detail"] or ""
    return ident


def _backbone_and_kind(path, stem: str, backbones) -> dict:
    for name in sorted(backbones, key=len, reverse=True):
        if stem == name:
            return {"backbone": name, "detail": "features"}
        if stem.startswith(name + "_"):
            return {"backbone": name, "detail": stem[len(name) + 1 :]}
    raise RshashError(f"benchmark file {path}: {stem!r} names no known backbone")


def read_benchmark(path) -> pd.DataFrame:
    """One Snakemake benchmark TSV: its ``s`` and ``max_rss`` columns as floats (NA -> NaN)."""
    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-"], keep_default_na=False)
    except FileNotFoundError:
        raise RshashError(f"benchmark file {path}: not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RshashError(f"benchmark file {path}: not a benchmark TSV ({err})") from None
    missing = [c for c in ("s", "max_rss") if c not in df.columns]
    if missing:
        raise RshashError(
            f"benchmark file {path}: no column {', '.join(missing)} "
            f"(expected Snakemake's {', '.join(BENCHMARK_COLUMNS)})"
        )
    if df.empty:
        raise RshashError(f"benchmark file {path}: no benchmark rows")
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in ("s", "max_rss")})
    # CPU seconds (user + system): NA where Snakemake could not sample the process
    cpu = df["cpu_time"] if "cpu_time" in df.columns else pd.Series(np.nan, index=df.index)
    out["cpu_time"] = pd.to_numeric(cpu, errors="coerce")
    bad = out["s"].isna() | (df["max_rss"].notna() & out["max_rss"].isna())
    if bad.any():
        raise RshashError(
            f"benchmark file {path}: row {int(np.argmax(bad)) + 1} has a non-numeric s or max_rss"
        )
    return out


def model_epochs(path) -> dict:
    """The train cell of a model file (``models/{cell}.npz``), the epochs it ran before it
    stopped and those of its refit on train + val (NaN for a method fitted in closed form,
    or a fit without a refit), and whether it stopped at its cap (1.0 or 0.0; NaN when it
    records no stop: closed form)."""
    rec = read_stop(path)
    header = rec["header"]
    epochs, refit = header.get("epochs_run"), header.get("refit_epochs")
    ident = {k: "" for k in KEYS} | {"stage": "train"}
    ident.update({k: rec[k] for k in ("dataset", "backbone", "protocol", "method", "bits")})
    return ident | {
        "epochs": np.nan if epochs is None else float(epochs),
        "refit_epochs": np.nan if refit is None else float(refit),
        "cap": np.nan if rec["stopped"] is None else float(rec["stopped"] == "cap"),
    }


def collect_cost(experiment: str, paths, backbones, models=()) -> pd.DataFrame:
    """The cost table (columns ``COLUMNS``) of the given benchmark files, with the epochs
    the given model files ran (the trained methods' training rows)."""
    if not paths:
        raise RshashError(f"experiment {experiment!r}: no benchmark files to summarize")
    frames = [read_benchmark(p).assign(**identify(p, backbones)) for p in paths]
    runs = pd.concat(frames, ignore_index=True)
    runs["bits"] = runs["bits"].astype("Int64")  # empty for extraction rows
    grouped = runs.groupby(KEYS, sort=True, dropna=False)
    table = pd.DataFrame(
        {
            "n_runs": grouped["s"].size(),
            "seconds_mean": grouped["s"].mean(),
            "seconds_max": grouped["s"].max(),
            "n_rss": grouped["max_rss"].count(),
            "max_rss_mb_mean": grouped["max_rss"].mean(),
            "max_rss_mb_max": grouped["max_rss"].max(),
            "cpu_seconds_mean": grouped["cpu_time"].mean(),
        }
    ).reset_index()
    epochs = pd.DataFrame(
        [model_epochs(p) for p in models], columns=[*KEYS, "epochs", "refit_epochs", "cap"]
    )
    epochs["bits"] = epochs["bits"].astype("Int64")
    by_cell = epochs.groupby(KEYS, sort=True, dropna=False)
    table = table.merge(
        pd.DataFrame(
            {
                "epochs_mean": by_cell["epochs"].mean(),
                "epochs_max": by_cell["epochs"].max(),
                "refit_epochs_mean": by_cell["refit_epochs"].mean(),
                # NaN (empty) where no split records its stop: a closed-form method
                "n_stopped_cap": by_cell["cap"].sum(min_count=1).astype("Int64"),
                "stopped_cap_share": by_cell["cap"].mean(),
            }
        ).reset_index(),
        on=KEYS,
        how="left",
    )
    order = {"extract": 0, "train": 1, "evaluate": 2}
    table = table.sort_values(
        KEYS,
        key=lambda c: c.map(order) if c.name == "stage" else c,
        kind="stable",
        ignore_index=True,
    )
    table.insert(0, "experiment", experiment)
    return table[COLUMNS]


def build_cost(experiment: str, paths, out_csv, backbones) -> pd.DataFrame:
    """Summarize the benchmark files (``.tsv``) and the epochs of the model files
    (``.npz``) among ``paths`` into ``out_csv`` (written atomically); return the table."""
    paths = [str(p) for p in paths]
    models = [p for p in paths if p.endswith(".npz")]
    benchmarks = [p for p in paths if not p.endswith(".npz")]
    table = collect_cost(experiment, benchmarks, backbones, models)
    atomic_write(out_csv, lambda tmp: table.to_csv(tmp, index=False, float_format="%.4f"))
    return table
