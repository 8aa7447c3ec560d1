"""Plots of hash codes. matplotlib (Agg, no display) + scikit-learn; never imports torch."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from rshash import RshashError
from rshash.atomic import atomic_write
from rshash.codes import read_codes, unpack_bits

_MIN_POINTS = 4

# Every text rshash draws is literal: class names, method labels and titles may hold
# $, _, ^ or \ ("a$b$c" is a class name, not math; "$\y$" would crash mathtext), and a
# user's matplotlibrc with text.usetex must not send them to LaTeX.
_LITERAL = {"parse_math": False, "usetex": False}


def _literal_legend(legend) -> None:
    for text in [*legend.get_texts(), legend.get_title()]:
        text.update(_LITERAL)


def class_colors(n_classes: int) -> list:
    """Qualitative colours: tab20, then tab20b, then tab20c, then repeated."""
    palette = (
        list(colormaps["tab20"].colors)
        + list(colormaps["tab20b"].colors)
        + list(colormaps["tab20c"].colors)
    )
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
    tsne = TSNE(
        n_components=2, init=init, perplexity=perplexity, random_state=seed, learning_rate="auto"
    )
    return tsne.fit_transform(x.astype(np.float32)), perplexity


def plot_tsne(
    codes_path,
    out_png,
    title: str,
    max_points: int = 2000,
    seed: int = 0,
    class_names: Mapping[int, str] | None = None,
) -> None:
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
        raise RshashError(
            f"{codes_path}: t-SNE needs at least {_MIN_POINTS} query rows, found {len(rows)}"
        )
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
    sub = (
        f"t-SNE of {len(rows)} query codes"
        + (f" (of {n_query})" if len(rows) < n_query else "")
        + f", {codes.bits} bits, {len(classes)} classes, perplexity {perplexity:.0f}"
    )
    n_distinct = len(np.unique(codes.packed[rows], axis=0))
    if n_distinct == 1:
        sub += "; all codes identical"
    ax.set_title(f"{title}\n{sub}", fontsize=10, **_LITERAL)
    ax.set_xticks([])
    ax.set_yticks([])

    def name(label):
        if class_names is not None and int(label) in class_names:
            return f"{int(label)}: {class_names[int(label)]}"
        return str(int(label))

    if len(classes) <= 20:
        for i, label in enumerate(classes):
            sel = index == i
            ax.scatter(
                emb[sel, 0],
                emb[sel, 1],
                s=9,
                color=colors[i],
                label=name(label),
                linewidths=0,
                alpha=0.85,
            )
        _literal_legend(
            ax.legend(
                title="class",
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize=7,
                title_fontsize=8,
                markerscale=1.6,
                frameon=False,
            )
        )
    else:
        cmap = ListedColormap(colors)
        norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
        sc = ax.scatter(
            emb[:, 0], emb[:, 1], s=9, c=index, cmap=cmap, norm=norm, linewidths=0, alpha=0.85
        )
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


# ---------------------------------------------------------------------------
# Curves, heatmaps and retrieval grids (pure drawing: arrays in, PNG out)
# ---------------------------------------------------------------------------

_DPI = 120
_LINESTYLES = ("-", "--", ":", "-.")


def _method_palette() -> list:
    """tab10 first (the usual method colours), then the darker tab20b/tab20c shades."""
    extra = [
        c
        for i, c in enumerate(list(colormaps["tab20b"].colors) + list(colormaps["tab20c"].colors))
        if i % 4 in (0, 1)
    ]
    return list(colormaps["tab10"].colors) + extra


def method_colors(methods) -> dict:
    """One stable colour per method label: tab10 by index in the sorted label list.

    The colour depends only on the set of labels, never on the order they are
    passed in, so every plot drawn from the same methods agrees.
    """
    palette = _method_palette()
    names = sorted({str(m) for m in methods})
    return {m: palette[i % len(palette)] for i, m in enumerate(names)}


def _linestyle(label: str, labels) -> str:
    """Solid for the first palette-length labels, then dashed etc. so colours never alias."""
    names = sorted({str(m) for m in labels})
    return _LINESTYLES[(names.index(str(label)) // len(_method_palette())) % len(_LINESTYLES)]


def _resolve_colors(labels, colors) -> dict:
    resolved = method_colors(labels)
    if colors:
        resolved.update({str(k): v for k, v in colors.items()})
    return resolved


def _new_figure(figsize):
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png) -> None:
    def write(tmp):
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")

    atomic_write(out_png, write)


def _check_curves(curves, what: str) -> dict:
    if not curves:
        raise RshashError(f"{what}: no curves to plot (empty input)")
    checked = {}
    for label, pair in curves.items():
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise RshashError(f"{what}: curve {label!r} must be a pair of arrays") from None
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        if len(a) == 0 or len(a) != len(b):
            raise RshashError(
                f"{what}: curve {label!r} needs two non-empty arrays of equal "
                f"length, got {len(a)} and {len(b)}"
            )
        checked[str(label)] = (a, b)
    return checked


def _legend_outside(ax, title=None) -> None:
    _literal_legend(
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=8,
            frameon=False,
            title=title,
            title_fontsize=8,
            borderaxespad=0.0,
        )
    )


def plot_pr_hamming(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], out_png, title: str, colors=None
) -> None:
    """Precision (y) against recall (x) over Hamming radius 0..bits, one line per method.

    ``curves``: method label -> (precision, recall), each indexed by radius.
    The point at radius 2 (the usual hash-lookup radius) is marked with a large
    dot on every line.
    """
    checked = _check_curves(curves, "precision-recall (Hamming radius)")
    col = _resolve_colors(checked, colors)
    fig = _new_figure((7.2, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    for label in sorted(checked):
        precision, recall = checked[label]
        color = col[label]
        ax.plot(
            recall,
            precision,
            _linestyle(label, checked),
            color=color,
            marker="o",
            markersize=3,
            linewidth=1.5,
            label=label,
        )
        if len(precision) > 2 and np.isfinite(precision[2]) and np.isfinite(recall[2]):
            ax.plot(
                [recall[2]],
                [precision[2]],
                "o",
                color=color,
                markersize=9,
                markeredgecolor="black",
                markeredgewidth=0.8,
                zorder=5,
            )
    ax.plot(
        [],
        [],
        "o",
        color="grey",
        markersize=9,
        markeredgecolor="black",
        markeredgewidth=0.8,
        linestyle="none",
        label="Hamming radius 2",
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall (fraction of relevant images retrieved)")
    ax.set_ylabel("precision (fraction of retrieved images relevant)")
    ax.set_title(
        f"{title}\nprecision-recall over Hamming radius 0..bits (● = radius 2)",
        fontsize=10,
        **_LITERAL,
    )
    ax.grid(True, alpha=0.35)
    _legend_outside(ax, title="method")
    _save(fig, out_png)


def plot_val_curves(curves: dict[str, tuple], metric: str, out_png, title: str) -> None:
    """Validation score (y) against epoch (x), one line per model; ``curves``: label ->
    (epochs, scores, best epoch). The kept epoch is a large dot on each line."""
    if not curves:
        raise RshashError("validation curves: no curves to plot (empty input)")
    col = _resolve_colors(curves, None)
    fig = _new_figure((7.2, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for label in sorted(curves):
        epochs, scores, best = curves[label]
        ax.plot(epochs, scores, "-", color=col[label], marker="o", markersize=3, label=label)
        at = np.flatnonzero(epochs == best)
        ax.plot(
            epochs[at],
            scores[at],
            "o",
            color=col[label],
            markersize=9,
            markeredgecolor="black",
            markeredgewidth=0.8,
            zorder=5,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(
        f"{title}\nvalidation score at each check (● = kept epoch)", fontsize=10, **_LITERAL
    )
    ax.grid(True, alpha=0.35)
    _legend_outside(ax, title="model")
    _save(fig, out_png)


def plot_p_at_k(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    out_png,
    title: str,
    ylabel: str = "precision@k",
    colors=None,
) -> None:
    """A metric against the number of retrieved images k, one line per method.

    ``curves``: method label -> (ks, values). Used for P@k and R@k curves.
    """
    checked = _check_curves(curves, ylabel)
    col = _resolve_colors(checked, colors)
    fig = _new_figure((7.2, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    kmax = 0.0
    vmax = 0.0
    for label in sorted(checked):
        ks, values = checked[label]
        order = np.argsort(ks, kind="stable")
        ks, values = ks[order], values[order]
        ax.plot(
            ks,
            values,
            _linestyle(label, checked),
            color=col[label],
            marker="o" if len(ks) <= 30 else None,
            markersize=3.5,
            linewidth=1.5,
            label=label,
        )
        finite_k = ks[np.isfinite(ks)]
        if len(finite_k):
            kmax = max(kmax, float(finite_k.max()))
        finite_v = values[np.isfinite(values)]
        if len(finite_v):
            vmax = max(vmax, float(finite_v.max()))
    kmin = min(
        (float(ks[np.isfinite(ks)].min()) for ks, _ in checked.values() if np.isfinite(ks).any()),
        default=0.0,
    )
    xlabel = "number of retrieved images k"
    if kmin > 0 and kmax / kmin > 50:
        # k spans orders of magnitude (e.g. 1..1000): a log axis keeps small k readable
        ax.set_xscale("log")
        ax.set_xlim(kmin / 1.2, kmax * 1.2)
        xlabel += " (log scale)"
    else:
        ax.set_xlim(0.0, kmax * 1.02 if kmax > 0 else 1.0)
    ax.set_ylim(0.0, 1.02 if vmax <= 1.0 else vmax * 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, **_LITERAL)
    ax.set_title(f"{title}\n{ylabel} against k", fontsize=10, **_LITERAL)
    ax.grid(True, which="major", alpha=0.35)
    _legend_outside(ax, title="method")
    _save(fig, out_png)


def plot_ap_heatmap(
    matrix: np.ndarray, row_labels: list[str], class_names: list[str], out_png, title: str
) -> None:
    """Per-class AP (rows: methods / method+bits, columns: classes) as a viridis heatmap.

    Cells carry their value (2 decimals) when there are at most 30 classes;
    NaN cells are grey. The figure grows with the matrix so text stays legible.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise RshashError(f"AP heatmap: need a non-empty 2-d matrix, got shape {m.shape}")
    n_rows, n_cols = m.shape
    if len(row_labels) != n_rows or len(class_names) != n_cols:
        raise RshashError(
            f"AP heatmap: matrix is {n_rows} x {n_cols} but got "
            f"{len(row_labels)} row labels and {len(class_names)} class names"
        )
    annotate = n_cols <= 30
    cell_w = 0.55 if annotate else 0.32
    cell_h = 0.42 if annotate else 0.34
    longest_row = max(len(str(r)) for r in row_labels)
    longest_class = max(len(str(c)) for c in class_names)
    width = max(6.0, n_cols * cell_w + 0.075 * longest_row + 2.0)
    height = max(3.0, n_rows * cell_h + 0.065 * longest_class + 1.6)
    fig = _new_figure((width, height))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    im = ax.imshow(
        np.ma.masked_invalid(m),
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(np.arange(n_cols))
    ax.set_xticklabels(
        [str(c) for c in class_names],
        rotation=60,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
        **_LITERAL,
    )
    ax.set_yticks(np.arange(n_rows))
    ax.set_yticklabels([str(r) for r in row_labels], fontsize=8, **_LITERAL)
    ax.set_xlabel("class")
    ax.set_ylabel("method")
    # thin white lines between cells
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    if annotate:
        for i in range(n_rows):
            for j in range(n_cols):
                v = m[i, j]
                text = "–" if not np.isfinite(v) else f"{v:.2f}"
                color = "black" if (not np.isfinite(v) or v > 0.6) else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=color)
    cbar = fig.colorbar(im, ax=ax, fraction=0.04 if n_cols > 10 else 0.06, pad=0.02)
    cbar.set_label("average precision (AP)")
    sub = f"per-class AP ({n_rows} rows x {n_cols} classes)"
    if not np.isfinite(m).all():
        sub += "; grey = no value"
    ax.set_title(f"{title}\n{sub}", fontsize=10, **_LITERAL)
    _save(fig, out_png)


_QUERY_FRAME = ("#1f4fd8", 3.5)
_WRONG_FRAME = ((1.0, 0.0, 0.0), 5.0)
_RIGHT_FRAME = ((0.0, 0.62, 0.0), 1.5)


def _load_thumb(path, thumb: int) -> np.ndarray:
    """The image as a thumb x thumb RGB array; rshash.data.images.decode names a bad file."""
    from PIL import Image

    from rshash.data.images import decode

    return np.asarray(decode(path).resize((thumb, thumb), Image.BILINEAR))


def _frame(ax, color, width) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _field(entry: dict, key: str, where: str):
    try:
        return entry[key]
    except (KeyError, TypeError):
        raise RshashError(f"retrieval grid: {where} has no {key!r}") from None


def _fit(text: str, max_chars: int) -> str:
    """Shorten one caption line with an ellipsis so it stays under its thumbnail."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def plot_retrieval_grid(queries: list[dict], out_png, title: str, thumb: int = 96) -> None:
    """One row per query: the query (blue frame), then its results in rank order.

    Each query: {"path", "label", "predicted" (optional), "results": [{"path",
    "label", "predicted" (optional), "distance"}, ...]}. Results of another
    class than the query get a thick red frame, the others a thin green one.
    All images are read first, so an unreadable one raises RshashError naming
    the file and no PNG is written.
    """
    if not queries:
        raise RshashError("retrieval grid: no queries to plot (empty input)")
    if thumb < 8:
        raise RshashError(f"retrieval grid: thumb must be at least 8 pixels, got {thumb}")
    rows = []
    for qi, q in enumerate(queries):
        where = f"query {qi}"
        q_img = _load_thumb(_field(q, "path", where), thumb)
        results = []
        for ri, r in enumerate(_field(q, "results", where) or []):
            rwhere = f"result {ri + 1} of query {qi}"
            results.append(
                (
                    r,
                    _load_thumb(_field(r, "path", rwhere), thumb),
                    str(_field(r, "label", rwhere)),
                    float(_field(r, "distance", rwhere)),
                )
            )
        rows.append((q, q_img, str(_field(q, "label", where)), results))

    n_cols = 1 + max(len(r[3]) for r in rows)
    n_rows = len(rows)
    has_pred = any(
        q.get("predicted") is not None or any(r.get("predicted") is not None for r, *_ in res)
        for q, _, _, res in rows
    )
    cell = 1.15  # inches per column; the thumbnail itself is 1 inch
    caption = 0.55 if has_pred else 0.42
    gap_after_query = 0.3
    fontsize = 7.0
    # DejaVu Sans averages ~0.55 em per character; keep captions inside their column
    max_chars = int(cell * 72 / (0.58 * fontsize))
    width = n_cols * cell + gap_after_query + 0.3
    height = n_rows * (cell + caption) + 0.7
    fig = _new_figure((width, height))
    n_wrong = 0
    n_total = 0
    left0 = 0.15 / width
    top0 = 1.0 - 0.6 / height
    w = 1.0 / width
    h = 1.0 / height
    for i, (q, q_img, q_label, results) in enumerate(rows):
        y = top0 - (i * (cell + caption) + cell) / height
        ax = fig.add_axes([left0, y, w, h])
        ax.imshow(q_img, interpolation="nearest")
        _frame(ax, *_QUERY_FRAME)
        q_chars = int((cell + gap_after_query) * 72 / (0.62 * fontsize))  # bold, wider column
        text = "query:\n" + _fit(q_label, q_chars)
        if q.get("predicted") is not None:
            text += "\n" + _fit(f"pred: {q['predicted']}", q_chars)
        ax.set_xlabel(
            text,
            fontsize=fontsize,
            color=_QUERY_FRAME[0],
            fontweight="bold",
            labelpad=3,
            **_LITERAL,
        )
        for j, (r, r_img, r_label, dist) in enumerate(results):
            x = left0 + ((j + 1) * cell + gap_after_query) / width
            ax = fig.add_axes([x, y, w, h])
            ax.imshow(r_img, interpolation="nearest")
            wrong = r_label != q_label
            n_wrong += wrong
            n_total += 1
            _frame(ax, *(_WRONG_FRAME if wrong else _RIGHT_FRAME))
            text = f"#{j + 1}  d={dist:.4g}\n" + _fit(r_label, max_chars)
            if r.get("predicted") is not None:
                text += "\n" + _fit(f"pred: {r['predicted']}", max_chars)
            ax.set_xlabel(
                text,
                fontsize=fontsize,
                labelpad=3,
                color=(0.75, 0.0, 0.0) if wrong else "black",
                **_LITERAL,
            )
    fig.suptitle(
        f"{title}\n{n_rows} queries, top {n_cols - 1} results by rank "
        f"(d = distance); red frame = different class "
        f"({n_wrong}/{n_total} results), green = same class",
        fontsize=10,
        y=1.0 - 0.05 / height,
        va="top",
        **_LITERAL,
    )
    _save(fig, out_png)
