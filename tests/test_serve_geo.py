"""rshash serve on an archive of geo-referenced scenes: searches by place and time
through the API, the command line and Python (held equal, and equal to a plain numpy
reference on the index's footprints), GeoJSON read back with geopandas, the scenes'
quicklooks and chips' thumbnails, and the page's map in a real headless Chromium.

The index (2 NAIP scenes, chips of 128 px: 70 chips) is built once per test run by
conftest's ``geo_index``."""

import json
import time
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serve import chromium, live_server, wait_for

from rshash import RshashError
from rshash.archive import geo, read_index, search_ids
from rshash.archive.present import chip_jpeg
from rshash.archive.query import Place
from rshash.cli import main
from rshash.serve.app import create_app, page_headers

EPOCH = np.datetime64("1970-01-01", "D")


@pytest.fixture(scope="module")
def client(geo_index):
    with TestClient(create_app(geo_index, poll=0.1)) as c:
        yield c


@pytest.fixture(scope="module")
def chips(geo_index):
    """Plain numpy views of every chip: ids, bits, lon/lat bounds (w, s, e, n), days."""
    index = read_index(geo_index)
    rows = index._all
    fp = np.asarray(rows.geo["footprint"], np.float64)
    bounds = np.concatenate([fp.min(1), fp.max(1)], axis=1)
    return {
        "index": index,
        "ids": [str(i) for i in rows.image_id],
        "bits": np.unpackbits(rows.packed, axis=1).astype(int),
        "footprint": fp,
        "bounds": bounds,
        "day": np.asarray(rows.geo["date"]).astype(int),
        "scenes": index.scenes,
    }


def day(text: str) -> int:
    return int((np.datetime64(text, "D") - EPOCH).astype(int))


def reference(chips, qid, k, bbox=None, date_from=None, date_to=None):
    """Every chip's Hamming distance to the query, the box and dates applied to the
    footprints' bounds, sorted by (distance, row): (ids and distances of the first k,
    how many qualify)."""
    bits = chips["bits"]
    d = np.abs(bits - bits[chips["ids"].index(qid)]).sum(1)
    keep = np.ones(len(d), bool)
    if bbox is not None:
        w, s, e, n = bbox
        b = chips["bounds"]
        keep &= (b[:, 0] <= e) & (b[:, 2] >= w) & (b[:, 1] <= n) & (b[:, 3] >= s)
    if date_from is not None:
        keep &= chips["day"] >= day(date_from)
    if date_to is not None:
        keep &= chips["day"] <= day(date_to)
    rows = sorted(np.flatnonzero(keep), key=lambda r: (d[r], r))
    return [(chips["ids"][r], int(d[r])) for r in rows[:k]], int(keep.sum())


def scene_box(chips):
    """The scenes' lon/lat bounds together."""
    b = np.array([s["bounds_4326"] for s in chips["scenes"]])
    return (*b[:, :2].min(0), *b[:, 2:].max(0))


def places(chips):
    """Filters to hold the query paths to: a box on the west part, a small box inside,
    a box away from every scene, one date, both dates, a box and a date together."""
    w, s, e, n = scene_box(chips)
    dw, dh = e - w, n - s
    first, second = sorted(x["date"] for x in chips["scenes"])
    west = (w - 0.01, s - 0.01, w + 0.3 * dw, n + 0.01)
    small = (w + 0.45 * dw, s + 0.45 * dh, w + 0.55 * dw, s + 0.55 * dh)
    return [
        {"bbox": west},
        {"bbox": small},
        {"bbox": (10.0, 10.0, 11.0, 11.0)},
        {"date_from": second},
        {"date_from": first, "date_to": first},
        {"bbox": west, "date_to": first},
    ]


def bbox_text(bbox) -> str:
    return ",".join(repr(float(v)) for v in bbox)


def api_params(f: dict) -> dict:
    p = {k: v for k, v in f.items() if k != "bbox"}
    if "bbox" in f:
        p["bbox"] = bbox_text(f["bbox"])
    return p


def test_place_and_date_filters_equal_a_numpy_reference(client, chips):
    qids = [chips["ids"][5], chips["ids"][40]]
    for f in places(chips):
        for qid in qids:
            for k in (5, 70):
                r = client.get("/api/search", params={"id": qid, "k": k, **api_params(f)})
                assert r.status_code == 200, r.text
                doc = r.json()
                want, total = reference(chips, qid, k, **f)
                got = [(h["image_id"], h["distance"]) for h in doc["results"]]
                assert got == want and doc["total"] == total, f
    # the filters do filter: a place keeps a part of the chips, a date one scene's
    counts = [reference(chips, qids[0], 70, **f)[1] for f in places(chips)]
    assert 0 < counts[0] < 70 and 0 < counts[1] < counts[0] and counts[2] == 0
    assert counts[3] == counts[4] == 35 and 0 < counts[5] < counts[0]

    # each result carries its scene, date, window and footprint (the chip's own)
    doc = client.get("/api/search", params={"id": qids[0], "k": 70}).json()
    assert doc["query"]["footprint"] == chips["footprint"][5].tolist()
    for h in doc["results"]:
        r = chips["ids"].index(h["image_id"])
        assert h["footprint"] == chips["footprint"][r].tolist()
        assert h["date"] == str(EPOCH + chips["day"][r])
        assert h["scene"] == h["image_id"].split("/")[0]
        assert len(h["window"]) == 4 and h["window"][2:] == [128, 128]


def test_geojson_is_rfc7946_and_geopandas_reads_it_back(client, chips, tmp_path):
    import geopandas as gpd

    qid = chips["ids"][12]
    f = places(chips)[0]
    params = {"id": qid, "k": 70, **api_params(f)}
    plain = client.get("/api/search", params=params).json()
    r = client.get("/api/search", params={**params, "format": "geojson"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    assert 'filename="rshash-results.geojson"' in r.headers["content-disposition"]
    doc = r.json()
    assert doc["type"] == "FeatureCollection" and doc["query"] == qid
    assert len(doc["features"]) == plain["total"] == len(plain["results"]) > 0
    w, s, e, n = scene_box(chips)
    eps = 1e-9
    for feat, hit in zip(doc["features"], plain["results"]):
        assert feat["type"] == "Feature" and feat["geometry"]["type"] == "Polygon"
        (ring,) = feat["geometry"]["coordinates"]
        ring = np.array(ring)
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()  # closed
        x, y = ring[:, 0], ring[:, 1]
        assert np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0  # counter-clockwise (RFC 7946)
        assert (x >= w - eps).all() and (x <= e + eps).all()  # lon, then lat
        assert (y >= s - eps).all() and (y <= n + eps).all()
        props = feat["properties"]
        assert (props["rank"], props["id"], props["distance"]) == (
            hit["rank"], hit["image_id"], hit["distance"])  # fmt: skip
        assert (props["scene"], props["date"]) == (hit["scene"], hit["date"])

    path = tmp_path / "hits.geojson"
    path.write_bytes(r.content)
    frame = gpd.read_file(path)
    assert frame.crs.to_epsg() == 4326 and len(frame) == len(plain["results"])
    fp = np.array([h["footprint"] for h in plain["results"]])
    want = [fp[..., 0].min(), fp[..., 1].min(), fp[..., 0].max(), fp[..., 1].max()]
    np.testing.assert_allclose(frame.total_bounds, want, rtol=0, atol=1e-9)
    assert list(frame["rank"]) == [h["rank"] for h in plain["results"]]

    # the CSV export names each chip's scene and date
    r = client.get("/api/search", params={**params, "k": 3, "format": "csv"})
    head, first = r.text.splitlines()[:2]
    assert head.endswith(",scene,date")
    hit = plain["results"][0]
    assert first.startswith(f"1,{hit['image_id']},") and first.endswith(
        f",{hit['scene']},{hit['date']}")  # fmt: skip


def test_a_bad_place_is_a_400_of_one_line_naming_the_parameter(client, chips):
    qid = chips["ids"][0]
    bad = [
        ({"bbox": "5,6,1,2"}, "bbox 5,6,1,2: min > max"),
        ({"bbox": "-99.1,47.1,-99.2,47.05"}, "bbox -99.1,47.1,-99.2,47.05: min > max"),
        ({"bbox": "1,2,3"}, "bbox must be four numbers"),
        ({"bbox": "a,b,c,d"}, "bbox must be four numbers"),
        ({"bbox": "0,0,200,10"}, "outside lon -180..180"),
        ({"date_from": "2010-13-40"}, "date_from must be a date YYYY-MM-DD"),
        ({"date_to": "soon"}, "date_to must be a date YYYY-MM-DD"),
        ({"date_from": "2011-01-01", "date_to": "2010-01-01"}, "date_from 2011-01-01 is after"),
    ]
    for params, text in bad:
        for method in ("get", "post"):
            if method == "get":
                r = client.get("/api/search", params={"id": qid, **params})
            else:
                png = client.get(f"/api/images/{quote(qid, safe='')}/thumbnail").content
                r = client.post("/api/search", params=params, files={"image": ("q.jpg", png)})
            detail = r.json()["detail"]
            assert r.status_code == 400 and text in detail and "\n" not in detail, (params, r.text)
    # the message is Place's own (the one check of the query path)
    for params, text in bad:
        with pytest.raises(RshashError, match=text.split(":")[0]):
            Place.of(**params)


def test_index_info_quicklooks_and_chip_thumbnails(client, chips, geo_index):
    from PIL import Image

    info = client.get("/api/index").json()
    assert info["geo"] is True and info["n"] == 70 and info["basemap"] is None
    assert [s["id"] for s in info["scenes"]] == [s["id"] for s in chips["scenes"]]
    for s, meta in zip(info["scenes"], chips["scenes"]):
        assert set(s) == {"id", "date", "bounds_4326", "quicklook_bounds_3857", "n_chips",
                          "n_left_out"}  # fmt: skip
        assert s["n_chips"] == 35 and s["n_left_out"] == 0
        assert s["quicklook_bounds_3857"] == meta["quicklook_bounds_3857"]

    looks = geo.quicklooks(chips["index"])
    for sid, look in looks.items():
        r = client.get(f"/api/quicklook/{sid}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = Image.open(__import__("io").BytesIO(r.content))
        assert img.mode == "RGBA" and np.array_equal(np.asarray(img), np.asarray(look))
        assert client.get(f"/api/quicklook/{sid}").content == r.content  # cached, the same
    r = client.get("/api/quicklook/..%2F..%2Fetc%2Fpasswd")
    assert r.status_code == 404
    r = client.get("/api/quicklook/no_such_scene")
    assert r.status_code == 404 and "no scene with id 'no_such_scene'" in r.json()["detail"]

    # a chip's thumbnail, read from its window (its id holds a '/', taken whole)
    qid = chips["ids"][7]
    for url in (f"/api/images/{qid}/thumbnail", f"/api/images/{quote(qid, safe='')}/thumbnail"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", url
        assert r.content == chip_jpeg(chips["index"], 7, 128)
    r = client.get(f"/api/images/{quote(qid + '/x', safe='')}/thumbnail")
    assert r.status_code == 404


def test_the_basemap_is_off_by_default_and_allowed_one_origin(geo_index):
    default = page_headers()["Content-Security-Policy"]
    assert "img-src 'self' blob: data:;" in default and "http" not in default
    csp = page_headers("https://tile.openstreetmap.org/{z}/{x}/{y}.png")["Content-Security-Policy"]
    assert "img-src 'self' blob: data: https://tile.openstreetmap.org;" in csp
    bad_urls = [
        "tile.openstreetmap.org/{z}/{x}/{y}.png",
        "https://a.org/{z}/{x}.png",
        "javascript:alert(1)//{z}{x}{y}",
        "https://a.org/{z}/{x}/{y}.png' 'unsafe-inline",
    ]
    for bad in bad_urls:
        with pytest.raises(RshashError, match="--basemap must be an http"):
            page_headers(bad)
    url = "http://127.0.0.1:9/{z}/{x}/{y}.png"
    with TestClient(create_app(geo_index, basemap=url)) as c:
        assert c.get("/api/index").json()["basemap"] == url
        assert "img-src 'self' blob: data: http://127.0.0.1:9;" in c.get("/").headers[
            "content-security-policy"]  # fmt: skip
    assert main(["serve", "--index", str(geo_index), "--basemap", "ftp://x/{z}/{x}/{y}"]) == 2


@pytest.mark.parametrize("which", range(6))
def test_cli_api_and_python_call_agree_with_a_place(client, chips, geo_index, which, capsys):
    f = places(chips)[which]
    qids, k = [chips["ids"][3], chips["ids"][50]], 7
    place = Place.of(**f)
    python = [
        [(chips["index"].image_id_of(int(r)), int(d)) for r, d in zip(res.page.rows,
                                                                      res.page.distance)]
        for res in search_ids(chips["index"], qids, k, place=place)
    ]  # fmt: skip
    argv = ["search", "--index", str(geo_index), "--top", str(k), "--json"]
    argv += ["--bbox=" + bbox_text(f["bbox"])] if "bbox" in f else []  # "=": it starts with "-"
    argv += ["--date-from", f["date_from"]] if "date_from" in f else []
    argv += ["--date-to", f["date_to"]] if "date_to" in f else []
    for q in qids:
        argv += ["--id", q]
    capsys.readouterr()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    cli = [[(h["image_id"], h["distance"]) for h in q["results"]] for q in out]
    api = []
    for q in qids:
        r = client.get("/api/search", params={"id": q, "k": k, **api_params(f)})
        api.append([(h["image_id"], h["distance"]) for h in r.json()["results"]])
    want = [reference(chips, q, k, **f)[0] for q in qids]
    assert python == cli == api == want

    # --geojson: the server's format=geojson, for one query
    geo_argv = [a for a in argv[: argv.index("--id")] if a != "--json"] + ["--geojson"]
    assert main([*geo_argv, "--id", qids[0]]) == 0
    cli_geojson = json.loads(capsys.readouterr().out)
    r = client.get("/api/search", params={"id": qids[0], "k": k, "format": "geojson",
                                          **api_params(f)})  # fmt: skip
    assert cli_geojson == r.json()
    # several queries: one collection, each feature naming its query
    assert main([*geo_argv, "--id", qids[0], "--id", qids[1]]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [x["properties"]["query"] for x in both["features"]] == [
        q for q, hits in zip(qids, want) for _ in hits]  # fmt: skip


def test_the_command_line_refuses_a_bad_place_in_one_line(geo_index, capsys):
    base = ["search", "--index", str(geo_index), "--id", read_index(geo_index).image_id_of(0)]
    assert main([*base, "--bbox", "5,6,1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bbox 5,6,1,2: min > max" in err and "\n" not in err
    assert main([*base, "--date-from", "2010-02-30"]) == 2
    assert "date_from must be a date" in capsys.readouterr().err


# --- the page's map, in Chromium ---------------------------------------------------------


def tile_server():
    """A stand-in basemap on another origin: a 256 px PNG for every /{z}/{x}/{y}.png."""
    import io

    from fastapi import FastAPI, Response
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 220, 240)).save(buf, format="PNG")
    app = FastAPI()
    seen = []

    @app.get("/{z}/{x}/{y}.png")
    def tile(z: int, x: int, y: int):
        seen.append((z, x, y))
        return Response(buf.getvalue(), media_type="image/png")

    app.state.seen = seen
    return app


def intersects(footprint, box) -> bool:
    fp = np.asarray(footprint)
    w, s, e, n = box
    lon, lat = fp[:, 0], fp[:, 1]
    return lon.min() <= e and lon.max() >= w and lat.min() <= n and lat.max() >= s


def test_the_map_in_chromium(geo_index, chips, tmp_path):
    import geopandas as gpd
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium()
    tiles = tile_server()
    try:
        with live_server(tiles) as tile_base, live_server(
            create_app(geo_index, basemap=tile_base + "/{z}/{x}/{y}.png")
        ) as base:  # fmt: skip
            driver.execute_cdp_cmd(
                "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
            )
            wait = WebDriverWait(driver, 30)
            js = driver.execute_script
            driver.get(base + "/")

            # the scenes, drawn from their quicklooks; the basemap's tiles under them
            loaded = "return [...document.querySelectorAll('#map img.%s')]" \
                ".filter((i) => i.complete && i.naturalWidth > 0).length"  # fmt: skip
            wait.until(lambda d: js(loaded % "scene") == 2)
            wait.until(lambda d: js(loaded % "tile") > 0)
            assert tiles.state.seen
            assert driver.find_element(By.ID, "map").is_displayed()
            for img in driver.find_elements(By.CSS_SELECTOR, "#map img.scene"):
                assert img.size["width"] > 100 and img.size["height"] > 100

            # a search by a chip: the query and the hits outlined
            qid = chips["ids"][8]
            driver.find_element(By.ID, "id").send_keys(qid)
            driver.find_element(By.CSS_SELECTOR, "#by-id button").click()
            cards = "return document.querySelectorAll('#grid .card').length"
            wait.until(lambda d: js(cards) == 20)
            assert len(driver.find_elements(By.CSS_SELECTOR, "#map-overlay polygon.hit")) == 20
            assert len(driver.find_elements(By.CSS_SELECTOR, "#map-overlay polygon.query")) == 1
            assert driver.find_element(By.CSS_SELECTOR, "#grid .card .place .date").text

            # a click on a hit on the map: it is highlighted, in the list too, and centred
            target = js("""
                const m = document.getElementById('map').getBoundingClientRect();
                for (const p of document.querySelectorAll('#map-overlay polygon.hit')) {
                  const r = p.getBoundingClientRect();
                  const x = r.left + r.width / 2, y = r.top + r.height / 2;
                  if (Math.abs(x - m.left - m.width / 2) < 60) continue;  // not centred yet
                  const top = document.elementFromPoint(x, y);
                  if (top === p) return [p.dataset.id, x - m.left, y - m.top];
                }
                return null;""")  # fmt: skip
            assert target is not None
            hit, x, y = target
            map_el = driver.find_element(By.ID, "map")
            dx, dy = x - map_el.size["width"] / 2, y - map_el.size["height"] / 2
            ActionChains(driver).move_to_element_with_offset(map_el, dx, dy).click().perform()
            wait.until(lambda d: js("const p = document.querySelector('polygon.selected');"
                                    "return p && p.dataset.id") == hit)  # fmt: skip
            selected = driver.find_element(By.CSS_SELECTOR, "#grid .card.selected .id").text
            assert selected == hit
            off = js("""
                const m = document.getElementById('map').getBoundingClientRect();
                const r = document.querySelector('polygon.selected').getBoundingClientRect();
                return [r.left + r.width / 2 - m.left - m.width / 2,
                        r.top + r.height / 2 - m.top - m.height / 2];""")  # fmt: skip
            assert abs(off[0]) < 1.5 and abs(off[1]) < 1.5, off
            # the dates of one place overlap: the hit's own scene is drawn on top
            top = js("return document.getElementById('map-scenes').lastElementChild.dataset.id")
            assert top == hit.split("/")[0]

            # a hit clicked in the list: centred and highlighted as well
            driver.find_element(By.CSS_SELECTOR, "#grid .card:nth-child(4) .locate").click()
            fourth = driver.find_element(By.CSS_SELECTOR, "#grid .card:nth-child(4) .id").text
            wait.until(lambda d: js("return document.querySelector('polygon.selected').dataset.id")
                       == fourth)  # fmt: skip

            # a typed box filters the search: every hit meets it
            w, s, e, n = scene_box(chips)
            box = (w, s, w + 0.4 * (e - w), s + 0.5 * (n - s))
            for name, v in zip("wsen", box):
                field = driver.find_element(By.ID, f"bbox-{name}")
                field.clear()
                field.send_keys(f"{v:.6f}")
            driver.find_element(By.ID, "apply").click()
            wait.until(lambda d: "bbox=" in d.current_url)
            typed = tuple(round(v, 6) for v in box)
            _, total = reference(chips, qid, 70, bbox=typed)
            wait.until(lambda d: js("return state.total") == total)
            shown = js("return state.results.map((r) => r.footprint)")
            assert len(shown) == min(total, 20) and all(intersects(fp, typed) for fp in shown)
            outlines = js("return document.querySelectorAll('#map-overlay polygon.hit').length")
            assert outlines == len(shown)

            # a box drawn with shift-drag: the inputs take it, the search reruns with it
            def drawn():
                return tuple(float(driver.find_element(By.ID, f"bbox-{c}").get_attribute("value"))
                             for c in "wsen")  # fmt: skip

            driver.find_element(By.ID, "zoom-fit").click()
            before = drawn()
            (ActionChains(driver).move_to_element_with_offset(map_el, 20, 10).key_down(Keys.SHIFT)
             .click_and_hold().move_by_offset(60, 30).move_by_offset(60, 40).release()
             .key_up(Keys.SHIFT).perform())  # fmt: skip
            wait.until(lambda d: drawn() != before)
            box = drawn()
            assert box[0] < box[2] and box[1] < box[3]
            _, total = reference(chips, qid, 70, bbox=box)
            wait.until(lambda d: js("return state.total") == total and quote(
                f"{box[0]:.6f}", safe="") in d.current_url)  # fmt: skip
            shown = js("return state.results.map((r) => r.footprint)")
            assert 0 < len(shown) and all(intersects(fp, box) for fp in shown)

            # the GeoJSON export: a download geopandas reads, the hits shown
            ids = js("return state.results.map((r) => r.image_id)")
            driver.find_element(By.ID, "export-geojson").click()
            out = tmp_path / "rshash-results.geojson"
            wait_for(out.exists, 30)
            time.sleep(0.2)
            frame = gpd.read_file(out)
            assert frame.crs.to_epsg() == 4326 and list(frame["id"]) == ids
            w, s, e, n = frame.total_bounds
            assert w <= box[2] and e >= box[0] and s <= box[3] and n >= box[1]

            # find all: two hits marked relevant, one not; every chip found outlined, as
            # many as the API returns for the same marks, and its export read back
            cards = driver.find_elements(By.CSS_SELECTOR, "#grid .card")
            for card, how in zip(cards[1:4], ("good", "good", "bad")):
                card.find_element(By.CSS_SELECTOR, f"button.{how}").click()
            threshold = driver.find_element(By.ID, "find-threshold")
            threshold.send_keys("0.2")
            driver.find_element(By.ID, "find-all").click()
            wait.until(lambda d: "chips found" in d.find_element(By.ID, "found").text)
            marks = js("return [...state.marks]")
            params = [("id", qid), ("threshold", "0.2"), ("bbox", js("return state.bbox"))]
            params += [(v, k) for k, v in marks]
            expected = TestClient(create_app(geo_index)).get("/api/findall", params=params)
            total = expected.json()["total"]
            assert total >= 2 and f"{total} of 70 chips found" in js(
                "return document.getElementById('found').textContent")  # fmt: skip
            found = js("return document.querySelectorAll('#map-overlay polygon.found').length")
            assert found == total
            driver.find_element(By.ID, "export-findall").click()
            out = tmp_path / "rshash-findall.geojson"
            wait_for(out.exists, 30)
            time.sleep(0.2)
            assert list(gpd.read_file(out)["id"]) == [
                r["image_id"] for r in expected.json()["results"]
            ]

            # dates: only the chips of the later scene
            later = max(x["date"] for x in chips["scenes"])
            js("document.getElementById('date-from').value = arguments[0];"
               "document.getElementById('clear-place').click();"
               "document.getElementById('date-from').value = arguments[0];"
               "document.getElementById('apply').click();", later)  # fmt: skip
            wait.until(lambda d: "date_from=" + later in d.current_url)
            wait.until(lambda d: js("return state.total") == 35)
            assert {r for r in js("return state.results.map((r) => r.date)")} == {later}
            shown = (
                "return [...document.querySelectorAll('#map img.scene')].filter((i) => !i.hidden)"
            )
            assert js(shown + ".map((i) => i.dataset.id)") == [  # only that date's scene drawn
                x["id"] for x in chips["scenes"] if x["date"] == later
            ]

            # the "box" button: a plain drag then draws a box
            driver.find_element(By.ID, "draw-box").click()
            assert driver.find_element(By.ID, "draw-box").get_attribute("aria-pressed") == "true"
            (ActionChains(driver).move_to_element_with_offset(map_el, -100, -60).click_and_hold()
             .move_by_offset(90, 50).move_by_offset(90, 50).release().perform())  # fmt: skip
            wait.until(lambda d: "bbox=" in d.current_url and js("return state.bbox") != "")
            box = drawn()
            assert driver.find_element(By.ID, "draw-box").get_attribute("aria-pressed") == "false"
            _, total = reference(chips, qid, 70, bbox=box, date_from=later)
            wait.until(lambda d: js("return state.total") == total)
            shown = js("return state.results.map((r) => [r.footprint, r.date])")
            assert all(intersects(fp, box) and date == later for fp, date in shown)

            # a drag pans the map
            centre = map_el.get_attribute("data-centre")
            ActionChains(driver).move_to_element(map_el).click_and_hold().move_by_offset(
                80, 0).release().perform()  # fmt: skip
            wait.until(lambda d: map_el.get_attribute("data-centre") != centre)
            assert float(map_el.get_attribute("data-centre").split(",")[0]) < float(
                centre.split(",")[0])  # fmt: skip

            # a box with min > max: the server's one line, shown
            driver.find_element(By.ID, "bbox-w").clear()
            driver.find_element(By.ID, "bbox-w").send_keys("10")
            driver.find_element(By.ID, "bbox-e").clear()
            driver.find_element(By.ID, "bbox-e").send_keys("5")
            driver.find_element(By.ID, "apply").click()
            wait.until(lambda d: "min > max" in d.find_element(By.ID, "status").text)
            driver.save_screenshot(str(tmp_path / "map.png"))
    finally:
        driver.quit()


def marks_for(chips, qid, n_pos=4, n_neg=3):
    """Relevant and not relevant marks as a person gives them: the query's nearest chips
    relevant, its farthest not."""
    bits = chips["bits"]
    d = np.abs(bits - bits[chips["ids"].index(qid)]).sum(1)
    order = [int(r) for r in np.argsort(d, kind="stable") if chips["ids"][r] != qid]
    return [chips["ids"][r] for r in order[:n_pos]], [chips["ids"][r] for r in order[-n_neg:]]


@pytest.mark.parametrize("rule", ["rocchio", "probe_codes", "probe_features", None])
def test_find_all_returns_every_chip_above_the_threshold(client, chips, geo_index, rule):
    """The API against the rule computed directly on the index's codes and the scenes'
    features files: the marked chips first, then every chip scoring at least the
    threshold, by score; the rejected never."""
    from rshash.archive.findall import THRESHOLDS, default_rule, score
    from rshash.archive.geo import archive_features

    index = chips["index"]
    qid = chips["ids"][8]
    pos, neg = marks_for(chips, qid)
    params = {"id": qid, "pos": pos, "neg": neg}
    if rule:
        params["rule"] = rule
    doc = client.get("/api/findall", params=params).json()
    used = rule or default_rule(index)
    assert doc["rule"] == used == (rule or "probe_features")  # itq: the archive's own hash
    rows = {i: r for r, i in enumerate(chips["ids"])}
    codes = np.packbits(chips["bits"].astype(bool), axis=1)
    s = score(used, codes, archive_features(index), [rows[qid]], [rows[i] for i in pos],
              [rows[i] for i in neg])  # fmt: skip
    marked = [qid, *pos]
    ids = [r["image_id"] for r in doc["results"]]
    assert set(ids[: len(marked)]) == set(marked) and not set(ids) & set(neg)
    rest = [i for i in ids if i not in marked]
    above = [i for i, r in rows.items() if i not in marked + neg and s[r] >= THRESHOLDS[used]]
    expected = sorted(above, key=lambda i: (-s[rows[i]], rows[i]))
    assert rest == expected
    got = [r["score"] for r in doc["results"][len(marked) :]]
    assert got == [round(float(s[rows[i]]), 4) for i in rest]
    low = client.get("/api/findall", params={**params, "threshold": -1e9}).json()
    assert low["total"] == 70 - len(neg)  # every chip but the rejected ones


def test_find_all_as_geojson_one_polygon_per_patch(client, chips, tmp_path):
    import geopandas as gpd
    import shapely

    qid = chips["ids"][8]
    pos, neg = marks_for(chips, qid, 8, 2)
    params = {"id": qid, "pos": pos, "neg": neg, "threshold": 0.3}
    plain = client.get("/api/findall", params={**params, "format": "geojson"})
    assert plain.headers["content-type"].startswith("application/geo+json")
    (tmp_path / "chips.geojson").write_bytes(plain.content)
    frame = gpd.read_file(tmp_path / "chips.geojson")
    assert frame.crs.to_epsg() == 4326 and len(frame) >= 9
    merged = client.get("/api/findall", params={**params, "merge": True, "format": "geojson"})
    (tmp_path / "patches.geojson").write_bytes(merged.content)
    patches = gpd.read_file(tmp_path / "patches.geojson")
    assert len(patches) <= len(frame)
    for scene, group in frame.groupby("scene"):  # patches cover the same ground, per scene
        union = shapely.union_all(group.geometry.values)
        mine = patches[patches["scene"] == scene]
        assert mine["chips"].sum() == len(group)
        assert shapely.union_all(mine.geometry.values).symmetric_difference(union).area < 1e-12
        for poly in mine.geometry:
            ring = list(poly.exterior.coords)
            signed = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))
            assert signed > 0  # counter-clockwise, as RFC 7946 asks


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"id": "nope/0_0"}, 404, "no image with id 'nope/0_0'"),
        ({}, 400, "needs a query chip of the archive or a chip marked relevant"),
        ({"rule": "knn"}, 400, "unknown find-all rule 'knn'"),
        ({"bbox": "1,2,0,3"}, 400, "min > max"),
    ],
)
def test_find_all_refuses_bad_input_in_one_line(client, chips, params, status, message):
    if params and "id" not in params:
        params = {"id": chips["ids"][0], **params}
    r = client.get("/api/findall", params=params)
    assert r.status_code == status and message in r.json()["detail"]
    assert "\n" not in r.json()["detail"]


def test_the_command_line_finds_what_the_api_finds(client, chips, geo_index, tmp_path, capsys):
    import geopandas as gpd

    qid = chips["ids"][8]
    pos, neg = marks_for(chips, qid)
    api = client.get("/api/findall", params={"id": qid, "pos": pos, "neg": neg}).json()
    api.pop("query_ms")
    argv = ["findall", "--index", str(geo_index), "--id", qid]
    for i in pos:
        argv += ["--relevant", i]
    for i in neg:
        argv += ["--not-relevant", i]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == api
    out = tmp_path / "found.geojson"
    assert main([*argv, "--geojson", str(out)]) == 0
    assert list(gpd.read_file(out)["id"]) == [r["image_id"] for r in api["results"]]
    assert main([*argv, "--bbox", "1,2,0,3"]) == 2
    assert "min > max" in capsys.readouterr().err
