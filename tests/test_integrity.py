"""Cached artefacts carry a digest of their content, checked before any parser reads them:
a flipped byte anywhere in a codes, split, manifest, features or model file either stops
with one line naming the file or reads back exactly the original arrays."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.codes import pack_bits, read_codes, write_codes
from rshash.data.manifest import read_manifest, write_manifest
from rshash.data.splits import read_split, write_split
from rshash.digest import verify
from rshash.features import read_arrays, read_features, write_arrays
from rshash.methods import build
from rshash.methods.base import load_model

N, BITS, DIM = 40, 32, 24
POSITIONS = 160  # at least 137 byte positions per file (the review's count)


def _codes(path):
    rng = np.random.default_rng(0)
    bits01 = rng.integers(0, 2, (N, BITS), dtype=np.uint8)
    write_codes(
        path,
        [f"c{i % 4}/img{i:02d}" for i in range(N)],
        np.arange(N) % 4,
        ["query" if i % 3 == 0 else "database" for i in range(N)],
        pack_bits(bits01),
        rng.normal(size=(N, BITS)).astype(np.float32),
        BITS,
        class_prob=rng.random((N, 4)).astype(np.float32),
        predicted_label=rng.integers(0, 4, N),
    )


def _codes_arrays(path):
    c = read_codes(path)
    return [c.image_id, c.label, c.role, c.packed, c.value, c.class_prob, c.predicted_label]


def _features(path):
    rng = np.random.default_rng(1)
    write_arrays(
        path,
        [f"c{i % 4}/img{i:02d}" for i in range(N)],
        np.arange(N) % 4,
        {"features": rng.normal(size=(N, DIM)).astype(np.float32)},
        {"backbone": "efficientnet_lite0"},
    )


def _features_arrays(path):
    f = read_features(path)
    return [f.features, f.image_id, f.label]


def _split(path):
    ids = [f"c{i % 4}/img{i:02d}" for i in range(N)]
    write_split(
        pd.DataFrame(
            {
                "image_id": ids,
                "role": ["train", "query"] * (N // 2),
                "db_order": np.arange(N, dtype=np.int64),
            }
        ),
        path,
    )


def _split_arrays(path):
    return [read_split(path).to_numpy()]


def _manifest(path):
    write_manifest(
        pd.DataFrame(
            {
                "image_id": [f"c/i{i}" for i in range(N)],
                "path": [f"/d/c/i{i}.jpg" for i in range(N)],
                "label": np.zeros(N, dtype=np.int64),
                "class_name": "c",
            }
        ),
        path,
    )


def _manifest_arrays(path):
    return [read_manifest(path).to_numpy()]


def _model(path):
    rng = np.random.default_rng(2)
    m = build("itq", 16, seed=0, n_iter=5)
    m.fit(rng.normal(size=(60, DIM)).astype(np.float32))
    m.save(path)


def _model_arrays(path):
    method, header = load_model(path)
    x = np.random.default_rng(3).normal(size=(10, DIM)).astype(np.float32)
    return [method.encode(x).value, np.array(sorted(header))]


KINDS = {
    "codes.parquet": (_codes, _codes_arrays),
    "features.h5": (_features, _features_arrays),
    "split.parquet": (_split, _split_arrays),
    "manifest.parquet": (_manifest, _manifest_arrays),
    "model.npz": (_model, _model_arrays),
}


def _same(a, b):
    return all(
        (x is None and y is None) or np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", list(KINDS))
def test_a_flipped_byte_is_an_error_naming_the_file_or_changes_nothing(tmp_path, name):
    write, read = KINDS[name]
    path = tmp_path / name
    write(path)
    original_bytes = path.read_bytes()
    original = read(path)
    rng = np.random.default_rng(7)
    n = len(original_bytes)
    positions = rng.choice(n, size=min(POSITIONS, n), replace=False)
    refused = 0
    for pos in positions:
        flipped = bytearray(original_bytes)
        flipped[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(flipped))
        try:
            got = read(path)
        except RshashError as err:
            message = str(err)
            assert str(path) in message and "\n" not in message, message
            refused += 1
            continue
        assert _same(got, original), f"byte {pos} flipped: different arrays, no error"
    assert refused == len(positions)  # every byte is covered by the digest


def test_random_bytes_in_a_features_file_are_refused(tmp_path):
    path = tmp_path / "f.h5"
    _features(path)
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start : start + 4096] = np.random.default_rng(0).bytes(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(RshashError, match="content digest mismatch"):
        read_features(path)


def test_non_finite_features_are_refused_naming_the_first_bad_row(tmp_path):
    x = np.ones((6, 3), dtype=np.float32)
    x[4, 1], x[5, 0] = np.nan, np.inf
    path = tmp_path / "f.h5"
    write_arrays(path, [f"a/{i}" for i in range(6)], np.zeros(6), {"features": x})
    with pytest.raises(
        RshashError,
        match=r"f\.h5: non-finite values in 'features' "
        r"\(2 row\(s\), the first row 4, image a/4\)",
    ):
        read_features(path)
    maps = np.ones((6, 2, 2, 2), dtype=np.float16)
    maps[3, 1, 0, 1] = np.inf
    write_arrays(path, [f"a/{i}" for i in range(6)], np.zeros(6), {"maps": maps})
    with pytest.raises(RshashError, match="the first row 3, image a/3"):
        read_arrays(path)


def test_a_file_without_a_digest_is_refused(tmp_path):
    """An older rshash's output (or a foreign file) carries no digest: refused, not read."""
    path = tmp_path / "split.parquet"
    pd.DataFrame({"image_id": ["a"], "role": ["train"], "db_order": [-1]}).to_parquet(path)
    with pytest.raises(RshashError, match="split.parquet: no rshash content digest"):
        read_split(path)


def test_the_digest_is_the_file_content(tmp_path):
    """Same content, same digest; the digest of a sealed file verifies and is reported."""
    _codes(tmp_path / "a.parquet")
    _codes(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    digest = verify(tmp_path / "a.parquet")
    assert len(digest) == 64 and read_codes(tmp_path / "a.parquet").sha256 == digest


def _cli(*argv):
    return subprocess.run(
        [sys.executable, "-m", "rshash.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", ["codes", "split"])
@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_parquet_inputs_give_one_line_naming_the_file(tmp_path, name, damage):
    _codes(tmp_path / "codes.parquet")
    _split(tmp_path / "split.parquet")
    bad = tmp_path / f"{name}.parquet"
    data = bad.read_bytes()
    bad.write_bytes(
        data[: len(data) // 2] if damage == "truncated" else data[:100] + b"\x00" * 50 + data[150:]
    )
    out = _cli(
        "evaluate",
        "--codes",
        tmp_path / "codes.parquet",
        "--split",
        tmp_path / "split.parquet",
        "--out",
        tmp_path / "m.json",
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], out.stderr
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty"])
def test_damaged_model_gives_one_line_naming_the_file(tmp_path, damage):
    model = tmp_path / "model.npz"
    _model(model)
    data = model.read_bytes()
    model.write_bytes(
        {
            "truncated": data[: len(data) - 30],
            "empty": b"",
            "garbled": data[:40] + b"\xff" * 40 + data[80:],
        }[damage]
    )
    images = tmp_path / "images"
    out = _cli("index", "build", "--model", model, "--images", images, "--out", tmp_path / "i.npz")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(model) in lines[0], out.stderr
    assert not (tmp_path / "i.npz").exists()


HOSTILE = ["rshash-sha256:" + "a" * 64, "rshash-sha256:" + "0" * 64, "rshash-sha256:" + "7f" * 32]


@pytest.mark.parametrize("stem", HOSTILE)
def test_an_image_named_like_the_digest_slot_does_not_take_it(tmp_path, stem):
    """The slot is where the format puts it (the Parquet footer's key-value entry), not
    the first bytes that look like it: image names holding the marker (in data pages and
    in the footer's column statistics) read back unchanged, the file verifies, and a
    flipped byte is still refused with one line."""
    ids = [f"aa/{stem}", f"aa/{stem}x", "bb/plain", f"bb/{stem}"]
    df = pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"/data/{i}.png" for i in ids],
            "label": [0, 0, 1, 1],
            "class_name": ["aa", "aa", "bb", "bb"],
        }
    )
    write_manifest(df, tmp_path / "m.parquet")
    back = read_manifest(tmp_path / "m.parquet")
    assert list(back["image_id"]) == ids and list(back["path"]) == list(df["path"])
    verify(tmp_path / "m.parquet")

    rng = np.random.default_rng(0)
    write_codes(
        tmp_path / "c.parquet",
        ids,
        np.array([0, 0, 1, 1]),
        ["query", "database", "database", "query"],
        pack_bits(rng.integers(0, 2, (4, 16), dtype=np.uint8)),
        rng.normal(size=(4, 16)).astype(np.float32),
        16,
    )
    assert list(read_codes(tmp_path / "c.parquet").image_id) == ids

    data = bytearray((tmp_path / "m.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "bad.parquet").write_bytes(bytes(data))
    with pytest.raises(RshashError, match=r"^[^\n]*bad.parquet: content digest mismatch[^\n]*$"):
        read_manifest(tmp_path / "bad.parquet")
