"""The figure verbs: t-SNE of codes and the report's plots, each with its arguments
above it."""

from __future__ import annotations

from rshash.cli.registry import _json, arg, required, verb

FIGURE = (arg("--title", default=""), arg("--out", required=True))  # every figure's


@verb("tsne", "t-SNE plot of a codes file's query codes", arg("--codes", required=True), *FIGURE)
def cmd_tsne(a):
    from rshash.report.plots import plot_tsne

    plot_tsne(a.codes, a.out, a.title)


@verb(
    "plot-curves",
    "precision-recall over Hamming radius or P@k / R@k curves, one line per method",
    arg("--kind", required=True, choices=["pr_hamming", "p_at_k", "r_at_k"]),
    *FIGURE,
    arg("metrics", nargs="+"),
)
def cmd_plot_curves(a):
    from rshash.report.figures import plot_curves

    plot_curves(a.metrics, a.kind, a.out, a.title)


@verb(
    "plot-val",
    "a trained model's validation curve (the checks it stopped on)",
    *FIGURE,
    arg("models", nargs="+", help="model files (results/models/...npz)"),
)
def cmd_plot_val(a):
    from rshash.report.figures import plot_val_curves

    plot_val_curves(a.models, a.out, a.title)


@verb(
    "plot-ap",
    "heat map of AP per class",
    arg("--manifest", required=True),
    *FIGURE,
    arg("metrics", nargs="+"),
)
def cmd_plot_ap(a):
    from rshash.report.figures import plot_ap_per_class

    plot_ap_per_class(a.metrics, a.manifest, a.out, a.title)


@verb(
    "plot-retrieval",
    "a few queries and their top 20",
    *required("--codes", "--split", "--manifest"),
    arg("--ranking", default="hamming"),
    arg("--ranking-params", default="{}"),
    *FIGURE,
)
def cmd_plot_retrieval(a):
    from rshash.report.figures import plot_retrieval

    plot_retrieval(a.codes, a.split, a.manifest, a.out, a.title, a.ranking, _json(a.ranking_params))
