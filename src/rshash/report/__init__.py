"""Reports: experiment tables (``tables``) and code plots (``plots``).

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
