"""Figures of an experiment: metrics JSON files and codes in, PNGs out.

Reads what the evaluation wrote (curves averaged over split seeds) or
ranks a few queries itself (retrieval grids), then draws with
rshash.report.plots. numpy, pandas and matplotlib; never imports torch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.codes import read_codes
from rshash.data.manifest import read_manifest
from rshash.data.splits import read_split
from rshash.report import plots
from rshash.rankings import order


def _load(paths) -> list[dict]:
    docs = []
    for path in paths:
        try:
            docs.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise RshashError(f"metrics file {path}: not readable JSON ({exc})") from None
    if not docs:
        raise RshashError("no metrics files given")
    return docs


def _label(doc: dict, rankings_per_method: dict) -> str:
    method = doc["cell"]["method"]
    bits = int(doc["cell"]["bits"])
    name = method if bits else f"{method} (real-valued)"
    if len(rankings_per_method[method]) > 1:
        name += f", {doc['ranking']}"
    return name


def mean_curves(paths, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Label -> (x, y) of one curve kind averaged over split seeds.

    ``pr_hamming``: (precision, recall) over radius 0..bits, one line per method
    (the curve is a property of the codes, so one ranking per method is used);
    ``p_at_k`` / ``r_at_k``: (k, value), one line per method and ranking.
    """
    docs = _load(paths)
    rankings = defaultdict(set)
    for d in docs:
        rankings[d["cell"]["method"]].add(d["ranking"])
    groups: dict[str, list] = defaultdict(list)
    for d in docs:
        curve = d.get("curves", {}).get(kind)
        if curve is None:
            continue
        if kind == "pr_hamming":
            if d["ranking"] != sorted(rankings[d["cell"]["method"]])[0]:
                continue
            label = d["cell"]["method"]
            groups[label].append((curve["precision"], curve["recall"]))
        else:
            key = "precision" if kind == "p_at_k" else "recall"
            groups[_label(d, rankings)].append((curve["k"], curve[key]))
    if not groups:
        raise RshashError(f"none of the {len(docs)} metrics files has a '{kind}' curve")
    out = {}
    for label, items in groups.items():
        first = np.asarray([a for a, _ in items], dtype=np.float64)
        second = np.asarray([b for _, b in items], dtype=np.float64)
        if kind == "pr_hamming":
            out[label] = (first.mean(0), second.mean(0))
        else:
            out[label] = (first[0], second.mean(0))
    return out


def plot_curves(paths, kind: str, out_png, title: str) -> None:
    curves = mean_curves(paths, kind)
    if kind == "pr_hamming":
        plots.plot_pr_hamming(curves, out_png, title)
    else:
        plots.plot_p_at_k(curves, out_png, title,
                          ylabel="precision@k" if kind == "p_at_k" else "recall@k")


def plot_ap_per_class(paths, manifest_path, out_png, title: str) -> None:
    """Heat map of AP per query class (mean over seeds), one row per method x bits x ranking."""
    docs = _load(paths)
    manifest = read_manifest(manifest_path)
    names = manifest.drop_duplicates("label").set_index("label")["class_name"].sort_index()
    rows: dict[str, list] = defaultdict(list)
    for d in docs:
        bits = int(d["cell"]["bits"])
        label = (f"{d['cell']['method']} · {bits} bits" if bits
                 else f"{d['cell']['method']} · real-valued") + f" · {d['ranking']}"
        ap = d["curves"]["ap_per_class"]
        rows[label].append([ap.get(str(c), np.nan) for c in names.index])
    labels = sorted(rows)
    matrix = np.array([np.nanmean(np.asarray(rows[k], dtype=np.float64), axis=0) for k in labels])
    plots.plot_ap_heatmap(matrix, labels, list(names), out_png, title)


def retrieval_examples(codes_path, split_path, manifest_path, ranking: str = "hamming",
                       ranking_params: dict | None = None, n_queries: int = 5, k: int = 20,
                       seed: int = 0) -> list[dict]:
    """A few queries (from distinct classes, drawn with ``seed``) and their top ``k``."""
    codes = read_codes(codes_path)
    split = read_split(split_path)
    manifest = read_manifest(manifest_path).set_index("image_id")
    database = split[split.role == "database"].sort_values("db_order", kind="stable")
    queries = split[split.role == "query"]
    pos = {(i, r): n for n, (i, r) in enumerate(zip(codes.image_id, codes.role))}
    db_rows = np.array([pos[(i, "database")] for i in database.image_id])
    q_ids = queries.image_id.to_numpy()
    q_labels = manifest.loc[q_ids, "label"].to_numpy()
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(q_labels))[:n_queries]
    chosen = [rng.choice(q_ids[q_labels == c]) for c in classes]
    q_rows = np.array([pos[(i, "query")] for i in chosen])
    columns = ("packed", "value", "class_prob")
    q = {c: None if getattr(codes, c) is None else getattr(codes, c)[q_rows] for c in columns}
    db = {c: None if getattr(codes, c) is None else getattr(codes, c)[db_rows] for c in columns}
    ranked = order(ranking, q, db, ranking_params)
    names = manifest["class_name"]
    label_name = manifest.drop_duplicates("label").set_index("label")["class_name"]
    pred = codes.predicted_label

    def predicted(row):
        return None if pred is None else str(label_name.get(int(pred[row]), pred[row]))

    out = []
    for i, image_id in enumerate(chosen):
        top = [j for j in ranked[i] if codes.image_id[db_rows[j]] != image_id][:k]
        results = []
        for j in top:
            row = db_rows[j]
            rid = codes.image_id[row]
            distance = _distance(codes, q_rows[i], row, ranking)
            results.append({"path": manifest.loc[rid, "path"], "label": names[rid],
                            "predicted": predicted(row), "distance": distance})
        out.append({"path": manifest.loc[image_id, "path"], "label": names[image_id],
                    "predicted": predicted(q_rows[i]), "results": results})
    return out


def _distance(codes, a: int, b: int, ranking: str) -> float:
    """Hamming distance for binary codes, Euclidean distance of ``value`` otherwise."""
    if codes.packed is not None and ranking != "euclidean":
        return float(np.unpackbits(codes.packed[a] ^ codes.packed[b]).sum())
    return float(np.linalg.norm(codes.value[a] - codes.value[b]))


def plot_retrieval(codes_path, split_path, manifest_path, out_png, title: str,
                   ranking: str = "hamming", ranking_params: dict | None = None) -> None:
    examples = retrieval_examples(codes_path, split_path, manifest_path, ranking,
                                  ranking_params)
    plots.plot_retrieval_grid(examples, out_png, title)
