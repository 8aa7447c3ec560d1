"""The benchmark scripts still run, on tiny sizes (their figures are not checked here)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_benchmark_matches_its_reference(tmp_path):
    """benchmarks/evaluate.py asserts that evaluate_cell's metrics equal the blockwise
    numpy reference on its reference queries; a mismatch exits non-zero."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/evaluate.py"),
            "--images",
            "360",
            "--classes",
            "9",
            "--bits",
            "8",
            "72",
            "--reference-queries",
            "50",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["8"], ["72"])]
    assert {(r[0], r[1]) for r in rows} >= {("8", "1"), ("72", "1")}
    assert "same mean map_all" in out.stdout


def test_convergence_benchmark_runs(tmp_path):
    """benchmarks/convergence.py on a tiny set: a stopped fit against 4x its epochs."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/convergence.py"),
            "--per-class",
            "10",
            "--methods",
            "csq",
            "--bits",
            "16",
            "--tolerance",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode in (0, 1), out.stderr
    assert "csq" in out.stdout and "yes" in out.stdout
    # how the run stopped: its row ends with it, and a cap stop is listed after the table
    # and fails the run (a cap that binds is too low)
    row = next(line for line in out.stdout.splitlines() if line.startswith("csq "))
    assert row.endswith(("patience", "cap", "cap, rising"))
    capped = not row.endswith("patience")
    assert ("stopped at the cap: none" in out.stdout) == (not capped)
    assert out.returncode == int(capped)


def test_search_scale_benchmark_prints_its_json_rows():
    """benchmarks/search_scale.py --json: standard output is one JSON list of rows with
    exactly the documented keys, a bandwidth_bound row per size and bits, and the
    exact engines agree (the script exits non-zero when their distances differ)."""
    import json

    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/search_scale.py"), "--sizes", "3000",
         "--bits", "64", "--k", "1", "5", "--engines", "rshash_flat", "rshash_mih",
         "--threads", "1", "--single", "3", "--batch", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    keys = {"engine", "distribution", "n", "bits", "k", "mode", "threads", "p50_ms", "p99_ms",
            "qps", "recall", "build_s", "memory_mb"}  # fmt: skip
    assert all(set(r) == keys for r in rows)
    assert [r["engine"] for r in rows].count("bandwidth_bound") == 1
    assert {(r["engine"], r["distribution"], r["k"], r["mode"]) for r in rows} >= {
        ("rshash_mih", "clustered", 5, "single"),
        ("rshash_flat", "random", 1, "batch"),
    }
