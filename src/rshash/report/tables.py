"""Experiment tables: metrics JSONs -> long CSV, markdown and meta JSON.

``build_table`` reads one ``metrics/{cell}/{ranking}.json`` per
(cell, split seed, ranking) (:mod:`~rshash.report.metrics_files`), averages
every scalar metric over the split seeds (:mod:`~rshash.report.stats`), and
writes ``tables/{experiment}.csv`` (long format, the columns in ``COLUMNS``),
``tables/{experiment}.md`` (for people, :mod:`~rshash.report.markdown`) and
``tables/{experiment}.meta.json`` (protocol fields, tie rule, inputs,
provenance). Given the cells' model files, the markdown marks a cell that stopped at
its cap (``max_epochs``) in some split, and the meta JSON lists those cells
(:mod:`~rshash.report.stops`). numpy + pandas only; never imports torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rshash.atomic import atomic_write
from rshash.provenance import collect
from rshash.report.markdown import (
    METRIC_NOTES,
    TIE_RULE,
    headline_metrics,
    render_markdown,
    render_paired_markdown,
)
from rshash.report.metrics_files import read_metrics
from rshash.report.stats import COLUMNS, PAIRED_COLUMNS, paired_comparison, summarize
from rshash.report.stops import CAP_NOTE, CELL_KEYS, cap_stops

__all__ = ["COLUMNS", "PAIRED_COLUMNS", "build_table", "collect_rows"]


def collect_rows(experiment: str, metric_paths) -> pd.DataFrame:
    """The long-format table (columns ``COLUMNS``) of a list of metrics files."""
    return summarize(experiment, read_metrics(metric_paths, f"experiment {experiment!r}"))


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def build_table(
    experiment: str,
    metric_paths: list[str],
    out_csv,
    out_md,
    out_meta,
    protocols: dict | None = None,
    reference: dict | None = None,
    out_paired=None,
    comparisons: list[dict] | None = None,
    model_paths=(),
) -> pd.DataFrame:
    """Tabulate one experiment's metrics files; write CSV, markdown and meta JSON atomically.

    ``protocols`` maps protocol name -> its config fields (the meta JSON keeps
    those the table uses); the provenance block hashes the protocols, the reference and
    the comparisons. ``model_paths`` are the cells' model files (``models/{cell}.npz``):
    how their training stopped marks the cells stopped at their cap.
    Returns the long-format table. Raises RshashError on a missing or
    malformed metrics file (naming it) and on two files for the same cell,
    split seed and ranking.
    """
    start = time.perf_counter()
    metric_paths = [str(p) for p in metric_paths]
    records = read_metrics(metric_paths, f"experiment {experiment!r}")
    df = summarize(experiment, records)
    protocols = protocols or {}
    extra = [m for p in protocols.values() for m in p.get("report_metrics", [])]
    model_paths = [str(p) for p in model_paths]
    caps = cap_stops(model_paths)
    markdown = render_markdown(experiment, df, extra, caps)
    paired = None
    if reference or comparisons:
        paired = paired_comparison(experiment, records, reference, comparisons)
        markdown += "\n" + render_paired_markdown(paired, headline_metrics(df["metric"], extra))

    used = list(dict.fromkeys(df["protocol"]))
    missing = [p for p in used if p not in protocols]
    seeds = {}
    for rec in records:
        seeds.setdefault(rec["protocol"], set()).add(rec["seed"])
    meta = {
        "experiment": experiment,
        "columns": COLUMNS,
        "protocols": {p: protocols[p] for p in used if p in protocols},
        "protocols_without_fields": missing,
        "split_seeds": {p: sorted(seeds[p]) for p in used},
        "std": "sample standard deviation over split seeds (ddof=1); empty when n_splits == 1",
        "tie_rule": TIE_RULE,
        "metric_notes": METRIC_NOTES,
        "datasets": list(dict.fromkeys(df["dataset"])),
        "backbones": list(dict.fromkeys(df["backbone"])),
        "methods": list(dict.fromkeys(df["method"])),
        "bits": sorted(int(b) for b in set(df["bits"])),
        "rankings": list(dict.fromkeys(df["ranking"])),
        "metrics": list(dict.fromkeys(df["metric"])),
        "inputs": metric_paths,
        "models": model_paths,
        "stopped_at_cap": {
            "note": CAP_NOTE,
            "cells": [dict(zip(CELL_KEYS, key)) | cap for key, cap in caps.items()],
        },
        "provenance": collect(
            {
                "protocols": protocols,
                "reference": reference or {},
                "comparisons": comparisons or [],
            },
            seconds=round(time.perf_counter() - start, 3),
        ),
    }

    if reference or comparisons:
        meta["reference"] = reference
        meta["comparisons"] = comparisons
        meta["paired"] = (
            "mean over split seeds of (row - reference) on the same split, "
            "95% t-interval of the paired differences"
        )
    if out_paired is not None:
        if paired is None:
            paired = pd.DataFrame(columns=PAIRED_COLUMNS)
        atomic_write(out_paired, lambda tmp: paired.to_csv(tmp, index=False))
    atomic_write(out_csv, lambda tmp: df.to_csv(tmp, index=False))
    atomic_write(out_md, lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8"))
    atomic_write(
        out_meta,
        lambda tmp: Path(tmp).write_text(
            json.dumps(meta, indent=2, default=_json_default) + "\n", encoding="utf-8"
        ),
    )
    return df
