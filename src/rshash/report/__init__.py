"""Reports, one module per concern.

Reading: ``metrics_files`` (metrics JSONs, validated; the one reader of tables
and figures) and ``cost`` (Snakemake benchmark TSVs). Statistics over split
seeds: ``stats``. Rendering: ``markdown`` (tables for people) and ``plots``
(matplotlib; every text drawn literally). Building outputs from inputs:
``tables`` (CSV, markdown, meta JSON) and ``figures`` (PNGs).

``build_table`` and ``plot_tsne`` are re-exported lazily, so importing the
tables does not pull in matplotlib or scikit-learn.
"""

__all__ = ["build_table", "plot_tsne"]


def __getattr__(name):
    if name == "build_table":
        from rshash.report.tables import build_table

        return build_table
    if name == "plot_tsne":
        from rshash.report.plots import plot_tsne

        return plot_tsne
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
