import os
from pathlib import Path

import numpy as np
import pytest

# `make test` runs two pytest-xdist workers on two cores, and each runs torch (and the
# jobs it starts) with two threads: OpenMP threads that spin while they wait would take
# the other worker's core. Passive waiting changes no result (the same threads do the
# same sums) and cut test_slurm + test_ucmd on two workers from 125-136 s to 106-111 s
# (user CPU 184-196 s to 144-150 s). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
UCMD_DIR = Path(os.environ.get("RSHASH_TEST_DATA_DIR", REPO.parent / "shared" / "datasets"))


# The longest test files first: `make test` runs the suite on two pytest-xdist workers,
# a file at a time in this order (--dist loadfile --no-loadscope-reorder), so the two
# workers start on the long end-to-end runs together and the short files fill in after.
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_slurm.py",
    "test_ucmd.py",
    "test_method_pbffn.py",
    "test_timm_workflow.py",
    "test_workflow_inputs.py",
    "test_datasets.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def ucmd_data_dir() -> Path:
    images = UCMD_DIR / "UCMerced_LandUse" / "Images"
    if not images.is_dir():
        pytest.skip(f"real UC Merced copy not found at {images} (set RSHASH_TEST_DATA_DIR)")
    return UCMD_DIR


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder of this test run that every pytest-xdist worker shares (``make test``
    runs two), for what a session builds once: the run's base temp folder's parent
    under xdist (one per run), the base temp folder itself otherwise."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / name
    path.mkdir(exist_ok=True)
    return path


CPU_EXTRACTION = {"threads": 2, "device": "cpu", "progress": False}


@pytest.fixture(scope="session")
def demo_extract(tmp_path_factory):
    """``demo_extract(kind) -> (arrays, labels, parts)``: the method tests' demo dataset (10
    classes x 30 synthetic tiles at noise 25, generated once) through EfficientNet-Lite0 as
    features of ``kind`` (rshash.features.extract; each kind extracted once per test run,
    by whichever xdist worker needs it first, under a file lock): its arrays by name and
    the labels, in manifest order, and the rows of each part of the dmch_60_40 seed 0
    split (``parts["train"]``, ``"val"`` (the validation part carved from the train part),
    ``"query"``, ``"database"`` in db_order)."""
    from filelock import FileLock

    from rshash.data.manifest import read_manifest, scan_folder, write_manifest
    from rshash.data.splits import make_split
    from rshash.data.synthetic import generate
    from rshash.features import extract, read_arrays

    root = shared_dir(tmp_path_factory, "demo_extract")
    with FileLock(root / "manifest.lock"):
        if not (root / "manifest.parquet").exists():
            generate(root / "images", n_classes=10, per_class=30, size=96, seed=0, noise=25.0)
            write_manifest(scan_folder(root / "images"), root / "manifest.parquet")
    manifest = read_manifest(root / "manifest.parquet")
    labels = manifest.label.to_numpy().astype(np.int64)
    split = make_split(manifest, {"train_fraction": 0.6, "database": "train"}, seed=0)
    index = {k: i for i, k in enumerate(manifest.image_id)}
    parts = {}
    for role in ("train", "val", "query", "database"):
        part = split[split.role == role]
        if role == "database":
            part = part.sort_values("db_order")
        parts[role] = part.image_id.map(index).to_numpy()
    extracted = {}

    def get(kind):
        if kind not in extracted:
            path = root / f"{kind}.h5"
            with FileLock(root / f"{kind}.lock"):
                if not path.exists():  # written atomically: present means complete
                    manifest_file = root / "manifest.parquet"
                    extract(manifest_file, "efficientnet_lite0", path, kind=kind, **CPU_EXTRACTION)
            arrays, image_id = read_arrays(path)
            assert list(image_id) == list(manifest.image_id)
            extracted[kind] = arrays
        return extracted[kind], labels, parts

    return get


@pytest.fixture(scope="session")
def demo_features(demo_extract):
    """A harder, smaller demo (10 classes x 30 synthetic tiles, noise 25 instead of the
    shipped 50 per class at noise 15) through EfficientNet-Lite0, split by dmch_60_40
    seed 0: a dict with X/y of the train, val, query and database parts. Small and noisy so
    that method tests stay quick and supervised methods clear lsh by a wide margin.

    Extracted once per test session (about 10-20 s on 2 cores)."""
    arrays, labels, parts = demo_extract("features")
    out = {}
    for role, rows in parts.items():
        out[f"X_{role}"], out[f"y_{role}"] = arrays["features"][rows], labels[rows]
    return out


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from rshash.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def rshash_on_full_disk():
    """Run ``rshash ARGV...`` in a subprocess that cannot write files past ``max_bytes``.

    A real full disk for the writer: RLIMIT_FSIZE makes every write past the
    limit fail with EFBIG (with SIGXFSZ ignored), as ENOSPC would. Returns the
    CompletedProcess (text stdout/stderr). Needs no root and no tmpfs."""
    import subprocess
    import sys

    def run(argv, max_bytes: int):
        return subprocess.run(
            [sys.executable, "-c", _LIMITED, str(max_bytes), *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


class ReportData:
    """Metrics files and codes files as the evaluation and training write them, for the
    report tests: distinct, reproducible numbers per (method, bits, seed, metric)."""

    methods = ["milan", "dmch"]  # deliberately not alphabetical: the table keeps this order
    bits = [64, 16]  # deliberately not sorted: the table sorts bits numerically
    seeds = [0, 1, 2]
    protocol = {
        "train": 0.6,
        "query": "rest",
        "database": "train",
        "seeds": [0, 1, 2],
        "map_cutoffs": ["all", 20],
    }

    def __init__(self, root: Path):
        self.root = root

    def value(self, method, bits, seed, metric) -> float:
        import numpy as np

        rng = np.random.default_rng(
            [self.methods.index(method), bits, seed, len(metric), ord(metric[-1])]
        )
        return float(rng.uniform(0.3, 0.95))

    def write(
        self,
        method,
        bits,
        seed,
        ranking="hamming",
        metrics=None,
        dataset="ucmd",
        curves=None,
        root=None,
    ) -> str:
        """One metrics JSON under ``root`` (default: the test's tmp_path); returns its path."""
        import json

        cell = {
            "dataset": dataset,
            "backbone": "efficientnet_lite0",
            "protocol": "dmch_60_40",
            "method": method,
            "bits": bits,
            "seed": seed,
        }
        if metrics is None:
            metrics = {
                m: self.value(method, bits, seed, m)
                for m in ("map_all", "map_at_20", "p_at_5", "p_at_10", "query_ms")
            }
            metrics["pr_hamming"] = {"precision": [0.5, 0.6], "recall": [0.1, 0.2]}  # a curve
        path = (
            (root or self.root)
            / "metrics"
            / dataset
            / "efficientnet_lite0"
            / "dmch_60_40"
            / method
            / str(bits)
            / f"split{seed}"
            / f"{ranking}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "cell": cell,
            "ranking": ranking,
            "n_queries": 840,
            "n_database": 1260,
            "metrics": metrics,
            "provenance": {"git_commit": None},
        }
        if curves is not None:
            doc["curves"] = curves
        path.write_text(json.dumps(doc))
        return str(path)

    def model(self, method, bits, seed, dataset="ucmd", **header) -> str:
        """The cell's model file (``models/{cell}.npz``) with ``header`` as what its
        training recorded (``stopped``, ``max_epochs``, ...); returns its path."""
        from rshash.digest import write_npz

        path = (
            self.root
            / "models"
            / dataset
            / "efficientnet_lite0"
            / "dmch_60_40"
            / method
            / str(bits)
            / f"split{seed}.npz"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, {"method": method, "bits": bits, "seed": seed, "params": {}, **header}, {})
        return str(path)

    def files(self) -> list[str]:
        """Every method x bits x seed, ranked by Hamming distance."""
        return [self.write(m, b, s) for m in self.methods for b in self.bits for s in self.seeds]

    def outputs(self, name="exp", root=None):
        """The CSV, markdown and meta JSON paths of a table."""
        d = (root or self.root) / "tables"
        return d / f"{name}.csv", d / f"{name}.md", d / f"{name}.meta.json"

    def table(self, files, name="exp", **options):
        """``build_table`` of ``files`` into :meth:`outputs` (``options``: its keywords, such
        as protocols and reference); returns the CSV, markdown and meta JSON paths."""
        from rshash.report.tables import build_table

        csv, md, meta = self.outputs(name)
        build_table(name, files, csv, md, meta, **options)
        return csv, md, meta

    @staticmethod
    def codes(path, n_query=60, n_classes=3, bits=16, seed=0) -> None:
        """A codes file: query codes clustered by class, plus 5 database rows."""
        import numpy as np

        from rshash.codes import pack_bits, write_codes

        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(n_classes), n_query // n_classes)
        centers = rng.integers(0, 2, size=(n_classes, bits))
        flips = rng.random((n_query, bits)) < 0.1
        bits01 = np.where(flips, 1 - centers[labels], centers[labels])
        # a few database rows that must not be plotted
        db = rng.integers(0, 2, size=(5, bits))
        all_bits = np.vstack([bits01, db])
        role = ["query"] * n_query + ["database"] * 5
        label = np.concatenate([labels, np.zeros(5, int)])
        write_codes(
            path,
            [f"img{i}" for i in range(len(role))],
            label,
            role,
            pack_bits(all_bits),
            all_bits.astype(np.float32),
            bits,
        )


@pytest.fixture
def report_data(tmp_path) -> ReportData:
    return ReportData(tmp_path)


@pytest.fixture
def metric_files(report_data) -> list[str]:
    return report_data.files()


def _blobs(n_classes=4, per_class=20, dim=32, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(0, 1, (n_classes, dim))[y] + noise * rng.normal(0, 1, (len(y), dim))
    return X.astype(np.float32), y


@pytest.fixture(scope="session")
def blobs():
    """``blobs(n_classes=4, per_class=20, dim=32, seed=0, noise=0.5) -> (X, y)``: Gaussian
    classes, well-separated centres (standard normal) plus noise of standard deviation
    ``noise`` (the method tests)."""
    return _blobs


@pytest.fixture(scope="session")
def map_all():
    """``map_all(q, yq, d, yd)``: mAP@all of encoded queries ``q`` against an encoded
    database ``d`` (Hamming ranking)."""
    from rshash.evaluate import evaluate_arrays

    def score(q, yq, d, yd):
        return evaluate_arrays(np.packbits(q.bits, 1), yq, np.packbits(d.bits, 1), yd)["map_all"]

    return score


@pytest.fixture(scope="session")
def demo_map_all(demo_features, map_all):
    """``demo_map_all(model) -> float``: mAP@all of a fitted model's codes of the
    demo_features queries against its codes of the database."""
    d = demo_features

    def score(model):
        q, db = model.encode(d["X_query"]), model.encode(d["X_database"])
        return map_all(q, d["y_query"], db, d["y_database"])

    return score


@pytest.fixture(scope="session")
def class_head_accuracy():
    """``class_head_accuracy(enc, y) -> float``: checks that encoded rows ``enc`` carry a
    class head (class_prob float32 over classes 0..max(y), rows summing to 1, and
    predicted_label its argmax) and returns the share of rows predicted as ``y``."""

    def check(enc, y):
        n_classes = int(np.max(y)) + 1
        assert enc.class_prob.shape == (len(enc.bits), n_classes)
        assert enc.class_prob.dtype == np.float32
        np.testing.assert_allclose(enc.class_prob.sum(1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(enc.predicted_label, enc.class_prob.argmax(1))
        return float((enc.predicted_label == y).mean())

    return check


@pytest.fixture(scope="session")
def hamming_by_class():
    """``hamming_by_class(q, yq, d, yd) -> (same, other)``: the mean Hamming distance of
    encoded queries ``q`` to the database codes ``d`` of their own class and of the others."""

    def means(q, yq, d, yd):
        ham = (q.bits[:, None, :] != d.bits[None, :, :]).sum(2)
        same = np.asarray(yq)[:, None] == np.asarray(yd)[None, :]
        return float(ham[same].mean()), float(ham[~same].mean())

    return means


# What the quality tests train a method with on demo_features (144 train rows and 36
# val rows, 32 bits, seed 0) where its defaults do not fit those rows: batches that fit
# them. A method absent here trains at its defaults, to convergence on the val rows as the
# pipeline does (every supervised method on pooled features has the quality floor of
# test_methods.py, whether listed here or not).
DEMO_BUDGETS = {
    "dmch": {"images_per_class": 14},  # 3 classes x 14 (14-15 train images a class)
    "dpsh": {"batch_size": 30},
    "dsh": {"batch_size": 30},
    "greedyhash": {"batch_size": 16},
    "hashnet": {"batch_size": 36},
    # ksh at its defaults: all 180 train-part rows are anchors and labelled
}


@pytest.fixture(scope="session")
def demo_encoded(demo_features):
    """``demo_encoded(name) -> (model, query codes, database codes)``: method ``name``
    fitted at 32 bits, seed 0, with its DEMO_BUDGETS entry (if any) as the pipeline fits it: a
    trained method on demo_features' train rows, stopping on its val rows, a closed-form
    one on both; once per session (the quality floor and a method's own checks share it)."""
    from rshash.methods import build
    from rshash.methods.convergence import Validation

    fitted = {}

    def get(name):
        if name not in fitted:
            d = demo_features
            model = build(name, 32, seed=0, **DEMO_BUDGETS.get(name, {}))
            if model.trained():
                model.fit(d["X_train"], d["y_train"], Validation(d["X_val"], d["y_val"]))
            else:
                X = np.concatenate([d["X_train"], d["X_val"]])
                y = np.concatenate([d["y_train"], d["y_val"]])
                model.fit(X, y if model.supervised else None)
            fitted[name] = (model, model.encode(d["X_query"]), model.encode(d["X_database"]))
        return fitted[name]

    return get


def _snakemake(repo, workdir, *args, check=True, configfile=None, cores=2, env=None):
    """Run the workflow (``repo``'s Snakefile) in ``workdir`` on ``workdir/config.yaml``
    (or ``configfile``) with ``--cores cores`` (none when None) and ``env`` added to the
    environment; the CompletedProcess (text). ``check``: a failure fails the test with the
    end of its output."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--configfile",  # first: it takes every value up to the next option
        str(configfile or workdir / "config.yaml"),
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        *(["--cores", str(cores)] if cores else []),
        *args,
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=os.environ | (env or {})
    )
    if check and out.returncode != 0:
        pytest.fail(
            f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
        )
    return out


@pytest.fixture(scope="session")
def snakemake():
    """``snakemake(repo, workdir, *args, check=True, configfile=None, cores=2, env=None)``:
    run the workflow in ``workdir``, as the end-to-end tests do."""
    return _snakemake


def _planned(output: str) -> dict[str, int]:
    import re

    stats = output.split("Job stats:")[-1] if "Job stats:" in output else ""
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"
    }


@pytest.fixture(scope="session")
def planned():
    """``planned(output) -> {rule: count}``: the 'Job stats' table of a dry run."""
    return _planned


def _experiment(dataset: str, methods: list[str]) -> dict:
    return {
        "datasets": [dataset],
        "backbones": ["efficientnet_lite0"],
        "protocols": ["dmch_60_40"],
        "seeds": [0],
        "methods": methods,
        "bits": [16],
    }


@pytest.fixture(scope="session")
def small_experiment():
    """``small_experiment(dataset, methods)``: a config experiment entry of one dataset,
    EfficientNet-Lite0, dmch_60_40 split seed 0 and 16 bits (the end-to-end tests)."""
    return _experiment


def _synthetic_features(
    root: Path, outputs=("features.h5",), threads=2, batch_size=32, kind="features", **synth
):
    """Synthetic tiles ``generate(root / "images", **synth)``, their manifest
    ``root/manifest.parquet`` and EfficientNet-Lite0 outputs of ``kind`` on the CPU, once
    per name in ``outputs`` (under ``root``); returns the manifest."""
    from rshash.data.manifest import scan_folder, write_manifest
    from rshash.data.synthetic import generate
    from rshash.features import extract

    generate(root / "images", **synth)
    manifest = scan_folder(root / "images")
    write_manifest(manifest, root / "manifest.parquet")
    for name in outputs:
        extract(
            root / "manifest.parquet",
            "efficientnet_lite0",
            root / name,
            threads=threads,
            batch_size=batch_size,
            device="cpu",
            progress=False,
            kind=kind,
        )
    return manifest


@pytest.fixture(scope="session")
def synthetic_features():
    """``synthetic_features(root, outputs=("features.h5",), threads=2, batch_size=32,
    kind="features", **generate_args) -> manifest``: synthetic images, their manifest and
    CPU backbone outputs under ``root``."""
    return _synthetic_features


HF_REVISION = "4c1e3a9b5f0d2e7a8c6b1d3f5e7a9c0b2d4f6e8a"


def save_to_hf_cache(hf_home: Path, repo_id: str, filename: str, write) -> Path:
    """A file of hub repository ``repo_id`` where huggingface_hub's download puts it, in
    its cache layout under ``hf_home``: hub/models--ORG--NAME/blobs/<sha256>,
    snapshots/<revision>/<filename> (a relative symlink to the blob) and refs/main (the
    revision). ``write(path)`` writes the file's content. Returns the snapshot file."""
    import hashlib

    folder = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    tmp = folder / "blobs" / "incoming"
    write(tmp)
    blob = folder / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(blob)
    snapshot = folder / "snapshots" / HF_REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(HF_REVISION)
    return snapshot / filename


def save_timm_to_hf_cache(hf_home: Path, model: str, seed: int = 0) -> Path:
    """Random weights of timm ``model`` written where timm's own download puts them:
    hub/models--timm--<model>/snapshots/<revision>/model.safetensors under ``hf_home``
    (:func:`save_to_hf_cache`). Returns the snapshot file."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = timm.create_model(model, pretrained=False)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    return save_to_hf_cache(
        hf_home, f"timm/{model}", "model.safetensors", lambda path: save_file(state, str(path))
    )


@pytest.fixture(scope="session")
def hf_cache_put():
    """``hf_cache_put(hf_home, repo_id, filename, write) -> file``: a file of a hub
    repository in the Hugging Face cache layout (:func:`save_to_hf_cache`)."""
    return save_to_hf_cache


@pytest.fixture(scope="session")
def timm_cache():
    """``timm_cache(hf_home, model, seed=0) -> file``: random weights of a timm model in
    the Hugging Face cache layout (tests point HF_HOME at ``hf_home``)."""
    return save_timm_to_hf_cache


@pytest.fixture
def use_hf_cache(monkeypatch):
    """``use_hf_cache(hf_home)``: this test reads the Hugging Face cache at ``hf_home``
    only (its hub folder; the other cache variables unset), offline."""

    def use(hf_home):
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    return use


@pytest.fixture
def caught_figure(monkeypatch):
    """``caught_figure(plot, rc=None)``: run ``plot()`` (under the matplotlib ``rc``
    settings) with ``Figure.savefig`` caught (nothing rendered, an empty file written);
    the figure it would have saved."""
    import matplotlib
    from matplotlib.figure import Figure

    def catch(plot, rc=None):
        figures = []

        def caught(fig, fname, *args, **kwargs):
            figures.append(fig)
            open(fname, "wb").close()

        with monkeypatch.context() as m, matplotlib.rc_context(rc or {}):
            m.setattr(Figure, "savefig", caught)
            plot()
        assert len(figures) == 1, f"{len(figures)} figures saved"
        return figures[0]

    return catch


@pytest.fixture
def drawn_literally(caught_figure):
    """``drawn_literally(plot, lines, any_of=())``: run ``plot()`` under a matplotlibrc
    with ``text.usetex`` on (the figure is caught at ``savefig``, not rendered: no LaTeX is
    needed) and check that each of ``lines`` (and at least one of ``any_of``) is one line
    of a text artist of the figure, and that every text artist holding one of them is
    parsed neither by mathtext nor by LaTeX (``get_parse_math()`` and ``get_usetex()``
    false): it is drawn exactly as written."""
    from matplotlib.text import Text

    def check(plot, lines, any_of=()):
        fig = caught_figure(plot, {"text.usetex": True})
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
        drawn = [t.get_text() for t in texts]

        def holding(line):
            return [t for t in texts if line in t.get_text().split("\n")]

        for line in lines:
            assert holding(line), f"{line!r} is not drawn as written: {drawn}"
        if any_of:
            assert any(holding(line) for line in any_of), f"none of {any_of} drawn: {drawn}"
        for line in [*lines, *any_of]:
            for t in holding(line):
                assert not t.get_parse_math(), f"{t.get_text()!r} goes through mathtext"
                assert not t.get_usetex(), f"{t.get_text()!r} goes to LaTeX"

    return check


def _random_images(root: Path, sizes, class_folders: bool = False):
    """Random RGB images of the (h, w) ``sizes``, two classes alternating (in a folder
    each when ``class_folders``), and their manifest beside them: (its path, the table)."""
    import pandas as pd
    from PIL import Image

    from rshash.data.manifest import write_manifest

    rng = np.random.default_rng(0)
    rows = []
    for i, (h, w) in enumerate(sizes):
        image_id = f"c{i % 2}/img{i}" if class_folders else f"img{i}"
        path = root / f"{image_id}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        rows.append((image_id, str(path), i % 2, f"c{i % 2}"))
    manifest = pd.DataFrame(rows, columns=["image_id", "path", "label", "class_name"])
    write_manifest(manifest, root / "manifest.parquet")
    return root / "manifest.parquet", manifest


@pytest.fixture(scope="session")
def random_images():
    """``random_images(root, sizes, class_folders=False)``: see :func:`_random_images`."""
    return _random_images


GEO_DIR = UCMD_DIR / "geo" / "naip"  # real NAIP scenes: ten dates of one place, UTM 14N
GEO_ENTRY = {
    "scenes": {
        "folder": str(GEO_DIR),
        "date_pattern": r"_(?P<date>\d{8})\.tif$",
        "date_format": "%Y%m%d",
    },
    "chip": {"size": 128},
}


@pytest.fixture(scope="session")
def geo_index(tmp_path_factory) -> Path:
    """An index of two geo-referenced NAIP scenes (chips of 128 px: 70 chips, ITQ at 32
    bits on EfficientNet-Lite0 features; about 20 s on 2 cores), built once per test run
    by whichever xdist worker needs it first, under a file lock."""
    from filelock import FileLock

    from rshash.archive import geo
    from rshash.archive.scenes import list_scenes

    if not GEO_DIR.is_dir():
        pytest.skip(f"NAIP scenes not found at {GEO_DIR} (set RSHASH_TEST_DATA_DIR)")
    root = shared_dir(tmp_path_factory, "geo_index")
    index = root / "index"
    with FileLock(root / "build.lock"):
        if not index.exists():  # published in one rename: present means complete
            ids = [s.id for s in list_scenes(GEO_ENTRY["scenes"])][:2]
            feats = [
                geo.embed_scene(GEO_ENTRY, i, "efficientnet_lite0", root / f"{i}.h5", threads=2)
                for i in ids
            ]
            geo.fit_hash(feats, root / "hash.npz", bits=32)
            parts = [geo.encode_scene(f, root / "hash.npz", root / f"{f.stem}.part") for f in feats]
            geo.publish_scenes(parts, index)
    return index
