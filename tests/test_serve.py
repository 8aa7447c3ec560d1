"""rshash serve as people use it: the JSON API through Starlette's in-process client, the
page in a real headless Chromium, the index growing and shrinking under a running
server, and the safety limits, each caused for real (a decompression bomb, a file that
is no image, path tricks, an append killed before it publishes).

One small index (4 synthetic classes x 8 tiles, lsh at 32 bits) is built once for the
file; tests that change an index change a copy of it."""

import csv
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rshash.archive import parts_dir, read_index, scan_images
from rshash.cli import main
from rshash.data.synthetic import generate
from rshash.digest import write_npz
from rshash.features import embed
from rshash.methods import build
from rshash.serve import app as serve_app
from rshash.serve.app import create_app, is_loopback

BACKBONE = "efficientnet_lite0"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# file names a user can give an image: markup, and a spreadsheet formula
NASTY = ["<img src=x onerror=alert(1)>.png", "=1+2.png"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The images, a flat folder of 3 more (to append), an lsh model and the index."""
    root = tmp_path_factory.mktemp("serve")
    images = generate(root / "images", n_classes=4, per_class=8, size=64, seed=0)
    extra = generate(root / "extra_src", n_classes=3, per_class=1, size=64, seed=1)
    new = root / "new"
    new.mkdir()
    for src, name in zip(sorted(extra.rglob("*.png")), ["new_a.png", *NASTY]):
        shutil.copy(src, new / name)
    _, paths, labels, _ = scan_images(images)
    model = build("lsh", 32, seed=0).fit(embed(list(paths), BACKBONE))
    model.save(root / "lsh.npz", extra={"backbone": BACKBONE})
    index = root / "archive.idx"
    assert main(["index", "build", "--model", str(root / "lsh.npz"), "--images", str(images),
                 "--out", str(index)]) == 0  # fmt: skip
    return {"root": root, "images": images, "paths": paths, "labels": labels, "new": new,
            "model": root / "lsh.npz", "index": index}  # fmt: skip


@pytest.fixture(scope="module")
def client(archive):
    with TestClient(create_app(archive["index"], poll=0.1)) as c:
        yield c


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    shutil.copytree(parts_dir(src), parts_dir(dst))
    return dst


def first_id(archive, row=0) -> str:
    return read_index(archive["index"]).image_id_of(row)


def test_search_by_id_pages_filters_and_exports(archive, client):
    index = read_index(archive["index"])
    qid = index.image_id_of(9)
    r = client.get("/api/search", params={"id": qid, "k": 20})
    assert r.status_code == 200
    doc = r.json()
    assert doc["query_ms"] >= 0 and doc["total"] == len(index) == 32
    res = doc["results"]
    assert [x["rank"] for x in res] == list(range(1, 21))
    assert res[0]["image_id"] == qid and res[0]["distance"] == 0
    assert res[0]["class_name"] == index.class_name(index.label_of(9))
    assert [x["distance"] for x in res] == sorted(x["distance"] for x in res)
    assert {"path", "predicted_class", "score"} <= set(res[0])

    # pages join up into the same ranking
    page2 = client.get("/api/search", params={"id": qid, "k": 10, "offset": 10}).json()
    assert [x["image_id"] for x in page2["results"]] == [x["image_id"] for x in res[10:20]]

    # class filter, distance threshold (range search)
    other = index.header["class_names"][2]
    doc = client.get("/api/search", params={"id": qid, "class": other}).json()
    assert doc["total"] == 8 and {x["class_name"] for x in doc["results"]} == {other}
    t = res[5]["distance"]
    everything = client.get("/api/search", params={"id": qid, "k": 32}).json()["results"]
    doc = client.get("/api/search", params={"id": qid, "max_distance": t, "k": 50}).json()
    assert doc["total"] == sum(x["distance"] <= t for x in everything) >= 6
    assert all(x["distance"] <= t for x in doc["results"]) and len(doc["results"]) == doc["total"]

    # feedback: a marked-relevant image rises, a rejected one sinks
    good, bad = res[8]["image_id"], res[1]["image_id"]
    doc = client.get("/api/search", params={"id": qid, "pos": good, "neg": bad}).json()
    ids = [x["image_id"] for x in doc["results"]]
    assert ids.index(good) < 8 and (bad not in ids or ids.index(bad) > 1)

    # exports: the same list, as a download
    r = client.get("/api/search", params={"id": qid, "k": 5, "format": "csv"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["image_id"] for x in rows] == [x["image_id"] for x in res[:5]]
    assert rows[0]["path"] == str(archive["paths"][9]) and rows[0]["distance"] == "0"
    r = client.get("/api/search", params={"id": qid, "k": 5, "format": "json"})
    assert [x["image_id"] for x in r.json()["results"]] == [x["image_id"] for x in res[:5]]

    # a query by code (what an upload becomes in a permalink) ranks as its image
    code = client.get("/api/search", params={"id": qid}).json()["query"]["code"]
    doc = client.get("/api/search", params={"code": code}).json()
    assert [x["image_id"] for x in doc["results"]] == [x["image_id"] for x in res]

    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/index", "/api/images/{image_id}/thumbnail"} <= set(schema["paths"])
    body = schema["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert "image" in body["multipart/form-data"]["schema"]["properties"]


def test_upload_finds_its_image_and_bad_files_are_4xx(archive, client):
    path = Path(archive["paths"][20])
    r = client.post(
        "/api/search", params={"k": 20}, files={"image": (path.name, path.read_bytes())}
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["results"][0]["image_id"] == first_id(archive, 20)
    assert doc["results"][0]["distance"] == 0 and len(doc["results"]) == 20
    assert doc["encode_ms"] > 0 and doc["query"]["upload"] == path.name

    def post(data, name="q.png", **kw):
        return client.post("/api/search", files={"image": (name, data)}, **kw)

    r = post(b"this is not an image", "notes.png")
    assert r.status_code == 400 and "notes.png" in r.json()["detail"]
    assert "rshash-upload" not in r.json()["detail"]  # our temporary file stays private
    # decompression bombs: the header claims more pixels than the limit; nothing decoded
    r = post(png_header_only(7000, 7000))
    assert r.status_code == 400 and "more than the limit of 40000000 pixels" in r.json()["detail"]
    r = post(png_header_only(100_000, 100_000))
    assert r.status_code == 400 and "DecompressionBomb" in r.json()["detail"]
    r = post(b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = client.post("/api/search", files={"picture": ("q.png", path.read_bytes())})
    assert r.status_code == 400 and "'image'" in r.json()["detail"]
    r = client.post("/api/search", content=b"raw", headers={"content-type": "image/png"})
    assert r.status_code == 415


def test_upload_over_the_byte_limit_is_413(archive, client, monkeypatch):
    monkeypatch.setattr(serve_app, "MAX_UPLOAD_BYTES", 1000)
    data = Path(archive["paths"][0]).read_bytes()
    assert len(data) > 1000
    r = client.post("/api/search", files={"image": ("q.png", data * 30)})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/api/search", files={"image": ("q.png", data)})
    assert r.status_code == 413


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height grey pixels (a bomb's header) with one row of data."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))  # fmt: skip


def test_thumbnails_only_of_indexed_images_and_bad_requests_are_4xx(archive, client):
    qid = first_id(archive, 3)
    for url in (f"/api/images/{qid}/thumbnail", f"/api/images/{quote(qid, safe='')}/thumbnail"):
        r = client.get(url)
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff", url
    for trick in ("../../etc/passwd", "/etc/passwd", str(archive["paths"][3]), "..", "a\0b"):
        r = client.get(f"/api/images/{quote(trick, safe='').replace('.', '%2E')}/thumbnail")
        assert r.status_code == 404 and "no image with id" in r.json()["detail"], trick
    r = client.get("/api/images/..%2F..%2Fetc%2Fpasswd/thumbnail")
    assert r.status_code == 404
    bad = [
        ({"id": "no/such"}, 404, "no image with id 'no/such'"),
        ({"id": qid, "pos": "nope"}, 404, "no relevant image with id 'nope'"),
        ({"id": qid, "neg": "nope"}, 404, "no rejected image with id 'nope'"),
        ({}, 400, "give one query"),
        ({"id": qid, "code": "00"}, 400, "give one query"),
        ({"code": "zz"}, 400, "8 hexadecimal digits"),
        ({"code": "0" * 9}, 400, "8 hexadecimal digits"),
        ({"id": qid, "k": 0}, 422, "greater than or equal to 1"),
        ({"id": qid, "k": 10**6}, 422, "less than or equal to 1000"),
        ({"id": qid, "offset": -1}, 422, ""),
        ({"id": qid, "k": "many"}, 422, "integer"),
        ({"id": qid, "class": "<script>"}, 400, "no class '<script>'"),
        ({"id": qid, "max_distance": 33}, 400, "at most 32"),
        ({"id": qid, "format": "xlsx"}, 422, ""),
        # place and time: for an index of geo-referenced scenes (tests/test_serve_geo.py)
        ({"id": qid, "format": "geojson"}, 400, "format=geojson needs an index of geo-ref"),
        ({"id": qid, "bbox": "0,0,1,1"}, 400, "a place or date filter needs an index of geo"),
        ({"id": qid, "date_to": "2020-01-01"}, 400, "a place or date filter needs an index"),
        ({"id": qid, "bbox": "5,6,1,2"}, 400, "bbox 5,6,1,2: min > max"),
    ]
    for params, status, text in bad:
        r = client.get("/api/search", params=params)
        assert r.status_code == status and text in str(r.json()["detail"]), (params, r.text)
        assert r.headers["content-type"] == "application/json"
    assert client.get("/api/index").json()["n"] == 32  # still serving
    assert client.get("/api/quicklook/anything").status_code == 404
    page = client.get("/")
    assert "script-src" not in page.headers["content-security-policy"]  # 'self' only
    assert '<script src="/app.js"' in page.text and "cdn" not in page.text.lower()


def test_append_and_remove_reach_a_running_server(archive, tmp_path, capsys):
    index = copy_index(archive["index"], tmp_path / "grow.idx")
    with TestClient(create_app(index, poll=0.05)) as c:
        code = main(["index", "append", "--images", str(archive["new"]), "--index", str(index)])
        assert code == 0 and "added 3 images" in capsys.readouterr().out
        wait_for(lambda: c.get("/api/index").json()["n"] == 35)
        info = c.get("/api/index").json()
        assert info["generation"] == 2
        for name in ["new_a.png", *NASTY]:
            doc = c.get("/api/search", params={"id": name, "k": 1}).json()
            assert doc["results"][0]["image_id"] == name and doc["results"][0]["class_name"] == "-"
            assert c.get(f"/api/images/{quote(name, safe='')}/thumbnail").status_code == 200
        r = c.get("/api/search", params={"id": NASTY[1], "k": 1, "format": "csv"})
        assert "\n1,'=1+2.png," in r.text  # a spreadsheet shows it as text, never a formula

        # appending the same folder again encodes nothing
        assert (
            main(["index", "append", "--images", str(archive["new"]), "--index", str(index)]) == 0
        )
        assert "added 0 images" in capsys.readouterr().out

        gone = ["new_a.png", first_id(archive)]
        assert main(["index", "remove", *gone, "--index", str(index)]) == 0
        wait_for(lambda: c.get("/api/index").json()["n"] == 33)
        assert c.get("/api/search", params={"id": "new_a.png"}).status_code == 404
        assert c.get("/api/images/new_a.png/thumbnail").status_code == 404
        assert main(["index", "remove", "never/was", "--index", str(index)]) == 2
        assert "no image with id 'never/was'" in capsys.readouterr().err
        assert len(read_index(index)) == 33
    names = {f.stem for f in parts_dir(index).iterdir() if f.suffix == ".codes"}
    assert len(names) == 2  # replaced segments are gone


def wait_for(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


KILLED_BEFORE_PUBLISH = """
import os, signal, sys
import rshash.archive.build
def die(*args, **kwargs):  # the new segments are written; the manifest is not replaced
    os.kill(os.getpid(), signal.SIGKILL)
rshash.archive.build.publish = die
from rshash.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_interrupted_append_leaves_the_old_index(archive, tmp_path, capsys):
    index = copy_index(archive["index"], tmp_path / "kill.idx")
    before = read_index(index)
    before_files = set(os.listdir(parts_dir(index)))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_PUBLISH, "index", "append",
         "--images", str(archive["new"]), "--index", str(index)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert set(os.listdir(parts_dir(index))) > before_files  # its segments were written
    after = read_index(index)
    assert (len(after), after.generation) == (len(before), before.generation)
    np.testing.assert_array_equal(after.packed, before.packed)
    # the next writer removes what the killed one left
    assert main(["index", "remove", first_id(archive), "--index", str(index)]) == 0
    codes = [f for f in os.listdir(parts_dir(index)) if f.endswith(".codes")]
    assert len(codes) == 1 and len(read_index(index)) == 31


def test_an_old_single_file_index_is_read_and_converted(archive, tmp_path, capsys):
    new = read_index(archive["index"])
    old = tmp_path / "old.idx.npz"
    header = {k: new.header[k] for k in ("backbone", "method", "bits", "model", "model_sha256",
                                         "source", "class_names")}  # fmt: skip
    write_npz(old, {**header, "format": "rshash-index", "version": 1},
              {"packed": new.packed, "image_id": new.image_id, "path": new.path,
               "label": new.label})  # fmt: skip
    legacy = read_index(old)
    assert len(legacy) == 32 and legacy.image_id_of(5) == new.image_id_of(5)
    d, i = legacy.search(new.packed[[5]], 3)
    assert i[0, 0] == 5 and d[0, 0] == 0
    assert main(["index", "remove", new.image_id_of(0), "--index", str(old)]) == 0
    assert old.read_bytes()[:1] == b"{" and len(read_index(old)) == 31


def test_a_host_that_is_not_loopback_is_warned_about(archive, monkeypatch, capsys):
    import uvicorn

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert main(["serve", "--index", str(archive["index"]), "--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", "--index", str(archive["index"])]) == 0
    assert "warning" not in capsys.readouterr().err


@contextmanager
def live_server(app):
    """The app on a real uvicorn server on a free loopback port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def chromium():
    """A headless Debian chromium driven through its own chromedriver (never a download)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = f"{CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ": CI must run the browser test")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_the_page_in_chromium(archive, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium()
    app = create_app(archive["index"])
    try:
        with live_server(app) as base:
            wait = WebDriverWait(driver, 30)

            def card_ids():  # in one script: the grid is never seen half re-rendered
                return driver.execute_script(
                    "return [...document.querySelectorAll('#grid .card .id')]"
                    ".map((e) => e.textContent)"
                )

            def in_card(n, selector):
                css = f"#grid .card:nth-child({n}) {selector}"
                return driver.find_element(By.CSS_SELECTOR, css)

            # a search by id, typed in
            qid = first_id(archive, 9)
            driver.get(base + "/")
            wait.until(lambda d: "32 images" in d.find_element(By.ID, "index-info").text)
            driver.find_element(By.ID, "id").send_keys(qid)
            driver.find_element(By.CSS_SELECTOR, "#by-id button").click()
            wait.until(lambda d: len(card_ids()) == 20)
            assert card_ids()[0] == qid
            assert "ms on the server" in driver.find_element(By.ID, "status").text
            # an index of image files: no map, no place fields (tests/test_serve_geo.py)
            for hidden in ("map-wrap", "place-row", "export-geojson"):
                assert not driver.find_element(By.ID, hidden).is_displayed()
            assert "id=" + quote(qid, safe="") in driver.current_url  # a permalink

            # click a result: it becomes the query
            second = card_ids()[1]
            in_card(2, "img").click()
            wait.until(lambda d: card_ids()[:1] == [second])
            assert quote(second, safe="") in driver.current_url

            # mark two, re-rank
            good, bad = card_ids()[5], card_ids()[2]
            in_card(6, ".good").click()
            in_card(3, ".bad").click()
            driver.find_element(By.ID, "rerank").click()
            wait.until(lambda d: "pos=" in d.current_url and "neg=" in d.current_url)
            wait.until(lambda d: good in card_ids()[:5])
            marked = driver.find_elements(By.CSS_SELECTOR, "#grid .card.pos .id")
            assert [e.text for e in marked] == [good]
            rejected = driver.find_elements(By.CSS_SELECTOR, "#grid .card.neg .id")
            assert [e.text for e in rejected] in ([bad], [])

            # the permalink reproduces the ranking in a fresh page
            shown = card_ids()
            driver.get(driver.current_url)
            wait.until(lambda d: card_ids() == shown)

            # export: the CSV link downloads the list shown
            href = driver.find_element(By.ID, "export-csv").get_attribute("href")
            with urllib.request.urlopen(href) as r:
                rows = list(csv.DictReader(io.TextIOWrapper(r, "utf-8")))
            assert [x["image_id"] for x in rows] == shown

            # upload a demo image through the file input
            path = Path(archive["paths"][27])
            driver.find_element(By.ID, "file").send_keys(str(path))
            wait.until(lambda d: "encode" in d.find_element(By.ID, "status").text)
            wait.until(lambda d: card_ids()[:1] == [first_id(archive, 27)])
            assert len(card_ids()) == 20 and "code=" in driver.current_url
            driver.save_screenshot(str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").stat().st_size > 10_000

            # strings from the server stay text
            box = driver.find_element(By.ID, "id")
            box.clear()
            box.send_keys("<b>bold</b>")
            driver.find_element(By.CSS_SELECTOR, "#by-id button").click()
            wait.until(lambda d: "404" in d.find_element(By.ID, "status").text)
            assert "<b>bold</b>" in driver.find_element(By.ID, "status").text
            assert not driver.find_elements(By.CSS_SELECTOR, "#status b")
    finally:
        driver.quit()


def test_the_scale_benchmarks_run(tmp_path):
    """benchmarks/serve.py on tiny sizes: it prints its figures, with no errors."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "serve.py"
    runs = (["open", "--codes", "5000"], ["load", "--codes", "2000", "--clients", "2",
                                           "--queries", "25"])  # fmt: skip
    for args in runs:
        out = subprocess.run(
            [sys.executable, str(script), *args, "--dir", str(tmp_path)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert ("open " if args[0] == "open" else "p99") in out.stdout
    assert "p99" in out.stdout and ", 0 errors" in out.stdout


def test_a_retrained_model_is_reloaded_not_used_stale(archive, tmp_path):
    """A model retrained at the same path and the index rebuilt with it: the running
    server swaps in the new index and encodes uploads with the new model, so an upload
    answers as ``rshash search`` does on the same index (before the fix: the old
    encoder, other codes, another top 5)."""
    from rshash.archive import build_index, search_images

    model = tmp_path / "model.npz"
    shutil.copy(archive["model"], model)
    index = tmp_path / "retrained.idx"
    build_index(model, archive["images"], index)
    query = Path(archive["paths"][5])

    def upload(client):
        r = client.post("/api/search", params={"k": 5},
                        files={"image": (query.name, query.read_bytes())})  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()["query"]["code"], [h["image_id"] for h in r.json()["results"]]

    with TestClient(create_app(index, poll=0.1)) as client:
        first, _ = upload(client)
        features = embed([str(p) for p in archive["paths"]], BACKBONE)
        build("lsh", 32, seed=1).fit(features).save(model, extra={"backbone": BACKBONE})
        generation_file = os.stat(index).st_ino
        build_index(model, archive["images"], index)
        assert os.stat(index).st_ino != generation_file
        wait_for(lambda: client.app.state.live.current.header["model_sha256"] != read_index(
            archive["index"]).header["model_sha256"])  # fmt: skip
        code, top = upload(client)
    (expected,) = search_images(read_index(index), [str(query)], 5)
    current = read_index(index)
    assert code != first  # the new model gives the query another code
    assert top == [current.image_id_of(int(r)) for r in expected.page.rows]


def test_an_index_of_a_relative_folder_serves_thumbnails_from_anywhere(archive, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    """Paths are stored absolute: a server started in another folder finds the files."""
    from rshash.archive import build_index

    monkeypatch.chdir(archive["images"].parent)
    index = build_index(archive["model"], archive["images"].name, tmp_path / "rel.idx")
    assert all(os.path.isabs(index.path_of(r)) for r in range(len(index)))
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(tmp_path / "rel.idx")) as client:
        r = client.get(f"/api/images/{quote(index.image_id_of(0))}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_the_page_exports_at_most_the_apis_largest_page(archive, monkeypatch):
    """More results shown (by "more") than the API gives in one page: the export link
    asks for the largest page the API allows, not for every result shown (which the
    API refuses: before the fix, k = 32 > 20 and the download was a 422)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setattr(serve_app, "MAX_K", 20)
    driver = chromium()
    try:
        with live_server(create_app(archive["index"])) as base:
            wait = WebDriverWait(driver, 30)
            cards = "return document.querySelectorAll('#grid .card').length"
            driver.get(base + "/?id=" + quote(first_id(archive, 3), safe=""))
            wait.until(lambda d: d.execute_script(cards) == 20)
            more = driver.find_element(By.ID, "more")
            wait.until(lambda d: more.is_displayed())
            driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click()", more)
            wait.until(lambda d: d.execute_script(cards) == 32)
            href = driver.find_element(By.ID, "export-csv").get_attribute("href")
            with urllib.request.urlopen(href) as r:
                rows = list(csv.DictReader(io.TextIOWrapper(r, "utf-8")))
            assert len(rows) == 20
    finally:
        driver.quit()
