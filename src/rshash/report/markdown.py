"""Markdown for people: the experiment table and the paired comparison.

Frames in (from :mod:`rshash.report.stats`), text out; nothing here reads or
writes files. The notes (``TIE_RULE``, ``METRIC_NOTES``) are also copied into
the meta JSON.
"""

from __future__ import annotations

import math
import re

import pandas as pd

TIE_RULE = (
    "Ties in distance are broken by database order; the database order is the "
    "seeded permutation stored in the split file (db_order), never class-sorted."
)

METRIC_NOTES = (
    "mAP@all divides each query's average precision by all relevant items in the database; "
    "mAP@k (AP@k) divides by the relevant items retrieved in the top k (MiLaN code); "
    "a query with no relevant item counts as AP 0. P@k / R@k: precision / recall of the "
    "top k. " + TIE_RULE
)

# Metrics shown in the markdown tables, in this order, when present.
_HEADLINE_FIXED = ("map_all", "p_at_10", "anmrr", "rotation_top3")
_MAP_AT = re.compile(r"^map_at_(\d+)$")

_LABELS = {
    "map_all": "mAP@all",
    "anmrr": "ANMRR (lower is better)",
    "rotation_top3": "rotation top-3",
    "query_ms": "query ms",
    "p_hamming_r2": "P (Hamming radius 2)",
    "acc_query": "query accuracy",
}


def metric_label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    for prefix, label in (
        ("map_at_", "mAP@"),
        ("p_at_", "P@"),
        ("r_at_", "R@"),
        ("acc_retrieved_at_", "retrieved accuracy@"),
    ):
        if name.startswith(prefix):
            return label + name[len(prefix) :]
    return name


def render_paired_markdown(paired: pd.DataFrame, metrics: list[str]) -> str:
    """A markdown section: difference to the reference with its 95% interval."""
    if paired.empty:
        return ""
    refs = list(dict.fromkeys(zip(paired.reference_method, paired.reference_ranking)))
    lines = [
        "## Paired comparison with " + ", ".join(f"{m} (ranking `{r}`)" for m, r in refs),
        "",
        "Mean over split seeds of (row - reference) on the same split, with the 95% "
        "t-interval of the paired differences; an interval that excludes 0 is a "
        "difference beyond split-to-split noise (marked *).",
        "",
    ]
    for metric in metrics:
        sub = paired[paired.metric == metric]
        if sub.empty:
            continue
        lines += [
            f"**{metric_label(metric)}** (`{metric}`)",
            "",
            "| dataset · protocol | method | ranking | bits | reference | difference "
            "| 95% interval | n |",
            "|---|---|---|---:|---|---:|---|---:|",
        ]
        for r in sub.itertuples(index=False):
            if r.n_pairs == 0:
                lines.append(
                    f"| {r.dataset} · {r.protocol} | {r.method} | {r.ranking} | "
                    f"{_bits_header(r.bits)} | {r.reference_method} | no reference row "
                    "| – | 0 |"
                )
                continue
            ci = "–" if math.isnan(r.ci_low) else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            star = " *" if not math.isnan(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0) else ""
            lines.append(
                f"| {r.dataset} · {r.protocol} | {r.method} | {r.ranking} | "
                f"{_bits_header(r.bits)} | {r.reference_method}, {r.reference_ranking}, "
                f"{_bits_header(int(r.reference_bits))} | "
                f"{r.mean_diff:+.3f}{star} | {ci} | "
                f"{r.n_pairs} |"
            )
        lines.append("")
    return "\n".join(lines)


def headline_metrics(metrics, extra=()) -> list[str]:
    """The metrics the markdown shows: mAP@all, mAP@k, P@10, ANMRR, rotation top-3.

    When none of them is present, every metric is shown.
    """
    present = list(dict.fromkeys(metrics))
    out = [m for m in ("map_all",) if m in present]
    out += sorted(
        (m for m in present if _MAP_AT.match(m)), key=lambda m: int(_MAP_AT.match(m).group(1))
    )
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


CAP_MARK = "†"


def render_markdown(experiment: str, df: pd.DataFrame, extra=(), caps=None) -> str:
    """The experiment's tables. ``caps`` (rshash.report.stops.cap_stops: the cells,
    dataset x backbone x protocol x method x bits, that stopped at their cap in some
    split) are marked † after the value, with a footnote under their section."""
    from rshash.report.stops import CAP_NOTE, cap_text

    caps = caps or {}
    lines = [f"# {experiment}", ""]
    lines.append(
        "Each cell is the mean ± sample standard deviation (ddof=1) over the split seeds; "
        "a cell with one split shows the value alone. Backbones are frozen (features are "
        "cached once, only the hash networks are trained)."
    )
    lines += ["", METRIC_NOTES, ""]
    group_cols = ["dataset", "backbone", "protocol", "ranking"]
    groups = df.groupby(group_cols, sort=False)
    for (dataset, backbone, protocol, ranking), g in groups:
        n_values = sorted(set(g["n_splits"]))
        n_group = max(n_values)
        if len(n_values) == 1:
            n_text = f"n = {n_group} split{'s' if n_group != 1 else ''} per cell"
        else:
            n_text = (
                f"n = {n_values[0]}–{n_group} splits per cell; cells with fewer than "
                f"{n_group} are marked (n=...)"
            )
        lines += [
            f"## {dataset} · {backbone} · {protocol} · ranking `{ranking}`",
            "",
            f"{n_text}.",
            "",
        ]
        bits_cols = sorted(set(g["bits"]))
        methods = list(dict.fromkeys(g["method"]))
        capped = {
            (m, b): caps[key]
            for m in methods
            for b in bits_cols
            if (key := (dataset, backbone, protocol, m, int(b))) in caps
        }
        for metric in headline_metrics(g["metric"], extra):
            gm = g[g["metric"] == metric]
            cells = {
                (r.method, r.bits): format_cell(r.mean, r.std, r.n_splits, n_group)
                + (f" {CAP_MARK}" if (r.method, int(r.bits)) in capped else "")
                for r in gm.itertuples(index=False)
            }
            lines.append(f"**{metric_label(metric)}** (`{metric}`)")
            lines.append("")
            lines.append("| method | " + " | ".join(_bits_header(b) for b in bits_cols) + " |")
            lines.append("|---|" + "---:|" * len(bits_cols))
            for method in methods:
                row = [cells.get((method, b), "–") for b in bits_cols]
                lines.append(f"| {method} | " + " | ".join(row) + " |")
            lines.append("")
        if capped:
            named = "; ".join(
                cap_text((dataset, backbone, protocol, m, b), c) for (m, b), c in capped.items()
            )
            lines += [
                f"{CAP_MARK} {CAP_NOTE}: {named}. Raise a cap with a variant's "
                "`params: {max_epochs: N}` in config.yaml.",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"
