"""Statistics over split seeds: the long table, the paired comparison, mean curves.

Records in (from :mod:`rshash.report.metrics_files`), pandas frames and numpy
arrays out; nothing here reads or writes files. numpy + pandas (+ scipy's t
quantile for the paired interval).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd

from rshash import RshashError
from rshash.report.metrics_files import curve

# A table row: one (dataset, backbone, protocol, method, bits, ranking); seeds are averaged.
ROW_KEYS = ["dataset", "backbone", "protocol", "method", "bits", "ranking"]

COLUMNS = ["experiment", *ROW_KEYS, "metric", "mean", "std", "n_splits"]

PAIRED_COLUMNS = [
    "experiment", *ROW_KEYS, "reference_method", "reference_bits", "reference_ranking",
    "metric", "mean_diff", "ci_low", "ci_high", "n_pairs",
]  # fmt: skip


# numpy's reductions, not pandas' own groupby mean/std: those skip NaN (a metric that
# is null on one seed must give NaN) and sum in another order (Kahan, Welford), which
# moves the last digit of about a quarter of the table's values.
def _mean(values: pd.Series) -> float:
    return float(np.mean(values.to_numpy(dtype=np.float64)))


def _std(values: pd.Series) -> float:
    v = values.to_numpy(dtype=np.float64)
    return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan


def summarize(experiment: str, records: list[dict]) -> pd.DataFrame:
    """The long-format table (columns ``COLUMNS``): mean, std (ddof=1) and n over seeds.

    Datasets, backbones, protocols, methods, rankings and metrics keep the order
    in which they first appear in ``records``; bits are sorted numerically.
    """
    long = pd.DataFrame(
        [
            {**{k: rec[k] for k in ROW_KEYS}, "metric": name, "value": value}
            for rec in records
            for name, value in rec["metrics"].items()
        ],
        columns=[*ROW_KEYS, "metric", "value"],
    )
    df = (
        long.groupby([*ROW_KEYS, "metric"], sort=False)["value"]
        .agg([("mean", _mean), ("std", _std), ("n_splits", "size")])
        .reset_index()
    )
    df.insert(0, "experiment", experiment)
    keys = pd.DataFrame(
        {
            k: df[k] if k == "bits" else df[k].map(_first_seen(long[k]))
            for k in [*ROW_KEYS, "metric"]
        }
    )
    df = df.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
    df["bits"] = df["bits"].astype("int64")
    df["n_splits"] = df["n_splits"].astype("int64")
    return df[COLUMNS]


def _first_seen(column: pd.Series) -> dict:
    return {v: i for i, v in enumerate(dict.fromkeys(column))}


def paired_comparison(
    experiment: str,
    records: list[dict],
    reference: dict | None = None,
    comparisons: list[dict] | None = None,
) -> pd.DataFrame:
    """Rows against reference rows: the per-seed paired difference.

    ``reference``: ``{"method": ..., "ranking": ...}``, compared with every other
    row; ``comparisons``: explicit pairs ``{"method", "ranking"?, "reference",
    "reference_ranking"?}`` (an ablation against its full method, a re-ranking
    against plain Hamming ranking). A missing ranking means every ranking of
    the row's method; a missing reference ranking, the reference method's
    first. Rows are paired with the reference at the same dataset, backbone,
    protocol and bits (a real-valued reference, bits 0, pairs with every bit
    length, and a real-valued row with every bit length of the reference) on
    the same split seed; a row with no reference to pair with is kept with
    n_pairs 0. ``mean_diff`` = mean(row - reference); the 95% interval is
    mean_diff -/+ t(0.975, n-1) * sd / sqrt(n) (empty with one pair).
    """
    by_key = {}
    first_ranking = {}
    for rec in records:
        key = tuple(rec[k] for k in ROW_KEYS)
        by_key.setdefault(key, {})[rec["seed"]] = rec["metrics"]
        first_ranking.setdefault(rec["method"], rec["ranking"])
    if comparisons is None:
        ref = reference["method"]
        ref_ranking = reference.get("ranking") or first_ranking.get(ref)
        comparisons = [
            {"method": m, "ranking": r, "reference": ref, "reference_ranking": ref_ranking}
            for m, r in dict.fromkeys((k[3], k[5]) for k in by_key)
            if (m, r) != (ref, ref_ranking)
        ]
    rows = []
    for comp in comparisons:
        ref_method = comp["reference"]
        ref_ranking = comp.get("reference_ranking") or first_ranking.get(ref_method)
        refs = {k: v for k, v in by_key.items() if k[3] == ref_method and k[5] == ref_ranking}
        if not refs:
            raise RshashError(
                f"experiment {experiment!r}: reference {ref_method} ranked "
                f"{ref_ranking} has no metrics files"
            )
        chosen = [
            k for k in by_key if k[3] == comp["method"] and comp.get("ranking") in (None, k[5])
        ]
        if not chosen:
            raise RshashError(
                f"experiment {experiment!r}: comparison row {comp['method']} "
                f"ranked {comp.get('ranking') or 'any'} has no metrics files"
            )
        for key in chosen:
            rows += _paired_rows(experiment, key, by_key[key], refs, ref_method, ref_ranking)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def t_interval(d: np.ndarray) -> tuple[float, float]:
    """The 95% t-interval of the mean of ``d`` (NaN, NaN with fewer than two values).

    Written out rather than ``scipy.stats.t.interval(0.95, n - 1, loc, sem)``:
    that is the same formula but rounds differently (it multiplies the quantile
    by sd / sqrt(n) and takes the lower quantile separately), which moves the
    last digit of about a third of the intervals; only the quantile comes from scipy.
    """
    from scipy import stats

    if len(d) < 2:
        return math.nan, math.nan
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean - half, mean + half


def _paired_rows(experiment, key, seeds, refs, ref_method, ref_ranking) -> list[dict]:
    """The paired-difference rows of one table row against its reference rows."""
    dataset, backbone, protocol, method, bits, ranking = key
    group = (dataset, backbone, protocol, ref_method)
    ref_bits = sorted(k[4] for k in refs if k[:4] == group)
    if bits == 0:  # a real-valued row against the reference at each of its bit lengths
        candidates = ref_bits
    else:  # the reference at the same bits, else a real-valued reference
        candidates = [b for b in (bits, 0) if b in ref_bits][:1]
    rows = []
    for rb in candidates or [None]:  # no reference here: one row, n_pairs 0
        ref = refs[group + (rb, ref_ranking)] if rb is not None else {}
        common = sorted(set(seeds) & set(ref))
        if common:
            metrics = [m for m in seeds[common[0]] if all(m in ref[s] for s in common)]
        else:
            metrics = ["map_all"]
        for metric in metrics:
            d = np.array([seeds[s][metric] - ref[s][metric] for s in common], dtype=np.float64)
            low, high = t_interval(d)
            rows.append(
                {
                    "experiment": experiment,
                    "dataset": dataset,
                    "backbone": backbone,
                    "protocol": protocol,
                    "method": method,
                    "bits": bits,
                    "ranking": ranking,
                    "reference_method": ref_method,
                    "reference_bits": rb,
                    "reference_ranking": ref_ranking,
                    "metric": metric,
                    "mean_diff": float(d.mean()) if len(d) else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "n_pairs": len(d),
                }
            )
    return rows


def _curve_label(rec: dict, rankings_per_method: dict) -> str:
    method = rec["method"]
    name = method if rec["bits"] else f"{method} (real-valued)"
    if len(rankings_per_method[method]) > 1:
        name += f", {rec['ranking']}"
    return name


def mean_curves(records: list[dict], kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Label -> (x, y) of one curve kind averaged over split seeds.

    ``pr_hamming``: (precision, recall) over radius 0..bits, one line per method
    (the curve is a property of the codes, so one ranking per method is used);
    ``p_at_k`` / ``r_at_k``: (k, value), one line per method and ranking.
    """
    rankings = defaultdict(set)
    for rec in records:
        rankings[rec["method"]].add(rec["ranking"])
    groups: dict[str, list] = defaultdict(list)
    for rec in records:
        if kind == "pr_hamming":
            if rec["ranking"] != sorted(rankings[rec["method"]])[0]:
                continue
            pair = curve(rec, kind, "precision", "recall")
            label = rec["method"]
        else:
            pair = curve(rec, kind, "k", "precision" if kind == "p_at_k" else "recall")
            label = _curve_label(rec, rankings)
        if pair is not None:
            groups[label].append(pair)
    if not groups:
        raise RshashError(f"none of the {len(records)} metrics files has a '{kind}' curve")
    out = {}
    for label, items in groups.items():
        first = np.asarray([a for a, _ in items], dtype=np.float64)
        second = np.asarray([b for _, b in items], dtype=np.float64)
        if kind == "pr_hamming":
            out[label] = (first.mean(0), second.mean(0))
        else:
            out[label] = (first[0], second.mean(0))
    return out


def ap_per_class(records: list[dict], labels) -> tuple[np.ndarray, list[str]]:
    """Per-class AP (mean over seeds) of each method x bits x ranking, rows sorted by label.

    ``labels``: the class labels in column order. Returns the matrix and the row labels.
    """
    rows: dict[str, list] = defaultdict(list)
    for rec in records:
        bits = rec["bits"]
        label = (
            f"{rec['method']} · {bits} bits" if bits else f"{rec['method']} · real-valued"
        ) + f" · {rec['ranking']}"
        ap = curve(rec, "ap_per_class", required=True)
        rows[label].append([ap.get(str(c), np.nan) for c in labels])
    names = sorted(rows)
    return (
        np.array([np.nanmean(np.asarray(rows[k], dtype=np.float64), axis=0) for k in names]),
        names,
    )
