"""End to end: index a tiny synthetic archive with a trained model, search it from the CLI."""

import shutil

import numpy as np
import pytest

from rshash.archive import read_index, scan_images
from rshash.cli import main
from rshash.codes import write_codes
from rshash.data.synthetic import generate
from rshash.features import embed
from rshash.methods import build

BACKBONE = "efficientnet_lite0"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """4 classes x 6 images, their features and two lsh models (different seeds)."""
    root = tmp_path_factory.mktemp("archive")
    images = generate(root / "images", n_classes=4, per_class=6, size=64, seed=0)
    _, paths, labels, _ = scan_images(images)
    features = embed(list(paths), BACKBONE)
    models = {}
    for seed, bits in ((0, 32), (1, 32), (0, 16)):
        model = build("lsh", bits, seed=seed).fit(features)
        models[seed, bits] = root / f"lsh_{bits}_{seed}.npz"
        model.save(models[seed, bits], extra={"backbone": BACKBONE})
    return {
        "root": root,
        "images": images,
        "paths": paths,
        "labels": labels,
        "features": features,
        "models": models,
    }


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_and_search_a_labelled_folder(archive, capsys, tmp_path):
    model, index = archive["models"][0, 32], tmp_path / "archive.idx.npz"
    code, out, _ = run(
        capsys, "index", "build", "--model", model, "--images", archive["images"], "--out", index
    )
    assert code == 0 and "indexed 24 images (lsh, 32 bits, efficientnet_lite0)" in out
    idx = read_index(index)
    assert idx.header["class_names"] == sorted(p.name for p in archive["images"].iterdir())
    np.testing.assert_array_equal(idx.label, archive["labels"])

    queries = [archive["paths"][5], archive["paths"][13]]
    page = tmp_path / "page.html"
    code, out, _ = run(capsys, "search", *queries, "--index", index, "--top", 5, "--html", page)
    assert code == 0
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    for query, block, row in zip(queries, blocks, (5, 13)):
        lines = block.splitlines()
        assert lines[0] == f"query {query}"
        assert lines[1].split() == ["rank", "distance", "class", "image_id"]
        hits = [line.split() for line in lines[2:]]
        assert [int(h[0]) for h in hits] == [1, 2, 3, 4, 5]
        distances = [int(h[1]) for h in hits]
        assert distances == sorted(distances)
        # a database image finds itself first, at distance 0, with its class
        assert hits[0][1:] == ["0", idx.class_name(idx.label[row]), idx.image_id[row]]
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") == 2 * (1 + 5)


def test_flat_folder_and_codes_index(archive, capsys, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in archive["paths"][::3]:
        shutil.copy(p, flat)
    model = archive["models"][0, 32]
    code, out, _ = run(
        capsys, "index", "build", "--model", model, "--images", flat, "--out", tmp_path / "flat.npz"
    )
    assert code == 0 and "indexed 8 images" in out
    query = flat / sorted(p.name for p in flat.iterdir())[2]
    code, out, _ = run(capsys, "search", query, "--index", tmp_path / "flat.npz", "--top", 3)
    first = out.splitlines()[2].split()
    assert first == ["1", "0", "-", query.name]  # no classes in a flat folder

    # an index from a codes file: the same codes as encoding the images
    lsh = build("lsh", 32, seed=0).fit(archive["features"])
    enc = lsh.encode(archive["features"])
    codes = tmp_path / "codes.parquet"
    write_codes(
        codes,
        image_id=np.array([f"img{i}" for i in range(24)]),
        label=archive["labels"],
        role=np.full(24, "database"),
        packed=np.packbits(enc.bits.astype(bool), axis=1),
        value=enc.value,
        bits=32,
        metadata={"rshash.method": "lsh", "rshash.backbone": BACKBONE},
    )
    code, _, err = run(capsys, "index", "build", "--codes", codes, "--out", tmp_path / "c.npz")
    assert code == 0
    code, _, err = run(capsys, "search", archive["paths"][7], "--index", tmp_path / "c.npz")
    assert code == 2 and "pass --model" in err
    code, out, _ = run(
        capsys,
        "search",
        archive["paths"][7],
        "--index",
        tmp_path / "c.npz",
        "--model",
        model,
        "--top",
        1,
    )
    assert code == 0 and out.splitlines()[2].split()[1:] == ["0", "1", "img7"]


def test_clear_errors(archive, capsys, tmp_path):
    index = tmp_path / "a.npz"
    assert (
        run(
            capsys,
            "index",
            "build",
            "--model",
            archive["models"][0, 32],
            "--images",
            archive["images"],
            "--out",
            index,
        )[0]
        == 0
    )
    query = archive["paths"][0]
    code, _, err = run(capsys, "search", query, "--index", tmp_path / "none.npz")
    assert code == 2 and "index file not found" in err and "none.npz" in err

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "search", bad, "--index", index)
    assert code == 2 and "cannot read image" in err and "bad.png" in err

    code, _, err = run(
        capsys, "search", query, "--index", index, "--model", archive["models"][0, 16]
    )
    assert code == 2 and "bits 16" in err
    code, _, err = run(
        capsys, "search", query, "--index", index, "--model", archive["models"][1, 32]
    )
    assert code == 2 and "not the model the index was built with" in err
    code, _, err = run(capsys, "search", query, "--index", index, "--backbone", "resnet50")
    assert code == 2 and "efficientnet_lite0" in err and "resnet50" in err

    out = tmp_path / "never.npz"
    (tmp_path / "a_class").mkdir()
    model = archive["models"][0, 32]
    code, _, err = run(
        capsys, "index", "build", "--model", model, "--images", tmp_path, "--out", out
    )  # mixes files and folders
    assert code == 2 and "mixes" in err and not out.exists()


def test_index_build_append_remove(archive, capsys, tmp_path):
    """An index of two classes grows by the whole archive (only the images it lacks are
    encoded) and shrinks by id; an id it does not hold changes nothing."""
    part = tmp_path / "part"
    classes = sorted(p.name for p in archive["images"].iterdir())
    for name in classes[:2]:
        shutil.copytree(archive["images"] / name, part / name)
    model, index = archive["models"][0, 32], tmp_path / "grow.idx"
    code, out, _ = run(capsys, "index", "build", "--out", index, "--images", part, "--model", model)
    assert code == 0 and "indexed 12 images" in out
    code, out, _ = run(capsys, "index", "append", "--index", index, "--images", archive["images"])
    assert code == 0 and "added 12 images" in out and "(12 already there); 24 images" in out
    idx = read_index(index)
    assert sorted(idx.header["class_names"]) == classes and idx.generation == 2
    gone = [idx.image_id_of(0), idx.image_id_of(20)]
    code, out, _ = run(capsys, "index", "remove", "--index", index, *gone)
    assert code == 0 and "removed 2 images" in out and "22 images, generation 3" in out
    code, _, err = run(capsys, "index", "remove", "--index", index, "never/was")
    assert code == 2 and err.startswith("rshash index remove: error:") and "never/was" in err
    after = read_index(index)
    assert len(after) == 22 and not set(gone) & set(after.image_id)
