"""Experiment tables: metrics JSONs -> long CSV, markdown and meta JSON.

``build_table`` reads one ``metrics/{cell}/{ranking}.json`` per
(cell, split seed, ranking), averages every scalar metric over the split
seeds, and writes ``tables/{experiment}.csv`` (long format, the columns in
``COLUMNS``), ``tables/{experiment}.md`` (for people) and
``tables/{experiment}.meta.json`` (protocol fields, tie rule, inputs,
provenance). numpy + pandas only; never imports torch.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.provenance import collect

COLUMNS = ["experiment", "dataset", "backbone", "protocol", "method", "bits", "ranking",
           "metric", "mean", "std", "n_splits"]

CELL_FIELDS = ("dataset", "backbone", "protocol", "method", "bits", "seed")

TIE_RULE = ("Ties in distance are broken by database order; the database order is the "
            "seeded permutation stored in the split file (db_order), never class-sorted.")

METRIC_NOTES = (
    "mAP@all divides each query's average precision by all relevant items in the database; "
    "mAP@k (AP@k) divides by the relevant items retrieved in the top k (MiLaN code); "
    "a query with no relevant item counts as AP 0. P@k / R@k: precision / recall of the "
    "top k. " + TIE_RULE
)

# Metrics shown in the markdown tables, in this order, when present.
_HEADLINE_FIXED = ("map_all", "p_at_10", "anmrr", "rotation_top3")
_MAP_AT = re.compile(r"^map_at_(\d+)$")

_LABELS = {"map_all": "mAP@all", "anmrr": "ANMRR (lower is better)",
           "rotation_top3": "rotation top-3", "query_ms": "query ms",
           "p_hamming_r2": "P (Hamming radius 2)", "acc_query": "query accuracy"}


def metric_label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    for prefix, label in (("map_at_", "mAP@"), ("p_at_", "P@"), ("r_at_", "R@"),
                          ("acc_retrieved_at_", "retrieved accuracy@")):
        if name.startswith(prefix):
            return label + name[len(prefix):]
    return name


def _fail(path, why: str):
    raise RshashError(f"metrics file {path}: {why}")


def _as_int(path, field: str, value) -> int:
    if isinstance(value, bool):
        _fail(path, f"cell.{field} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    _fail(path, f"cell.{field} must be an integer, got {value!r}")


def read_metrics_file(path) -> dict:
    """Read and check one metrics JSON; returns cell fields, ranking and scalar metrics.

    Non-scalar entries of ``metrics`` (curves) are skipped; ``null`` reads as NaN.
    """
    p = Path(path)
    if not p.is_file():
        _fail(path, "not found")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"not valid JSON ({exc})")
    if not isinstance(doc, dict):
        _fail(path, "top level is not a JSON object")
    cell = doc.get("cell")
    if not isinstance(cell, dict):
        _fail(path, "no 'cell' object")
    out = {}
    for field in CELL_FIELDS:
        if field not in cell:
            _fail(path, f"cell has no '{field}'")
        value = cell[field]
        if field in ("bits", "seed"):
            out[field] = _as_int(path, field, value)
        else:
            if not isinstance(value, str) or not value:
                _fail(path, f"cell.{field} must be a non-empty string, got {value!r}")
            out[field] = value
    ranking = doc.get("ranking")
    if not isinstance(ranking, str) or not ranking:
        _fail(path, f"'ranking' must be a non-empty string, got {ranking!r}")
    out["ranking"] = ranking
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        _fail(path, "no 'metrics' object")
    scalars = {}
    for name, value in metrics.items():
        if isinstance(value, (list, dict)):
            continue  # a curve; curves stay in the metrics files
        if value is None:
            scalars[name] = math.nan
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[name] = float(value)
        else:
            _fail(path, f"metric '{name}' is not a number: {value!r}")
    if not scalars:
        _fail(path, "'metrics' holds no scalar metric")
    out["metrics"] = scalars
    return out


def read_all(experiment: str, metric_paths) -> list[dict]:
    """Read every metrics file; RshashError on two files for the same cell+seed+ranking."""
    if not metric_paths:
        raise RshashError(f"experiment {experiment!r}: no metrics files to tabulate")
    seen = {}
    records = []
    for path in metric_paths:
        rec = read_metrics_file(path)
        key = tuple(rec[f] for f in CELL_FIELDS) + (rec["ranking"],)
        if key in seen:
            raise RshashError(
                f"metrics files {seen[key]} and {path} are for the same cell "
                f"{'/'.join(map(str, key[:5]))}/split{key[5]} and ranking {key[6]}")
        seen[key] = str(path)
        records.append(rec)
    return records


def collect_rows(experiment: str, metric_paths) -> pd.DataFrame:
    """The long-format table (columns ``COLUMNS``) of a list of metrics files."""
    return _rows(experiment, read_all(experiment, metric_paths))


def _rows(experiment: str, records: list[dict]) -> pd.DataFrame:
    order = {k: {} for k in ("dataset", "backbone", "protocol", "method", "ranking", "metric")}
    groups: dict[tuple, dict[str, list[float]]] = {}
    for rec in records:
        for k in ("dataset", "backbone", "protocol", "method", "ranking"):
            order[k].setdefault(rec[k], len(order[k]))
        group = groups.setdefault(
            (rec["dataset"], rec["backbone"], rec["protocol"], rec["method"], rec["bits"],
             rec["ranking"]), {})
        for name, value in rec["metrics"].items():
            order["metric"].setdefault(name, len(order["metric"]))
            group.setdefault(name, []).append(value)

    rows = []
    for (dataset, backbone, protocol, method, bits, ranking), metrics in groups.items():
        for name, values in metrics.items():
            v = np.asarray(values, dtype=np.float64)
            rows.append({
                "experiment": experiment, "dataset": dataset, "backbone": backbone,
                "protocol": protocol, "method": method, "bits": bits, "ranking": ranking,
                "metric": name, "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
                "n_splits": len(v),
            })
    df = pd.DataFrame(rows, columns=COLUMNS)
    sort_key = [(k, df[k].map(order[k])) for k in ("dataset", "backbone", "protocol", "method")]
    sort_key += [("bits", df["bits"]), ("ranking", df["ranking"].map(order["ranking"])),
                 ("metric", df["metric"].map(order["metric"]))]
    keys = pd.DataFrame({name: col for name, col in sort_key})
    df = df.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
    df["bits"] = df["bits"].astype("int64")
    df["n_splits"] = df["n_splits"].astype("int64")
    return df


PAIRED_COLUMNS = ["experiment", "dataset", "backbone", "protocol", "method", "bits", "ranking",
                  "reference_method", "reference_bits", "reference_ranking", "metric",
                  "mean_diff", "ci_low", "ci_high", "n_pairs"]


def paired_comparison(experiment: str, records: list[dict], reference: dict | None = None,
                      comparisons: list[dict] | None = None) -> pd.DataFrame:
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
        key = (rec["dataset"], rec["backbone"], rec["protocol"], rec["method"], rec["bits"],
               rec["ranking"])
        by_key.setdefault(key, {})[rec["seed"]] = rec["metrics"]
        first_ranking.setdefault(rec["method"], rec["ranking"])
    if comparisons is None:
        ref = reference["method"]
        ref_ranking = reference.get("ranking") or first_ranking.get(ref)
        comparisons = [{"method": m, "ranking": r, "reference": ref,
                        "reference_ranking": ref_ranking}
                       for m, r in dict.fromkeys((k[3], k[5]) for k in by_key)
                       if (m, r) != (ref, ref_ranking)]
    rows = []
    for comp in comparisons:
        ref_method = comp["reference"]
        ref_ranking = comp.get("reference_ranking") or first_ranking.get(ref_method)
        refs = {k: v for k, v in by_key.items() if k[3] == ref_method and k[5] == ref_ranking}
        if not refs:
            raise RshashError(f"experiment {experiment!r}: reference {ref_method} ranked "
                              f"{ref_ranking} has no metrics files")
        chosen = [k for k in by_key if k[3] == comp["method"]
                  and comp.get("ranking") in (None, k[5])]
        if not chosen:
            raise RshashError(f"experiment {experiment!r}: comparison row {comp['method']} "
                              f"ranked {comp.get('ranking') or 'any'} has no metrics files")
        for key in chosen:
            rows += _paired_rows(experiment, key, by_key[key], refs, ref_method, ref_ranking)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _paired_rows(experiment, key, seeds, refs, ref_method, ref_ranking) -> list[dict]:
    """The paired-difference rows of one table row against its reference rows."""
    from scipy import stats

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
            mean = float(d.mean()) if len(d) else math.nan
            if len(d) > 1:
                half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
                low, high = mean - half, mean + half
            else:
                low = high = math.nan
            rows.append({"experiment": experiment, "dataset": dataset, "backbone": backbone,
                         "protocol": protocol, "method": method, "bits": bits,
                         "ranking": ranking, "reference_method": ref_method,
                         "reference_bits": rb, "reference_ranking": ref_ranking,
                         "metric": metric, "mean_diff": mean, "ci_low": low, "ci_high": high,
                         "n_pairs": len(d)})
    return rows


def render_paired_markdown(paired: pd.DataFrame, metrics: list[str]) -> str:
    """A markdown section: difference to the reference with its 95% interval."""
    if paired.empty:
        return ""
    refs = list(dict.fromkeys(zip(paired.reference_method, paired.reference_ranking)))
    lines = ["## Paired comparison with " + ", ".join(
        f"{m} (ranking `{r}`)" for m, r in refs), "",
             "Mean over split seeds of (row - reference) on the same split, with the 95% "
             "t-interval of the paired differences; an interval that excludes 0 is a "
             "difference beyond split-to-split noise (marked *).", ""]
    for metric in metrics:
        sub = paired[paired.metric == metric]
        if sub.empty:
            continue
        lines += [f"**{metric_label(metric)}** (`{metric}`)", "",
                  "| dataset · protocol | method | ranking | bits | reference | difference "
                  "| 95% interval | n |", "|---|---|---|---:|---|---:|---|---:|"]
        for r in sub.itertuples(index=False):
            if r.n_pairs == 0:
                lines.append(f"| {r.dataset} · {r.protocol} | {r.method} | {r.ranking} | "
                             f"{_bits_header(r.bits)} | {r.reference_method} | no reference row "
                             "| – | 0 |")
                continue
            ci = ("–" if math.isnan(r.ci_low) else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]")
            star = " *" if not math.isnan(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0) else ""
            lines.append(f"| {r.dataset} · {r.protocol} | {r.method} | {r.ranking} | "
                         f"{_bits_header(r.bits)} | {r.reference_method}, {r.reference_ranking}, "
                         f"{_bits_header(int(r.reference_bits))} | "
                         f"{r.mean_diff:+.3f}{star} | {ci} | "
                         f"{r.n_pairs} |")
        lines.append("")
    return "\n".join(lines)


def headline_metrics(metrics, extra=()) -> list[str]:
    """The metrics the markdown shows: mAP@all, mAP@k, P@10, ANMRR, rotation top-3.

    When none of them is present, every metric is shown.
    """
    present = list(dict.fromkeys(metrics))
    out = [m for m in ("map_all",) if m in present]
    out += sorted((m for m in present if _MAP_AT.match(m)),
                  key=lambda m: int(_MAP_AT.match(m).group(1)))
    out += [m for m in _HEADLINE_FIXED[1:] if m in present]
    out += [m for m in extra if m in present and m not in out]
    return out or present


def format_cell(mean: float, std: float, n: int, n_group: int) -> str:
    if math.isnan(mean):
        text = "n/a"
    elif math.isnan(std):
        text = f"{mean:.3f}"
    else:
        text = f"{mean:.3f} ± {std:.3f}"
    if n != n_group:
        text += f" (n={n})"
    return text


def _bits_header(bits: int) -> str:
    return "real-valued" if bits == 0 else f"{bits} bits"


def render_markdown(experiment: str, df: pd.DataFrame, extra=()) -> str:
    lines = [f"# {experiment}", ""]
    lines.append(
        "Each cell is the mean ± sample standard deviation (ddof=1) over the split seeds; "
        "a cell with one split shows the value alone. Backbones are frozen (features are "
        "cached once, only the hash networks are trained).")
    lines += ["", METRIC_NOTES, ""]
    group_cols = ["dataset", "backbone", "protocol", "ranking"]
    groups = df.groupby(group_cols, sort=False)
    for (dataset, backbone, protocol, ranking), g in groups:
        n_values = sorted(set(g["n_splits"]))
        n_group = max(n_values)
        if len(n_values) == 1:
            n_text = f"n = {n_group} split{'s' if n_group != 1 else ''} per cell"
        else:
            n_text = (f"n = {n_values[0]}–{n_group} splits per cell; cells with fewer than "
                      f"{n_group} are marked (n=...)")
        lines += [f"## {dataset} · {backbone} · {protocol} · ranking `{ranking}`", "",
                  f"{n_text}.", ""]
        bits_cols = sorted(set(g["bits"]))
        methods = list(dict.fromkeys(g["method"]))
        for metric in headline_metrics(g["metric"], extra):
            gm = g[g["metric"] == metric]
            cells = {(r.method, r.bits): format_cell(r.mean, r.std, r.n_splits, n_group)
                     for r in gm.itertuples(index=False)}
            lines.append(f"**{metric_label(metric)}** (`{metric}`)")
            lines.append("")
            lines.append("| method | " + " | ".join(_bits_header(b) for b in bits_cols) + " |")
            lines.append("|---|" + "---:|" * len(bits_cols))
            for method in methods:
                row = [cells.get((method, b), "–") for b in bits_cols]
                lines.append(f"| {method} | " + " | ".join(row) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def build_table(experiment: str, metric_paths: list[str], out_csv, out_md, out_meta,
                protocols: dict | None = None, config: dict | None = None,
                reference: dict | None = None, out_paired=None,
                comparisons: list[dict] | None = None) -> pd.DataFrame:
    """Tabulate one experiment's metrics files; write CSV, markdown and meta JSON atomically.

    ``protocols`` maps protocol name -> its config fields (the meta JSON keeps
    those the table uses); ``config`` is hashed into the provenance block.
    Returns the long-format table. Raises RshashError on a missing or
    malformed metrics file (naming it) and on two files for the same cell,
    split seed and ranking.
    """
    start = time.perf_counter()
    metric_paths = [str(p) for p in metric_paths]
    records = read_all(experiment, metric_paths)
    df = _rows(experiment, records)
    protocols = protocols or {}
    extra = [m for p in protocols.values() for m in p.get("report_metrics", [])]
    markdown = render_markdown(experiment, df, extra)
    paired = None
    if reference or comparisons:
        paired = paired_comparison(experiment, records, reference, comparisons)
        markdown += "\n" + render_paired_markdown(
            paired, headline_metrics(df["metric"], extra))

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
        "provenance": collect(config, seconds=round(time.perf_counter() - start, 3)),
    }

    if reference or comparisons:
        meta["reference"] = reference
        meta["comparisons"] = comparisons
        meta["paired"] = ("mean over split seeds of (row - reference) on the same split, "
                          "95% t-interval of the paired differences")
    if out_paired is not None:
        if paired is None:
            paired = pd.DataFrame(columns=PAIRED_COLUMNS)
        atomic_write(out_paired, lambda tmp: paired.to_csv(tmp, index=False))
    atomic_write(out_csv, lambda tmp: df.to_csv(tmp, index=False))
    atomic_write(out_md, lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8"))
    atomic_write(out_meta, lambda tmp: Path(tmp).write_text(
        json.dumps(meta, indent=2, default=_json_default) + "\n", encoding="utf-8"))
    return df
