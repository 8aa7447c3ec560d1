"""Killing `rshash extract` / `rshash train` midway (SIGTERM, SIGKILL) leaves no
partial output a later run would trust, and the rerun gives the same result as
an uninterrupted run."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rshash.codes import read_codes
from rshash.data.splits import make_split, write_split
from rshash.features import read_features
from rshash.train import train_cell

# dpsh, small enough to train in about a second
PARAMS = '{"max_epochs": 400, "hidden": [64], "batch_size": 8, "lr": 0.005}'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic_features):
    """4 classes x 8 synthetic 64 px images, their manifest and split, and the
    outputs of uninterrupted runs (through the library)."""
    root = tmp_path_factory.mktemp("interrupt")
    manifest = synthetic_features(
        root, ["ref.h5"], threads=1, batch_size=1, n_classes=4, per_class=8, size=64, seed=0
    )
    write_split(make_split(manifest, {"train_fraction": 0.5}, seed=0), root / "split.parquet")
    train_cell(
        root / "ref.h5",
        root / "split.parquet",
        "dpsh",
        16,
        0,
        json.loads(PARAMS),
        root / "ref_model.npz",
        root / "ref_codes.parquet",
    )
    return root


def _run_until(argv, ready, sig, log):
    """Start the CLI, wait until ``ready()`` (the job has started writing or
    fitting), send ``sig``; return the exit code."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rshash.cli", *argv], stderr=err, stdout=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, f"finished before the signal: {log.read_text()}"
        assert time.monotonic() < deadline, "never started"
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.wait(timeout=60)


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_extraction(tiny, tmp_path, sig):
    out = tmp_path / "features.h5"
    if sig == signal.SIGKILL:  # a previous complete output must survive the kill intact
        shutil.copy(tiny / "ref.h5", out)
    before = out.read_bytes() if out.exists() else None
    argv = [
        "extract",
        "--manifest",
        str(tiny / "manifest.parquet"),
        "--backbone",
        "efficientnet_lite0",
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--device",
        "cpu",
    ]
    code = _run_until(argv, lambda: _temps(tmp_path), sig, tmp_path / "log")
    assert code == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    if before is None and out.exists():
        # the signal landed where Python drops exceptions (a weakref callback): the run
        # went on to a complete, sealed file, and still exited 143. It is the reference.
        assert sig == signal.SIGTERM and "terminated (signal 15)" in (tmp_path / "log").read_text()
        np.testing.assert_array_equal(
            read_features(out).features, read_features(tiny / "ref.h5").features
        )
    elif before is None:
        assert not out.exists()
    else:
        assert out.read_bytes() == before
    if sig == signal.SIGTERM:
        assert _temps(tmp_path) == []  # cleaned up on the way out
    else:  # killed outright: only the hidden temporary name, which nothing reads
        assert all(t.startswith(".features.h5.tmp") for t in _temps(tmp_path))
    assert (
        subprocess.run([sys.executable, "-m", "rshash.cli", *argv], capture_output=True).returncode
        == 0
    )
    assert _temps(tmp_path) == []
    got, ref = read_features(out), read_features(tiny / "ref.h5")
    np.testing.assert_array_equal(got.features, ref.features)
    np.testing.assert_array_equal(got.image_id, ref.image_id)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_training(tiny, tmp_path, sig):
    model, codes = tmp_path / "m" / "model.npz", tmp_path / "c" / "codes.parquet"
    argv = [
        "train",
        "--features",
        str(tiny / "ref.h5"),
        "--split",
        str(tiny / "split.parquet"),
        "--method",
        "dpsh",
        "--bits",
        "16",
        "--seed",
        "0",
        "--params",
        PARAMS,
        "--model",
        str(model),
        "--codes",
        str(codes),
    ]
    log = tmp_path / "log"
    code = _run_until(argv, lambda: "fitting" in log.read_text(), sig, log)
    assert code == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    for out in (model, codes):
        assert not out.exists()
        assert not out.parent.exists() or _temps(out.parent) == []
    assert (
        subprocess.run([sys.executable, "-m", "rshash.cli", *argv], capture_output=True).returncode
        == 0
    )
    assert codes.read_bytes() == (tiny / "ref_codes.parquet").read_bytes()
    ref = read_codes(tiny / "ref_codes.parquet")
    np.testing.assert_array_equal(read_codes(codes).packed, ref.packed)
