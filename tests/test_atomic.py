"""rshash.atomic.atomic_write: the complete new file or nothing, and a failed write is one
RshashError naming the output."""

import subprocess
import sys

import pytest

from rshash import RshashError
from rshash.atomic import atomic_write

_FULL = """
import resource, signal, sys
from pathlib import Path
from rshash import RshashError
from rshash.atomic import atomic_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    atomic_write(sys.argv[1], lambda tmp: Path(tmp).write_bytes(b"x" * 100_000))
except RshashError as err:
    print(err)
    sys.exit(2)
"""


def test_full_disk_is_one_error_naming_the_output_and_leaves_nothing(tmp_path):
    out = tmp_path / "out" / "table.csv"
    proc = subprocess.run(
        [sys.executable, "-c", _FULL, str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.strip() == f"{out}: cannot write: File too large"
    assert proc.stderr == ""
    assert list(out.parent.iterdir()) == []


def test_unwritable_folder_names_the_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    out = blocker / "sub" / "table.csv"
    with pytest.raises(RshashError, match=f"^{out}: cannot write: "):
        atomic_write(out, lambda tmp: open(tmp, "w").write("x"))


def test_old_file_survives_a_failed_write(tmp_path):
    out = tmp_path / "table.csv"
    out.write_text("old")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(RshashError, match="No space left on device"):
        atomic_write(out, write)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
