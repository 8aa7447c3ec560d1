"""Bad images and badly structured datasets: each is converted or stopped with a
message naming the file, and with skip_unreadable every skipped file is listed."""

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from rshash import RshashError
from rshash.cli import main
from rshash.data.images import MIN_SIDE, load_image
from rshash.data.manifest import check_images, read_manifest, scan_folder

RED = np.zeros((32, 40, 3), dtype=np.uint8)
RED[..., 0] = 200


def _jpeg_bytes(array=RED) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG")
    return buf.getvalue()


def _tiff_bytes(array=RED) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "TIFF")
    return buf.getvalue()


def write_bad(path, case: str) -> None:
    """Write one unreadable case to ``path``."""
    if case == "zero_byte":
        path.write_bytes(b"")
    elif case == "truncated_jpeg":
        path.write_bytes(_jpeg_bytes()[:300])
    elif case == "truncated_tiff":
        path.write_bytes(_tiff_bytes()[: len(_tiff_bytes()) // 2])
    elif case == "not_an_image":
        path.write_text("<html>404 Not Found</html>\n")
    elif case == "multi_page":
        pages = [Image.fromarray(RED), Image.fromarray(255 - RED)]
        pages[0].save(path, save_all=True, append_images=pages[1:])
    elif case == "five_bands":
        tifffile.imwrite(
            path, np.zeros((32, 32, 5), np.uint8), photometric="minisblack", planarconfig="contig"
        )
    elif case == "float32":
        Image.fromarray(np.ones((32, 32), np.float32)).save(path)
    elif case == "tiny":
        Image.fromarray(RED[: MIN_SIDE - 1, : MIN_SIDE - 1]).save(path)
    else:
        raise ValueError(case)


BAD = {  # case -> (file name, words the message must hold besides the path)
    "zero_byte": ("a.jpg", "empty file"),
    "truncated_jpeg": ("b.jpg", "Truncated File Read"),
    "truncated_tiff": ("c.tif", "cannot read image"),
    "not_an_image": ("d.png", "cannot identify image file"),
    "multi_page": ("e.tif", "2 pages"),
    "five_bands": ("f.tif", "cannot identify image file"),
    "float32": ("g.tif", "pixel mode 'F'"),
    "tiny": ("h.png", "smaller than 16 px"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unreadable_image_names_the_file_and_why(tmp_path, case):
    name, why = BAD[case]
    path = tmp_path / name
    write_bad(path, case)
    with pytest.raises(RshashError) as err:
        load_image(path, 32)
    assert str(path) in str(err.value) and why in str(err.value)


def test_converted_modes_give_the_expected_pixels(tmp_path):
    gray = np.full((20, 24), 90, np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_allclose(load_image(tmp_path / "gray.png", 8), 90 / 255, atol=1e-6)

    rgba = np.dstack([RED[:20, :24], np.zeros((20, 24), np.uint8)])  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png", 8)
    np.testing.assert_allclose(x[0], 200 / 255, atol=1e-6)  # alpha dropped, colour kept
    np.testing.assert_allclose(x[1:], 0)

    g16 = np.full((20, 24), 0x1234, np.uint16)  # 16-bit: the top 8 bits, 0x12
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    np.testing.assert_allclose(load_image(tmp_path / "g16.tif", 8), 0x12 / 255, atol=1e-6)

    rgb16 = np.zeros((20, 24, 3), np.uint16)
    rgb16[..., 2] = 0xFFFF
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    x = load_image(tmp_path / "rgb16.tif", 8)
    np.testing.assert_allclose(x[2], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[:2], 0.0, atol=1e-6)


def test_small_and_large_images(tmp_path, monkeypatch):
    Image.fromarray(RED[:MIN_SIDE, :MIN_SIDE]).save(tmp_path / "edge.png")
    assert load_image(tmp_path / "edge.png", 64).shape == (3, 64, 64)
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = 255  # right half white: survives the resize as a step
    Image.fromarray(big).save(tmp_path / "big.png")
    x = load_image(tmp_path / "big.png", 16)
    assert x[:, :, :7].max() == 0 and x[:, :, 9:].min() == 1
    # Beyond PIL's decompression-bomb limit (2 x MAX_IMAGE_PIXELS) the file is refused.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000 * 4000 // 4)
    with pytest.raises(RshashError, match="big.png.*DecompressionBomb"):
        load_image(tmp_path / "big.png", 16)


def seeded_dataset(root):
    """Two classes of good images (one grayscale, one RGBA) plus every bad case."""
    for cls in ("fields", "roads"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(RED + 10 * i).save(root / cls / f"good{i}.jpg")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "fields" / "gray.png")
    Image.fromarray(np.dstack([RED, RED[..., 0]])).save(root / "roads" / "rgba.png")
    for case, (name, _) in BAD.items():
        write_bad(root / ("fields" if name < "e" else "roads") / f"bad_{name}", case)
    return root


def _manifest(tmp_path, *extra):
    out = tmp_path / "m" / "ds.parquet"
    argv = [
        "manifest",
        "--dataset",
        "ds",
        "--folder",
        str(tmp_path / "images"),
        "--data-dir",
        str(tmp_path),
        "--out",
        str(out),
        *extra,
    ]
    return main(argv), out


def test_manifest_stops_on_the_first_unreadable_file(tmp_path, capsys):
    seeded_dataset(tmp_path / "images")
    code, out = _manifest(tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "images" / "fields" / "bad_a.jpg") in err and "empty file" in err
    assert f"and {len(BAD) - 1} more unreadable" in err and "skip_unreadable" in err
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written


def test_skip_unreadable_lists_every_skipped_file(tmp_path, capsys):
    root = seeded_dataset(tmp_path / "images")
    code, out = _manifest(tmp_path, "--skip-unreadable")
    log = capsys.readouterr().err
    assert code == 0
    manifest = read_manifest(out)
    assert len(manifest) == 10  # 2 x 4 good + grayscale + RGBA
    assert not manifest.path.str.contains("bad_").any()
    report = json.loads((out.parent / "ds.report.json").read_text())
    assert (report["n_files"], report["n_images"], report["n_skipped"]) == (18, 10, 8)
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    expected = {
        str(root / ("fields" if n < "e" else "roads") / f"bad_{n}"): why for n, why in BAD.values()
    }
    assert set(skipped) == set(expected)
    for path, why in expected.items():
        assert why in skipped[path]
        assert f"skipped unreadable image: cannot read image {path}" in log


def test_skip_unreadable_still_refuses_a_class_left_empty(tmp_path):
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    Image.fromarray(RED).save(root / "a" / "ok.png")
    write_bad(root / "b" / "only.jpg", "zero_byte")
    df = scan_folder(root)
    with pytest.raises(RshashError, match="class folder.*b.*no readable image"):
        check_images(df, skip_unreadable=True)


def _classes(root, counts):
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(RED).save(root / cls / f"{cls}{i}.png")
    return root


def test_dataset_structure_errors_name_the_path(tmp_path):
    with pytest.raises(RshashError, match=f"{tmp_path / 'nowhere'} does not exist"):
        scan_folder(tmp_path / "nowhere")

    empty = _classes(tmp_path / "empty", {"a": 2, "b": 0, "c": 0})
    with pytest.raises(RshashError, match=f"2 empty class folder.*{empty / 'b'}, {empty / 'c'}"):
        scan_folder(empty)

    stray = _classes(tmp_path / "stray", {"a": 2, "b": 2})
    Image.fromarray(RED).save(stray / "loose.png")
    Image.fromarray(RED).save(stray / "loose2.jpg")
    with pytest.raises(RshashError, match="2 image.*outside class folders.*loose.png, loose2.jpg"):
        scan_folder(stray)

    dup = _classes(tmp_path / "dup", {"a": 2, "b": 2})
    Image.fromarray(RED).save(dup / "a" / "a0.jpg")  # a0.png and a0.jpg: same id a/a0
    with pytest.raises(RshashError, match="duplicate image ids.*a/a0"):
        scan_folder(dup)

    # a folder inside a class folder is an error (its images would silently drop out)
    nested = _classes(tmp_path / "nested", {"a": 2, "b": 2})
    for cls in "ab":
        _classes(nested / cls, {"sub": 1})
    with pytest.raises(RshashError, match="2 folder.*inside class folders.*a/sub, b/sub"):
        scan_folder(nested)


def _people_kept(root):
    """A dataset as people keep it: READMEs, system files and a dangling link."""
    _classes(root, {"a": 2, "b": 2, "c": 2})
    (root / "README.md").write_text("about")
    (root / "LICENSE").write_text("cc")
    (root / ".DS_Store").write_bytes(b"\0")
    for cls in "abc":
        (root / cls / "Thumbs.db").write_bytes(b"\0")
    (root / "a" / "desktop.ini").write_text("[x]")
    (root / "b" / "._b0.png").write_bytes(b"\0\5\26\7")
    (root / "b" / "notes.txt").write_text("x")
    (root / "c" / "sizes.xlsx").write_bytes(b"PK")
    (root / "c" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._a").write_bytes(b"\0")
    return {
        "README.md",
        "LICENSE",
        ".DS_Store",
        "a/Thumbs.db",
        "b/Thumbs.db",
        "c/Thumbs.db",
        "a/desktop.ini",
        "b/._b0.png",
        "b/notes.txt",
        "c/sizes.xlsx",
        "c/gone.jpg",
        "__MACOSX",
    }


def test_files_people_keep_are_left_out_and_listed_in_the_report(tmp_path):
    left_out = _people_kept(tmp_path / "images")
    code, out = _manifest(tmp_path)
    assert code == 0
    df = read_manifest(out)
    assert list(df.image_id) == ["a/a0", "a/a1", "b/b0", "b/b1", "c/c0", "c/c1"]
    report = json.loads(out.with_name("ds.report.json").read_text())
    reasons = {item["path"]: item["reason"] for item in report["ignored"]}
    assert set(reasons) == left_out and report["n_ignored"] == len(left_out)
    assert reasons["c/gone.jpg"] == "dangling symbolic link"
    assert reasons["b/Thumbs.db"] == "Windows thumbnail cache"
    assert reasons["b/._b0.png"] == "macOS AppleDouble file"
    assert reasons["README.md"].startswith("not an image file")


def test_index_images_follows_the_manifest_rules(tmp_path):
    from rshash.archive import scan_images

    _people_kept(tmp_path / "classes")
    ids, _, labels, names = scan_images(tmp_path / "classes")
    assert list(ids) == ["a/a0", "a/a1", "b/b0", "b/b1", "c/c0", "c/c1"] and names == list("abc")
    flat = tmp_path / "flat"
    flat.mkdir()
    for n in ("x.png", "y.png"):
        Image.fromarray(RED).save(flat / n)
    for n in ("Thumbs.db", ".DS_Store", "README.md", "._x.png"):
        (flat / n).write_bytes(b"\0")
    (flat / "gone.png").symlink_to(flat / "nowhere.png")
    ids, _, labels, _ = scan_images(flat)
    assert list(ids) == ["x.png", "y.png"] and list(labels) == [-1, -1]
    nested = _classes(tmp_path / "nested", {"a": 1})
    (nested / "a" / "sub").mkdir()
    with pytest.raises(RshashError, match="inside class folders.*a/sub"):
        scan_images(nested)


@pytest.mark.parametrize("where", ["class", "file", "flat"])
def test_a_name_that_is_not_utf8_is_one_line_naming_the_path(tmp_path, where):
    from rshash.archive import scan_images

    root = _classes(tmp_path / "images", {"a": 2, "b": 2})
    bad = b"caf\xe9"  # latin-1, not UTF-8: os.scandir gives it surrogate-escaped
    if where == "class":
        target = os.fsencode(root) + b"/" + bad
        os.mkdir(target)
        Image.fromarray(RED).save(os.fsdecode(target + b"/x.png"))
    elif where == "file":
        target = os.fsencode(root / "a") + b"/" + bad + b".png"
        Image.fromarray(RED).save(os.fsdecode(target))
    else:
        root = tmp_path / "flat"
        root.mkdir()
        Image.fromarray(RED).save(root / "ok.png")
        target = os.fsencode(root) + b"/" + bad + b".png"
        Image.fromarray(RED).save(os.fsdecode(target))
    with pytest.raises(RshashError) as err:
        scan_images(root) if where == "flat" else scan_folder(root)
    message = str(err.value)
    assert "not valid UTF-8" in message and "caf\\xe9" in message and "\n" not in message
    message.encode("utf-8")  # printable: no surrogate left in it
    if where != "flat":
        code, _ = _manifest(tmp_path)
        assert code == 2


def test_class_too_small_for_a_protocol_stops_the_manifest_step(tmp_path, capsys):
    _classes(tmp_path / "images", {"big": 10, "small": 2})
    protocols = {"p80": {"train_fraction": 0.8, "val_fraction": 0.5, "database": "train"}}
    code, out = _manifest(tmp_path, "--protocols", json.dumps(protocols))
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    # 2 images: round(0.8 * 2) = 2 train, none left to query
    assert "protocols.p80: class 'small' has 2 images" in err and "0 query" in err
    code, out = _manifest(
        tmp_path, "--protocols", json.dumps({"p50": {"train_fraction": 0.5, "database": "train"}})
    )
    assert code == 0 and len(read_manifest(out)) == 12


def test_val_fraction_that_empties_a_class_train_part_is_refused():
    from rshash.data.splits import make_split

    m = pd.DataFrame(
        {
            "image_id": [f"c{c}/{i}" for c in range(2) for i in range(3)],
            "path": "x",
            "label": [c for c in range(2) for _ in range(3)],
            "class_name": [f"c{c}" for c in range(2) for _ in range(3)],
        }
    )
    # 3 images: 2 train, of which round(0.75 * 2) = 2 validation -> no train image
    with pytest.raises(RshashError, match="class 'c0' has 3 images.*0 train, 2 val"):
        make_split(m, {"train_fraction": 0.6, "val_fraction": 0.75}, seed=0)
