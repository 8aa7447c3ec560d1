"""Figures of an experiment: metrics JSON files and codes in, PNGs out.

Reads what the evaluation wrote (rshash.report.metrics_files; curves
averaged over split seeds by rshash.report.stats) or ranks a few queries
itself (retrieval grids), then draws with rshash.report.plots. numpy,
pandas and matplotlib; never imports torch.
"""

from __future__ import annotations

import numpy as np

from rshash import RshashError
from rshash.codes import read_codes
from rshash.data.manifest import read_manifest
from rshash.data.splits import read_split
from rshash.rankings import order
from rshash.report import plots, stats
from rshash.report.metrics_files import read_metrics


def mean_curves(paths, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Label -> (x, y) of one curve kind averaged over split seeds (see stats.mean_curves)."""
    return stats.mean_curves(read_metrics(paths, f"{kind} curves"), kind)


def plot_curves(paths, kind: str, out_png, title: str) -> None:
    curves = mean_curves(paths, kind)
    if kind == "pr_hamming":
        plots.plot_pr_hamming(curves, out_png, title)
    else:
        plots.plot_p_at_k(
            curves, out_png, title, ylabel="precision@k" if kind == "p_at_k" else "recall@k"
        )


def plot_val_curves(model_paths, out_png, title: str) -> None:
    """The validation curve of each trained model file (its header's ``val_curve``):
    the score at every check against the epoch, the kept (best) epoch marked."""
    from rshash.digest import read_npz_header

    curves, metrics = {}, set()
    for path in model_paths:
        header = read_npz_header(path, "model file")
        if not header.get("val_curve"):
            raise RshashError(
                f"{path}: no validation curve (a method fitted in closed form, or trained "
                "without a validation part)"
            )
        epochs, scores = np.asarray(header["val_curve"], dtype=np.float64).T
        label = f"{header['method']} {header['bits']} bits, seed {header['seed']}"
        if len(model_paths) > 1:
            label = f"{path}: {label}"
        curves[label] = (epochs, scores, int(header["best_epoch"]))
        metrics.add(header["val_metric"])
    plots.plot_val_curves(curves, " / ".join(sorted(metrics)), out_png, title)


def plot_ap_per_class(paths, manifest_path, out_png, title: str) -> None:
    """Heat map of AP per query class (mean over seeds), one row per method x bits x ranking."""
    records = read_metrics(paths, "AP per class")
    manifest = read_manifest(manifest_path)
    names = manifest.drop_duplicates("label").set_index("label")["class_name"].sort_index()
    matrix, labels = stats.ap_per_class(records, names.index)
    plots.plot_ap_heatmap(matrix, labels, list(names), out_png, title)


def retrieval_examples(
    codes_path,
    split_path,
    manifest_path,
    ranking: str = "hamming",
    ranking_params: dict | None = None,
    n_queries: int = 5,
    k: int = 20,
    seed: int = 0,
) -> list[dict]:
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
            results.append(
                {
                    "path": manifest.loc[rid, "path"],
                    "label": names[rid],
                    "predicted": predicted(row),
                    "distance": distance,
                }
            )
        out.append(
            {
                "path": manifest.loc[image_id, "path"],
                "label": names[image_id],
                "predicted": predicted(q_rows[i]),
                "results": results,
            }
        )
    return out


def _distance(codes, a: int, b: int, ranking: str) -> float:
    """Hamming distance for binary codes, Euclidean distance of ``value`` otherwise."""
    if codes.packed is not None and ranking != "euclidean":
        return float(np.unpackbits(codes.packed[a] ^ codes.packed[b]).sum())
    return float(np.linalg.norm(codes.value[a] - codes.value[b]))


def plot_retrieval(
    codes_path,
    split_path,
    manifest_path,
    out_png,
    title: str,
    ranking: str = "hamming",
    ranking_params: dict | None = None,
) -> None:
    examples = retrieval_examples(codes_path, split_path, manifest_path, ranking, ranking_params)
    plots.plot_retrieval_grid(examples, out_png, title)
