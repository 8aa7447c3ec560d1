"""Drawing (rshash.report.plots): curves, AP heatmap, retrieval grid, t-SNE of codes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rshash import RshashError
from rshash.codes import pack_bits, write_codes
from rshash.report.plots import (
    method_colors,
    plot_ap_heatmap,
    plot_p_at_k,
    plot_pr_hamming,
    plot_retrieval_grid,
    plot_tsne,
    subsample,
)

TITLE = "ucmd, dmch_60_40, efficientnet_lite0, 32 bits"


def load_png(path, min_w=300, min_h=200) -> np.ndarray:
    """Open ``path`` as a PNG, check its size and that it is not one flat colour."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        rgb = np.asarray(im.convert("RGB"))
    assert w >= min_w and h >= min_h, (w, h)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 10, "image is (nearly) blank"
    return rgb


def only_file(directory):
    """The directory holds exactly the PNG: no temporary file left behind."""
    return sorted(p.name for p in directory.iterdir())


def pr_curves(methods, bits=32):
    radius = np.arange(bits + 1)
    out = {}
    for i, m in enumerate(methods):
        recall = (radius / bits) ** (0.4 + 0.1 * i)
        precision = np.clip(0.9 - 0.1 * i - 0.4 * recall, 0, 1)
        out[m] = (precision, recall)
    return out


# --- colours ---------------------------------------------------------------------------


def test_method_colors_do_not_depend_on_order():
    a = method_colors(["milan", "dmch", "itq", "lsh"])
    b = method_colors(["lsh", "itq", "dmch", "milan"])
    assert a == b
    assert len(set(a.values())) == 4  # distinct colours
    assert set(a) == {"milan", "dmch", "itq", "lsh"}
    # many methods: still one colour each, no two alike
    many = [f"m{i:02d}" for i in range(16)]
    assert len(set(method_colors(many).values())) == 16


def test_curve_colours_follow_method_colors_regardless_of_dict_order(tmp_path):
    methods = ["milan", "dmch", "itq"]
    curves = pr_curves(methods)
    reordered = {m: curves[m] for m in reversed(methods)}
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_pr_hamming(curves, a, TITLE)
    plot_pr_hamming(reordered, b, TITLE)
    assert np.array_equal(load_png(a), load_png(b))


# --- precision-recall over Hamming radius ----------------------------------------------


def test_plot_pr_hamming_writes_png(tmp_path):
    out = tmp_path / "plots" / "pr.png"
    plot_pr_hamming(pr_curves(["milan", "dmch", "itq"]), out, TITLE)
    load_png(out)
    assert only_file(out.parent) == ["pr.png"]


def test_plot_pr_hamming_uses_given_colours(tmp_path):
    out = tmp_path / "pr.png"
    plot_pr_hamming(pr_curves(["milan"]), out, TITLE, colors={"milan": (1.0, 0.0, 1.0)})
    rgb = load_png(out).astype(int)
    magenta = (rgb[..., 0] > 230) & (rgb[..., 1] < 30) & (rgb[..., 2] > 230)
    assert magenta.sum() > 50


def test_plot_pr_hamming_handles_nan_and_short_curves(tmp_path):
    precision = np.array([np.nan, 0.9, 0.8])
    recall = np.array([0.0, 0.2, 0.4])
    plot_pr_hamming(
        {"lsh": (precision, recall), "itq": (np.array([0.5]), np.array([0.1]))},
        tmp_path / "pr.png",
        TITLE,
    )
    load_png(tmp_path / "pr.png")


@pytest.mark.parametrize(
    "curves",
    [{}, {"lsh": (np.array([]), np.array([]))}, {"lsh": (np.array([0.5, 0.4]), np.array([0.1]))}],
)
def test_plot_pr_hamming_rejects_empty_or_mismatched(tmp_path, curves):
    out = tmp_path / "pr.png"
    with pytest.raises(RshashError):
        plot_pr_hamming(curves, out, TITLE)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# --- P@k / R@k ---------------------------------------------------------------------------


@pytest.mark.parametrize("ks", [np.array([5, 10, 20, 50, 100]), np.array([1, 10, 100, 1000])])
def test_plot_p_at_k_writes_png(tmp_path, ks):
    curves = {
        m: (ks, np.clip(0.9 - 0.1 * i - 0.05 * np.log10(ks), 0, 1))
        for i, m in enumerate(["dmch", "milan", "dah"])
    }
    out = tmp_path / "pk.png"
    plot_p_at_k(curves, out, TITLE)
    load_png(out)
    out_r = tmp_path / "rk.png"
    plot_p_at_k(curves, out_r, TITLE, ylabel="recall@k")
    load_png(out_r)
    assert only_file(tmp_path) == ["pk.png", "rk.png"]


def test_plot_p_at_k_rejects_empty(tmp_path):
    with pytest.raises(RshashError, match="empty"):
        plot_p_at_k({}, tmp_path / "pk.png", TITLE)
    assert not (tmp_path / "pk.png").exists()


# --- per-class AP heatmap ------------------------------------------------------------------


@pytest.mark.parametrize("n_rows,n_cols", [(4, 21), (6, 45), (1, 1)])
def test_plot_ap_heatmap_writes_png_and_grows_with_size(tmp_path, n_rows, n_cols):
    rng = np.random.default_rng(0)
    matrix = rng.uniform(0, 1, (n_rows, n_cols))
    matrix[0, 0] = np.nan  # a missing value is drawn grey, not an error
    out = tmp_path / "ap.png"
    plot_ap_heatmap(
        matrix,
        [f"method{i}, 32 bits" for i in range(n_rows)],
        [f"class_{j}" for j in range(n_cols)],
        out,
        TITLE,
    )
    rgb = load_png(out, min_w=300, min_h=150)
    # about 0.3 inch (>= 30 px) per class column at least
    assert rgb.shape[1] >= 30 * n_cols


def test_plot_ap_heatmap_rejects_empty_and_mismatched_labels(tmp_path):
    out = tmp_path / "ap.png"
    with pytest.raises(RshashError):
        plot_ap_heatmap(np.zeros((0, 3)), [], ["a", "b", "c"], out, TITLE)
    with pytest.raises(RshashError, match="class names"):
        plot_ap_heatmap(np.zeros((2, 3)), ["x", "y"], ["a", "b"], out, TITLE)
    assert not out.exists()


# --- retrieval grid -----------------------------------------------------------------------

# plain, clearly non-red colours for the synthetic thumbnails
PALETTE = {
    "forest": (40, 120, 60),
    "beach": (200, 190, 150),
    "harbor": (60, 90, 180),
    "river": (90, 160, 200),
}


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    paths = {}
    for i, (name, color) in enumerate(PALETTE.items()):
        mode = ["RGB", "L", "RGBA", "P"][i % 4]  # any mode is converted to RGB
        im = Image.new("RGB", (64 + 16 * i, 48 + 8 * i), color)
        if mode == "L":
            im = im.convert("L")
        elif mode == "RGBA":
            im = im.convert("RGBA")
        elif mode == "P":
            im = im.convert("P")
        path = d / f"{name}.{'jpg' if mode == 'RGB' else 'png'}"
        im.save(path)
        paths[name] = str(path)
    return paths


def make_queries(images, wrong: bool, predicted: bool = True, n_results: int = 6):
    queries = []
    for qname in ("forest", "harbor"):
        results = []
        for r in range(n_results):
            label = qname
            if wrong and qname == "harbor" and r == 2:
                label = "beach"
            results.append(
                {
                    "path": images[label],
                    "label": label,
                    "predicted": label if predicted else None,
                    "distance": float(r),
                }
            )
        queries.append(
            {
                "path": images[qname],
                "label": qname,
                "predicted": qname if predicted else None,
                "results": results,
            }
        )
    return queries


def strongly_red(rgb: np.ndarray) -> int:
    rgb = rgb.astype(int)
    return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())


def test_plot_retrieval_grid_frames_wrong_results_in_red(tmp_path, images):
    out = tmp_path / "grid" / "wrong.png"
    plot_retrieval_grid(make_queries(images, wrong=True), out, TITLE)
    rgb = load_png(out, min_w=600, min_h=200)
    assert strongly_red(rgb) > 200  # a thick red frame, not a stray pixel
    assert only_file(out.parent) == ["wrong.png"]


def test_plot_retrieval_grid_all_correct_has_no_red(tmp_path, images):
    out = tmp_path / "right.png"
    plot_retrieval_grid(make_queries(images, wrong=False), out, TITLE)
    rgb = load_png(out, min_w=600, min_h=200)
    assert strongly_red(rgb) == 0
    # green frames are there
    g = rgb.astype(int)
    assert ((g[..., 1] > 130) & (g[..., 0] < 40) & (g[..., 2] < 40)).sum() > 100


def test_plot_retrieval_grid_thumbnails_are_large_enough(tmp_path, images):
    out = tmp_path / "grid.png"
    n_results = 20
    plot_retrieval_grid(
        make_queries(images, wrong=True, predicted=False, n_results=n_results), out, TITLE
    )
    with Image.open(out) as im:
        w, h = im.size
        dpi = im.info.get("dpi", (120, 120))[0]
    # 1 query + 20 results per row, each at least ~0.9 inch wide
    assert w >= (n_results + 1) * 0.9 * dpi
    assert h >= 2 * 0.9 * dpi


def test_plot_retrieval_grid_unreadable_image_names_file(tmp_path, images):
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    queries = make_queries(images, wrong=False)
    queries[1]["results"][3]["path"] = str(bad)
    out = tmp_path / "out" / "grid.png"
    with pytest.raises(RshashError, match="broken.jpg"):
        plot_retrieval_grid(queries, out, TITLE)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []

    queries = make_queries(images, wrong=False)
    queries[0]["path"] = str(tmp_path / "missing.png")
    with pytest.raises(RshashError, match="missing.png"):
        plot_retrieval_grid(queries, out, TITLE)
    assert not out.exists()


def test_plot_retrieval_grid_rejects_empty(tmp_path):
    with pytest.raises(RshashError, match="empty"):
        plot_retrieval_grid([], tmp_path / "grid.png", TITLE)
    assert not (tmp_path / "grid.png").exists()


def test_plots_module_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, rshash.report.plots as p; "
        "assert 'torch' not in sys.modules and 'snakemake' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- text is drawn literally ------------------------------------------------------------

# matplotlib's mathtext characters: "a$b$c" would be drawn as math, "$x_1^2\\y$" and "b^$c$"
# make mathtext raise; every label and title rshash draws must come out as written.
MATH_NAMES = ["a$b$c", "x_1^2\\y", "$x_1^2\\y$", "b^$c$"]
MATH_TITLE = "ucmd $\\y$ x_1^2"


def test_ap_heatmap_draws_mathtext_characters_literally(tmp_path, drawn_literally):
    out = tmp_path / "ap.png"

    def plot():
        plot_ap_heatmap(np.full((4, 4), 0.5), MATH_NAMES, MATH_NAMES, out, MATH_TITLE)

    plot()
    load_png(out)
    drawn_literally(plot, [*MATH_NAMES, MATH_TITLE])


def test_curves_draw_mathtext_characters_literally(tmp_path, drawn_literally):
    curves = pr_curves(MATH_NAMES)

    def plot_pr():
        plot_pr_hamming(curves, tmp_path / "pr.png", MATH_TITLE)

    ks = np.array([1, 10, 100, 1000])  # a log axis: its own tick labels stay math

    def plot_pk():
        plot_p_at_k(
            {m: (ks, np.linspace(0.9, 0.2, 4)) for m in MATH_NAMES},
            tmp_path / "pk.png",
            MATH_TITLE,
            ylabel="precision@k $\\y$",
        )

    plot_pr()
    load_png(tmp_path / "pr.png")
    plot_pk()
    load_png(tmp_path / "pk.png")
    drawn_literally(plot_pr, [*MATH_NAMES, MATH_TITLE])
    drawn_literally(plot_pk, [*MATH_NAMES, MATH_TITLE, "precision@k $\\y$"])


def test_retrieval_grid_draws_mathtext_characters_literally(tmp_path, images, drawn_literally):
    queries = make_queries(images, wrong=True)
    for q, name in zip(queries, MATH_NAMES):
        q["label"] = q["predicted"] = name
        for r, rname in zip(q["results"], MATH_NAMES * 2):
            r["label"] = r["predicted"] = rname

    def plot():
        plot_retrieval_grid(queries, tmp_path / "grid.png", MATH_TITLE)

    plot()
    load_png(tmp_path / "grid.png", min_w=600)
    drawn_literally(plot, [*MATH_NAMES, *(f"pred: {n}" for n in MATH_NAMES), MATH_TITLE])


# --- t-SNE of codes ---------------------------------------------------------------------


def test_plot_tsne_writes_png(tmp_path, report_data):
    import matplotlib.image as mpimg

    codes = tmp_path / "codes.parquet"
    report_data.codes(codes)
    out = tmp_path / "plots" / "tsne.png"
    plot_tsne(codes, out, "milan, 16 bits")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    # not a blank canvas: several distinct colours are drawn
    assert len(np.unique(img.reshape(-1, img.shape[2])[:, :3], axis=0)) > 20
    assert [p.name for p in out.parent.iterdir()] == ["tsne.png"]


def test_subsample_is_seeded_sorted_and_unique():
    a = subsample(1000, 100, seed=3)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, subsample(1000, 100, seed=3))
    assert not np.array_equal(a, subsample(1000, 100, seed=4))
    assert np.array_equal(subsample(50, 100), np.arange(50))


def test_plot_tsne_many_classes_uses_colorbar(tmp_path, report_data, caught_figure):
    import matplotlib.image as mpimg

    codes = tmp_path / "codes.parquet"
    report_data.codes(codes, n_query=50, n_classes=25, bits=8)
    out = tmp_path / "many.png"
    plot_tsne(codes, out, "itq, 8 bits")
    assert mpimg.imread(out).shape[0] > 300
    # 25 classes: a colour bar labelled "class" beside the scatter, no legend
    fig = caught_figure(lambda: plot_tsne(codes, out, "itq, 8 bits"))
    scatter, *others = fig.axes
    assert scatter.get_legend() is None
    assert [ax.get_ylabel() for ax in others] == ["class"]
    # 4 classes: a legend of the classes, no colour bar
    report_data.codes(codes, n_query=48, n_classes=4, bits=8)
    fig = caught_figure(lambda: plot_tsne(codes, out, "itq, 8 bits"))
    assert len(fig.axes) == 1
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2", "3"]


def test_plot_tsne_subsamples_deterministically(tmp_path, report_data):
    import matplotlib.image as mpimg

    codes = tmp_path / "codes.parquet"
    report_data.codes(codes, n_query=90, n_classes=3)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_tsne(codes, a, "dmch, 16 bits", max_points=40, seed=1)
    plot_tsne(codes, b, "dmch, 16 bits", max_points=40, seed=1)
    assert np.array_equal(mpimg.imread(a), mpimg.imread(b))


def test_plot_tsne_needs_query_rows(tmp_path):
    codes = tmp_path / "codes.parquet"
    bits01 = np.zeros((3, 8), dtype=np.uint8)
    write_codes(
        codes,
        ["a", "b", "c"],
        [0, 1, 2],
        ["database"] * 3,
        pack_bits(bits01),
        bits01.astype(np.float32),
        8,
    )
    with pytest.raises(RshashError, match="query rows"):
        plot_tsne(codes, tmp_path / "x.png", "lsh, 8 bits")
    assert not (tmp_path / "x.png").exists()


def test_plot_tsne_draws_mathtext_characters_literally(tmp_path, report_data, drawn_literally):
    codes = tmp_path / "codes.parquet"
    report_data.codes(codes, n_query=60, n_classes=4)
    out = tmp_path / "tsne.png"

    def plot():
        plot_tsne(codes, out, MATH_TITLE, class_names=dict(enumerate(MATH_NAMES)))

    plot()
    load_png(out)
    drawn_literally(plot, [*(f"{i}: {n}" for i, n in enumerate(MATH_NAMES)), MATH_TITLE])
