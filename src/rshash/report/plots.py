"""Plots of hash codes. matplotlib (Agg, no display) + scikit-learn; never imports torch."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from rshash import RshashError
from rshash.codes import atomic_write, read_codes, unpack_bits

_MIN_POINTS = 4


def class_colors(n_classes: int) -> list:
    """Qualitative colours: tab20, then tab20b, then tab20c, then repeated."""
    palette = (list(colormaps["tab20"].colors) + list(colormaps["tab20b"].colors)
               + list(colormaps["tab20c"].colors))
    return [palette[i % len(palette)] for i in range(n_classes)]


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: all of them, or ``max_points`` drawn with ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def tsne_embedding(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """2-d t-SNE of the rows of ``x``; returns the embedding and the perplexity used."""
    from sklearn.manifold import TSNE

    n = len(x)
    perplexity = min(30.0, (n - 1) / 3)
    # PCA initialisation needs some variance; collapsed codes fall back to random init.
    init = "pca" if np.ptp(x, axis=0).any() else "random"
    tsne = TSNE(n_components=2, init=init, perplexity=perplexity, random_state=seed,
                learning_rate="auto")
    return tsne.fit_transform(x.astype(np.float32)), perplexity


def plot_tsne(codes_path, out_png, title: str, max_points: int = 2000, seed: int = 0,
              class_names: Mapping[int, str] | None = None) -> None:
    """t-SNE of the query rows' binary codes, coloured by class, written as a PNG.

    The codes are unpacked to 0/1 floats, so t-SNE's squared Euclidean
    distance is the Hamming distance. More than ``max_points`` queries are
    subsampled with ``seed``. ``title`` should name the method and bits;
    a second line gives the number of points and bits. ``class_names``
    (label -> name) labels the legend; class ids are used otherwise.
    """
    codes = read_codes(codes_path)
    rows = codes.select("query")
    if len(rows) < _MIN_POINTS:
        raise RshashError(f"{codes_path}: t-SNE needs at least {_MIN_POINTS} query rows, "
                          f"found {len(rows)}")
    if max_points < _MIN_POINTS:
        raise RshashError(f"max_points must be at least {_MIN_POINTS}, got {max_points}")
    n_query = len(rows)
    rows = rows[subsample(n_query, max_points, seed)]
    x = unpack_bits(codes.packed[rows], codes.bits).astype(np.float32)
    labels = np.asarray(codes.label[rows]).astype(np.int64)
    emb, perplexity = tsne_embedding(x, seed)

    classes = np.unique(labels)
    colors = class_colors(len(classes))
    index = np.searchsorted(classes, labels)

    fig = Figure(figsize=(6, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    sub = (f"t-SNE of {len(rows)} query codes"
           + (f" (of {n_query})" if len(rows) < n_query else "")
           + f", {codes.bits} bits, {len(classes)} classes, perplexity {perplexity:.0f}")
    n_distinct = len(np.unique(codes.packed[rows], axis=0))
    if n_distinct == 1:
        sub += "; all codes identical"
    ax.set_title(f"{title}\n{sub}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])

    def name(label):
        if class_names is not None and int(label) in class_names:
            return f"{int(label)}: {class_names[int(label)]}"
        return str(int(label))

    if len(classes) <= 20:
        for i, label in enumerate(classes):
            sel = index == i
            ax.scatter(emb[sel, 0], emb[sel, 1], s=9, color=colors[i], label=name(label),
                       linewidths=0, alpha=0.85)
        ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                  title_fontsize=8, markerscale=1.6, frameon=False)
    else:
        cmap = ListedColormap(colors)
        norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
        sc = ax.scatter(emb[:, 0], emb[:, 1], s=9, c=index, cmap=cmap, norm=norm,
                        linewidths=0, alpha=0.85)
        cbar = fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
        step = int(np.ceil(len(classes) / 30))
        ticks = np.arange(0, len(classes), step)
        cbar.set_ticks(ticks)
        cbar.set_ticklabels([str(int(classes[t])) for t in ticks])
        cbar.ax.tick_params(labelsize=6)
        cbar.set_label("class")

    def write(tmp):
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")

    atomic_write(out_png, write)
