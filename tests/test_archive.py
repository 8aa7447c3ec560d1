"""The archive as people use it, without a model: one query path (the CLI, the
server's API and the Python call agree, query by query, with a plain reference), and
an index that is never lost or half-written by a damaged manifest, a wrong path or a
folder that cannot be written.

The index is built from codes (clustered, so distances tie a lot) in several segments,
as appends make them."""

import csv
import io
import json
import os
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rshash.archive import Rows, create_index, parts_dir, read_index, remove_images
from rshash.archive import query as archive_query
from rshash.archive import store as archive_store
from rshash.archive.store import FORMAT, VERSION
from rshash.cli import main
from rshash.digest import PLACEHOLDER, write_sealed
from rshash.serve.app import create_app

BITS, N, CLASSES = 32, 40, ["field", "lake", "road"]


@pytest.fixture(scope="module")
def codes_index(tmp_path_factory):
    """40 codes of 3 classes in 3 segments (16, 16, 8 rows)."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(7)
    centres = rng.integers(0, 256, (3, BITS // 8), dtype=np.uint8)
    label = rng.integers(0, 3, N)
    packed = centres[label].copy()
    flips = rng.integers(0, BITS, (N, 3))
    for i in range(N):
        bits = np.unpackbits(packed[i])
        bits[flips[i, : rng.integers(0, 4)]] ^= 1
        packed[i] = np.packbits(bits)
    ids = np.array([f"{CLASSES[c]}/tile_{i:02d}" for i, c in enumerate(label)])
    rows = Rows(packed, ids, np.full(N, ""), label.astype(np.int64))
    header = {"format": FORMAT, "version": VERSION, "backbone": "efficientnet_lite0",
              "method": "lsh", "bits": BITS, "model": None, "model_sha256": None,
              "source": "codes", "class_names": CLASSES}  # fmt: skip
    mp = pytest.MonkeyPatch()
    mp.setattr(archive_store, "SEGMENT_MAX", 16)
    index = create_index(root / "codes.idx", header, rows)
    mp.undo()
    assert [s.n for s in index.segments] == [16, 16, 8]
    return {"path": root / "codes.idx", "rows": rows}


def reference(rows, q, k, offset=0, label=None, max_distance=None, pos=(), neg=()):
    """Plain Python: every image scored, sorted by (score, row), filtered, paged."""
    bits = np.unpackbits(rows.packed, axis=1).astype(int)
    row_of = {str(i): r for r, i in enumerate(rows.image_id)}
    d = np.abs(bits - bits[row_of[q]]).sum(1)
    score = d.astype(float)
    if pos:
        score += 0.75 * np.mean([np.abs(bits - bits[row_of[p]]).sum(1) for p in pos], 0)
    if neg:
        score -= 0.15 * np.mean([np.abs(bits - bits[row_of[n]]).sum(1) for n in neg], 0)
    keep = [
        r
        for r in range(len(d))
        if (label is None or rows.label[r] == label)
        and (max_distance is None or d[r] <= max_distance)
    ]
    keep.sort(key=lambda r: (score[r], r))
    return [(str(rows.image_id[r]), int(d[r])) for r in keep[offset : offset + k]]


FILTERS = [
    {},
    {"offset": 3},
    {"class_name": "lake"},
    {"max_distance": 2},
    {"max_distance": 1, "offset": 1},
    {"relevant": ["road/tile_05"], "not_relevant": ["field/tile_00"]},
    {"class_name": "field", "max_distance": 3, "not_relevant": ["lake/tile_01"]},
]


def fixed_ids(rows):
    """The marked ids of FILTERS, whatever class the seed gave each tile."""
    by_name = {i.split("/")[1]: str(i) for i in rows.image_id}
    return lambda ids: [by_name[i.split("/")[1]] for i in ids]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "plain")
def test_cli_api_and_python_call_agree_on_every_query(codes_index, filters, capsys):
    rows, k = codes_index["rows"], 7
    marked = fixed_ids(rows)
    f = {**filters}
    for key in ("relevant", "not_relevant"):
        if key in f:
            f[key] = marked(f[key])
    offset = f.pop("offset", 0)
    ids = [str(i) for i in rows.image_id]
    index = read_index(codes_index["path"])
    label = CLASSES.index(f["class_name"]) if "class_name" in f else None

    pages = archive_query.search(index, np.concatenate([index.code_of(r) for r in range(N)]), k,
                         offset, **f)  # fmt: skip
    python = [[(index.image_id_of(r), int(d)) for r, d in zip(p.rows, p.distance)] for p in pages]

    argv = ["search", "--index", str(codes_index["path"]), "--top", str(k), "--json"]
    argv += ["--offset", str(offset)] if offset else []
    argv += ["--class", f["class_name"]] if "class_name" in f else []
    argv += ["--max-distance", str(f["max_distance"])] if "max_distance" in f else []
    for flag, key in (("--relevant", "relevant"), ("--not-relevant", "not_relevant")):
        for i in f.get(key, []):
            argv += [flag, i]
    for i in ids:
        argv += ["--id", i]
    capsys.readouterr()
    assert main(argv) == 0
    cli = [[(h["image_id"], h["distance"]) for h in q["results"]] for q in json.loads(
        capsys.readouterr().out)]  # fmt: skip

    params = {"k": k, "offset": offset}
    if "class_name" in f:
        params["class"] = f["class_name"]
    if "max_distance" in f:
        params["max_distance"] = f["max_distance"]
    params["pos"], params["neg"] = f.get("relevant", []), f.get("not_relevant", [])
    with TestClient(create_app(codes_index["path"])) as client:
        api = []
        for i in ids:
            r = client.get("/api/search", params={**params, "id": i})
            assert r.status_code == 200, r.text
            api.append([(h["image_id"], h["distance"]) for h in r.json()["results"]])

    want = [
        reference(
            rows,
            i,
            k,
            offset,
            label,
            f.get("max_distance"),
            f.get("relevant", ()),
            f.get("not_relevant", ()),
        )  # fmt: skip
        for i in ids
    ]
    assert python == want
    assert cli == want
    assert api == want
    if not f and not offset:  # the faiss-shaped call: the same ranking
        D, I = index.search(np.concatenate([index.code_of(r) for r in range(N)]), k)
        assert [[(index.image_id_of(r), int(d)) for r, d in zip(i, dd)] for i, dd in
                zip(I, D)] == want  # fmt: skip


def copy_index(src, dst):
    shutil.copy(src, dst)
    shutil.copytree(parts_dir(src), parts_dir(dst))
    return dst


def listing(path):
    return sorted(os.listdir(parts_dir(path)))


def damage(kind, path):
    data = bytearray(path.read_bytes())
    if kind == "segment name":  # one character of a segment's name, the digest kept
        text = data.decode()
        name = json.loads(text)["segments"][0]["name"]
        data = bytearray(text.replace(name, name[:-1] + ("0" if name[-1] != "0" else "1")).encode())
    elif kind == "flipped":
        data[len(data) // 2] ^= 0x40
    elif kind == "truncated":
        data = data[: len(data) // 3]
    elif kind == "random":
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), np.uint8).tobytes())
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["segment name", "flipped", "truncated", "random"])
def test_a_damaged_manifest_loses_nothing_and_says_one_line(codes_index, tmp_path, kind, capsys):
    index = copy_index(codes_index["path"], tmp_path / "x.idx")
    before = listing(index)
    damage(kind, index)
    for argv in (
        ["index", "remove", "--index", str(index), "lake/tile_01"],
        [
            "index",
            "append",
            "--index",
            str(index),
            "--images",
            str(tmp_path),
            "--model",
            str(tmp_path / "none.npz"),
        ],  # fmt: skip
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(index) in err, err
        assert listing(index) == before  # every segment file is still there
    with pytest.raises(Exception, match=str(index)):
        remove_images(index, ["lake/tile_01"])
    assert listing(index) == before


def not_an_index(kind, path):
    if kind == "features file":
        import h5py

        with h5py.File(path, "w") as f:
            f["features"] = np.zeros((2, 3), np.float32)
    elif kind == "json without segments":
        doc = {"digest": PLACEHOLDER, "format": FORMAT, "version": VERSION, "bits": 32}
        write_sealed(path, lambda tmp: open(tmp, "w").write(json.dumps(doc, indent=1)))
    elif kind == "text file":
        path.write_bytes(b"\xff\xfe not an index \x00\n")


@pytest.mark.parametrize("kind", ["features file", "json without segments", "text file", "missing"])
def test_a_path_that_is_no_index_gets_one_line_and_no_parts_folder(tmp_path, kind, capsys):
    path = tmp_path / "thing.idx"
    not_an_index(kind, path)
    for argv in (
        ["index", "remove", "--index", str(path), "a"],
        ["index", "append", "--index", str(path), "--images", str(tmp_path)],
        ["search", "--index", str(path), "--id", "a"],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(path) in err, err
        assert not parts_dir(path).exists()
    with pytest.raises(Exception, match=str(path)):
        read_index(path)


def test_an_index_that_cannot_be_written_gets_one_line(codes_index, tmp_path, capsys):
    """A lock that cannot be opened (its name taken by a folder), and an index whose
    folder cannot be made (under /proc): one line each, and nothing left behind."""
    index = copy_index(codes_index["path"], tmp_path / "x.idx")
    (parts_dir(index) / ".lock").unlink(missing_ok=True)
    (parts_dir(index) / ".lock").mkdir()
    before = listing(index)
    for argv in (
        ["index", "remove", "--index", str(index), "lake/tile_01"],
        ["index", "append", "--index", str(index), "--images", str(tmp_path)],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "cannot write the index" in err, err
        assert listing(index) == before
    rows = codes_index["rows"]
    header = {"format": FORMAT, "version": VERSION, "bits": BITS, "class_names": []}
    with pytest.raises(Exception, match="cannot write the index"):
        create_index("/proc/rshash-test.idx", header, rows)


def test_csv_export_keeps_negative_scores_numbers(codes_index):
    """A feedback score below zero is a number in the CSV (only text is escaped)."""
    rows = codes_index["rows"]
    bits = np.unpackbits(rows.packed, axis=1).astype(int)
    far = int(np.argmax(np.abs(bits - bits[0]).sum(1)))
    with TestClient(create_app(codes_index["path"])) as client:
        r = client.get("/api/search", params={"id": str(rows.image_id[0]), "k": 3,
                       "neg": str(rows.image_id[far]), "format": "csv"})  # fmt: skip
    assert r.status_code == 200, r.text
    first = list(csv.DictReader(io.StringIO(r.text)))[0]
    assert float(first["score"]) < 0 and first["score"].startswith("-"), first


def test_thumbnails_keep_the_pixel_limit_of_uploads(tmp_path):
    """An indexed file over the upload limit (40 megapixels) is refused before it is
    decoded, not shrunk at the cost of a second and 0.7 GB per request."""
    from PIL import Image

    from rshash.serve import app as serve_app

    big = tmp_path / "big.png"
    side = int(serve_app.MAX_UPLOAD_PIXELS**0.5) + 10
    Image.new("RGB", (side, side), (30, 90, 40)).save(big)
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (30, 90, 40)).save(small)
    rows = Rows(np.zeros((2, 4), np.uint8), np.array(["big", "small"]),
                np.array([str(big), str(small)]), np.array([-1, -1]))  # fmt: skip
    header = {"format": FORMAT, "version": VERSION, "bits": 32, "class_names": []}
    index = create_index(tmp_path / "big.idx", header, rows)
    with TestClient(create_app(index.location)) as client:
        assert client.get("/api/images/small/thumbnail").status_code == 200
        r = client.get("/api/images/big/thumbnail")
    assert r.status_code == 413 and "pixels" in r.json()["detail"], r.text
