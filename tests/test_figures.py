"""Figures of an experiment (rshash.report.figures): metrics files, manifests and codes in,
curves averaged over seeds, PNGs out; errors are one line naming the file."""

import numpy as np
import pytest
from PIL import Image

from rshash import RshashError
from rshash.codes import pack_bits, write_codes
from rshash.data.manifest import scan_folder, write_manifest
from rshash.data.splits import make_split, write_split
from rshash.report.figures import mean_curves, plot_ap_per_class, plot_curves, plot_retrieval

# matplotlib mathtext characters in class names: drawn as written, never parsed
CLASSES = ["a$b$c", "x_1^2\\y", "$x_1^2\\y$", "b^$c$"]


def curves(seed: int, bits: int = 8, classes: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "pr_hamming": {
            "precision": rng.uniform(0, 1, bits + 1).tolist(),
            "recall": np.sort(rng.uniform(0, 1, bits + 1)).tolist(),
        },
        "p_at_k": {"k": [5, 10, 20], "precision": rng.uniform(0, 1, 3).tolist()},
        "ap_per_class": {str(c): float(rng.uniform()) for c in range(classes)},
    }


@pytest.fixture
def dataset(tmp_path):
    """Four classes named with mathtext characters, 8 images each; its manifest and split."""
    root = tmp_path / "images"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (32, 32), (60 * c, 20 * i, 90)).save(root / name / f"{i}.png")
    manifest = scan_folder(root)
    write_manifest(manifest, tmp_path / "manifest.parquet")
    split = make_split(manifest, {"train_fraction": 0.5, "database": "train"}, seed=0)
    write_split(split, tmp_path / "split.parquet")
    return tmp_path, manifest, split


@pytest.fixture
def curve_files(report_data):
    return [
        report_data.write(m, 8, s, metrics={"map_all": 0.5}, curves=curves(10 * i + s))
        for i, m in enumerate(("milan", "dmch"))
        for s in range(3)
    ]


def test_mean_curves_average_over_seeds(curve_files):
    pr = mean_curves(curve_files, "pr_hamming")
    assert sorted(pr) == ["dmch", "milan"]
    want = np.mean([curves(s)["pr_hamming"]["precision"] for s in range(3)], axis=0)
    assert np.array_equal(pr["milan"][0], want)
    ks, p = mean_curves(curve_files, "p_at_k")["dmch"]
    assert list(ks) == [5, 10, 20]
    assert np.array_equal(
        p, np.mean([curves(10 + s)["p_at_k"]["precision"] for s in range(3)], axis=0)
    )


def test_no_curve_of_the_kind_is_an_error(tmp_path, metric_files):
    with pytest.raises(RshashError, match="has a 'p_at_k' curve"):
        plot_curves(metric_files, "p_at_k", tmp_path / "p.png", "t")
    assert not (tmp_path / "p.png").exists()


def test_ap_per_class_draws_class_names_literally(tmp_path, dataset, curve_files, drawn_literally):
    root, _, _ = dataset
    out = tmp_path / "plots" / "ap.png"

    def plot():
        plot_ap_per_class(curve_files, root / "manifest.parquet", out, "AP $\\y$")

    plot()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    drawn_literally(plot, [*CLASSES, "AP $\\y$"])


def test_ap_per_class_without_the_curve_names_the_file(tmp_path, dataset, report_data):
    root, _, _ = dataset
    path = report_data.write("milan", 8, 0, metrics={"map_all": 0.5}, curves={})
    with pytest.raises(RshashError, match="no 'ap_per_class' curve") as exc:
        plot_ap_per_class([path], root / "manifest.parquet", tmp_path / "ap.png", "t")
    assert path in str(exc.value)


def test_cli_plot_ap_on_a_full_disk_is_one_line_and_leaves_nothing(
    tmp_path, dataset, curve_files, rshash_on_full_disk
):
    root, _, _ = dataset
    out = tmp_path / "plots" / "ap.png"
    proc = rshash_on_full_disk(
        [
            "plot-ap",
            "--manifest",
            root / "manifest.parquet",
            "--title",
            "AP",
            "--out",
            out,
            *curve_files,
        ],
        max_bytes=8192,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"rshash plot-ap: error: {out}: cannot write: File too large"
    ]
    assert list(out.parent.iterdir()) == []


def test_retrieval_examples_draw_class_names_literally(tmp_path, dataset, drawn_literally):
    root, manifest, split = dataset
    rows = split[split.role.isin(["query", "database"])].reset_index(drop=True)
    labels = rows.image_id.map(dict(zip(manifest.image_id, manifest.label))).to_numpy()
    bits01 = np.random.default_rng(0).integers(0, 2, size=(len(rows), 16)).astype(np.uint8)
    write_codes(
        root / "codes.parquet",
        rows.image_id.tolist(),
        labels,
        rows.role.tolist(),
        pack_bits(bits01),
        bits01.astype(np.float32),
        16,
    )
    out = tmp_path / "retrieval.png"

    def plot():
        plot_retrieval(
            root / "codes.parquet",
            root / "split.parquet",
            root / "manifest.parquet",
            out,
            "retrieval $\\y$",
        )

    plot()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600
    # the captions name the classes of the queries and results drawn
    drawn_literally(plot, ["retrieval $\\y$"], any_of=CLASSES)


def test_figures_read_metrics_json_only(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RshashError, match=f"metrics file {bad}: not valid JSON"):
        mean_curves([str(bad)], "pr_hamming")
