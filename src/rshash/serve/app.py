"""The web app of ``rshash serve``: a JSON API (its OpenAPI schema at ``/openapi.json``)
and one static page that uses it.

- ``GET /api/index``: the index (size, generation, method, classes, limits);
- ``GET /api/search?id=IMAGE_ID`` or ``?code=HEX``, ``POST /api/search`` with the image
  as multipart field ``image``; both take ``k``, ``offset``, ``class``,
  ``max_distance`` and repeated ``pos`` / ``neg`` (image ids marked relevant or not:
  relevance feedback, rshash.archive.query) and answer ``{"query_ms", "query",
  "total", "results": [{"rank", "image_id", "path", "distance", "score",
  "class_name", "predicted_class"}]}``; ``format=csv`` or ``json`` makes the answer
  a download (the page's export);
- on an index of geo-referenced scenes (rshash.archive.geo) the same searches also
  take ``bbox=w,s,e,n`` (EPSG:4326) and ``date_from`` / ``date_to`` (ISO days), each
  result carries its ``scene``, ``date``, ``window`` and lon/lat ``footprint``, and
  ``format=geojson`` gives the page as RFC 7946 GeoJSON (one polygon per chip);
  ``GET /api/quicklook/{scene_id}`` is a scene's quicklook (PNG, Web Mercator) for
  the page's map;
- ``GET /api/images/{image_id}/thumbnail``: a JPEG of an indexed image, or of a
  chip read again from its scene's window (ids contain ``/`` and are taken whole).

Safe by construction: an id is only ever looked up in the index, so no request
names a file; uploads are limited in bytes (read with a cap, before parsing) and
in pixels (checked on the image header by the pipeline's decoder,
rshash.data.images.decode, before decoding); the page builds its DOM with
``textContent`` only, under a Content-Security-Policy that allows no inline
script; every refused request is a 4xx whose ``detail`` names the problem.
"""

import csv
import io
import ipaddress
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from rshash import RshashError
from rshash.archive import query as archive_query
from rshash.archive.findall import as_document, as_feature_collection, default_rule, find_all_in
from rshash.archive.geo import archive_features
from rshash.archive.live import LiveIndex
from rshash.archive.present import GEO_FIELDS, RESULT_FIELDS, as_geojson, describe
from rshash.data.images import TooLarge

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a 20 MB image file
MAX_UPLOAD_PIXELS = 40_000_000  # about 6300 x 6300: far above any tile, far below a bomb
MAX_K = 1000
MAX_MARKED = 200  # relevant plus rejected images in one feedback round
THUMBNAIL_SIDE = 128
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# a basemap: an XYZ tile template on one http(s) origin, e.g.
# https://tile.openstreetmap.org/{z}/{x}/{y}.png
_BASEMAP = re.compile(r"^(https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?)/[^\s\"'<>\\]*$")
# the columns a CSV export adds for chips of scenes (the window and footprint: GeoJSON)
CSV_GEO_FIELDS = GEO_FIELDS[:2]


def basemap_origin(url: str | None) -> str | None:
    """The origin of a basemap template (what the page's Content-Security-Policy lets
    images come from); one line naming the problem when it is no XYZ template."""
    if url is None:
        return None
    m = _BASEMAP.match(url)
    if not m or not all(p in url for p in ("{z}", "{x}", "{y}")):
        raise RshashError(
            f"--basemap must be an http(s) XYZ tile template with {{z}}, {{x}} and {{y}}, "
            f"e.g. https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png (got {url!r})"
        )
    return m.group(1)


def page_headers(basemap: str | None = None) -> dict:
    """The page's headers: images from the server itself, and from the basemap's one
    origin only when a basemap is given (off by default: no request leaves the
    machine)."""
    origin = basemap_origin(basemap)
    if origin is None:
        return dict(PAGE_HEADERS)
    csp = PAGE_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self' blob: data:", f"img-src 'self' blob: data: {origin}"
    )
    return {**PAGE_HEADERS, "Content-Security-Policy": csp}


class Uploads:
    """Encodes uploaded query images with the index's model (loaded, with torch, at
    the first upload; one encoding at a time)."""

    def __init__(self, model_path, threads: int):
        self.model_path, self.threads = model_path, threads
        self._encoder = None
        self._lock = threading.Lock()

    def encode(self, index, data: bytes, filename: str):
        """(packed code (1, bits/8), predicted label or None) of an uploaded file."""
        from rshash.archive.encoder import Encoder
        from rshash.data.images import decode
        from rshash.digest import file_sha256

        model = self.model_path or index.header.get("model")
        if model is None:
            raise HTTPException(
                400,
                "this index records no model (built from codes): search by image id, "
                "or start rshash serve with --model to search by upload",
            )
        fd, tmp = tempfile.mkstemp(prefix="rshash-upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                decode(tmp, max_pixels=MAX_UPLOAD_PIXELS)
            except RshashError as err:  # the message names our temporary file
                text = str(err).replace(f"image {tmp}", f"the upload {filename!r}")
                raise HTTPException(400, text.replace(tmp, "the upload")) from None
            with self._lock:
                # a retrained model at the same path, and the index rebuilt with it:
                # the model in memory is stale, so it is loaded again (and checked)
                stale = self._encoder is not None and not self._encoder.current_for(index)
                if self._encoder is None or (stale and file_sha256(model) != self._encoder.sha256):
                    self._encoder = Encoder(model, None, self.threads)
                self._encoder.check(index)
                packed, predicted = self._encoder([tmp])
        except RshashError as err:
            raise HTTPException(400, str(err)) from None
        finally:
            os.unlink(tmp)
        return packed, None if predicted is None else int(predicted[0])


class Thumbnails:
    """Small images made on request (thumbnails of indexed images and of chips read
    from their scene's window, scenes' quicklooks), the most recent kept in memory."""

    def __init__(self, size: int = 2048):
        self.size, self._cache, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make) -> bytes:
        """The bytes cached under ``key``, made by ``make()`` the first time."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = make()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return data


def _row_of(index, image_id: str, what: str = "image") -> int:
    try:
        return archive_query.row_of(index, image_id, what)
    except archive_query.NotInIndex as err:
        raise HTTPException(404, str(err)) from None


def _query_from(index, image_id: str | None, code: str | None):
    """(packed query, description) of a query by image id or by code (hex); a chip of
    a scene also says its scene, date and footprint (the page outlines it)."""
    if (image_id is None) == (code is None):
        raise HTTPException(400, "give one query: id=IMAGE_ID or code=HEX (or POST an image)")
    if image_id is not None:
        row = _row_of(index, image_id)
        info = {"image_id": image_id}
        geo = index.geo_of(row)
        if geo is not None:
            info.update(scene=geo["scene"]["id"], date=geo["date"], footprint=geo["footprint"])
        return index.code_of(row), info
    nbytes = index.bits // 8
    if len(code) != 2 * nbytes or not _HEX.match(code):
        raise HTTPException(
            400, f"code must be {2 * nbytes} hexadecimal digits ({index.bits} bits)"
        )
    return np.frombuffer(bytes.fromhex(code), np.uint8).reshape(1, nbytes), {}


def _search(index, query, info, params: dict, threads: int, started: float) -> dict:
    """Rank (the archive's one query path), then describe the page (everything the
    page and the exports show)."""
    pos, neg = params["pos"] or [], params["neg"] or []
    if len(pos) + len(neg) > MAX_MARKED:
        raise HTTPException(400, f"at most {MAX_MARKED} marked images per search")
    try:
        if params["fmt"] == "geojson" and not index.header.get("geo"):
            raise RshashError("format=geojson needs an index of geo-referenced scenes")
        (page,) = archive_query.search(
            index,
            query,
            params["k"],
            params["offset"],
            class_name=params["class_name"],
            max_distance=params["max_distance"],
            relevant=pos,
            not_relevant=neg,
            place=params["place"],
            threads=threads,
        )
    except archive_query.NotInIndex as err:
        raise HTTPException(404, str(err)) from None
    except RshashError as err:
        raise HTTPException(400, str(err)) from None
    query_ms = (time.perf_counter() - started) * 1000
    return {
        "query_ms": round(query_ms, 3),
        "query": {**info, "code": query.tobytes().hex()},
        "generation": index.generation,
        "total": page.total,
        "offset": params["offset"],
        "k": params["k"],
        "results": describe(index, page),
    }


def _escape_cell(value) -> str:
    """A CSV cell a spreadsheet shows as text (no formula injection): only text is
    escaped; a number (a negative feedback score) stays a number."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_CSV_RISKY) else text


def _query_name(info: dict) -> str:
    """What a GeoJSON export names as its query: the image id, the upload or the code."""
    if "image_id" in info:
        return info["image_id"]
    if "upload" in info:
        return "upload " + info["upload"]
    return "code " + info["code"]


class _FeaturesCache:
    """The archive's features (find-all's probe on features), read once per generation
    of the served index (rshash.archive.geo.archive_features: each file's digest
    checked)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key, self._features = None, None

    def get(self, index):
        key = (str(index.location), index.generation)
        with self._lock:
            if self._key != key:
                self._features, self._key = None, None
                self._features, self._key = archive_features(index), key
            return self._features


def _answer(doc: dict, fmt: str | None, geo: bool = False) -> Response:
    if fmt is None:
        return JSONResponse(doc)
    if fmt == "json":
        body = json.dumps(doc, indent=1, ensure_ascii=False).encode()
        kind = "application/json"
    elif fmt == "geojson":
        collection = as_geojson(doc["results"], _query_name(doc["query"]))
        body = json.dumps(collection, ensure_ascii=False).encode()
        kind = "application/geo+json"
    else:
        fields = RESULT_FIELDS + (CSV_GEO_FIELDS if geo else ())
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(fields)
        for r in doc["results"]:
            w.writerow([_escape_cell(r.get(c)) for c in fields])
        body, kind = out.getvalue().encode(), "text/csv; charset=utf-8"
    disposition = f'attachment; filename="rshash-results.{fmt}"'
    return Response(body, media_type=kind, headers={"Content-Disposition": disposition})


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def warm_up(index) -> None:
    """One search of each kind, so that the first user's query does not wait for the
    compiled kernels to load."""
    if len(index):
        code, first = index.code_of(0), index.image_id_of(0)
        archive_query.search(index, code, 1)
        archive_query.search(index, code, 1, max_distance=0)
        archive_query.search(index, code, 1, relevant=[first])
        if index.header.get("geo"):
            place = archive_query.Place.of(bbox=(-180, -90, 180, 90))
            archive_query.search(index, code, 1, place=place)


def scene_list(index) -> list[dict]:
    """What the page's map needs of each scene of a geo-referenced index."""
    keys = ("id", "date", "bounds_4326", "quicklook_bounds_3857", "n_chips", "n_left_out")
    return [{k: s.get(k) for k in keys} for s in index.scenes]


def quicklook_png(index, scene_id: str) -> bytes:
    """A scene's quicklook (made at index time, in Web Mercator) as a PNG; 404 when the
    index holds no such scene."""
    from PIL import Image

    from rshash.archive.geo import quicklooks

    looks = quicklooks(index)
    if scene_id not in looks:
        raise HTTPException(404, f"no scene with id {scene_id!r} in the index")
    buf = io.BytesIO()
    Image.fromarray(np.asarray(looks[scene_id]), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def create_app(
    index_path, model_path=None, threads: int = 1, poll: float = 1.0, basemap: str | None = None
) -> FastAPI:
    """The app serving ``index_path`` (reopened when it changes, every ``poll`` s); the
    page's map draws ``basemap`` tiles (an XYZ template) under the scenes when given."""
    headers = page_headers(basemap)
    live = LiveIndex(index_path, poll)
    warm_up(live.current)
    uploads = Uploads(model_path, threads)
    thumbs = Thumbnails()
    looks = Thumbnails(256)  # a quicklook is larger (some 100 kB), and one per scene

    @asynccontextmanager
    async def lifespan(_app):
        live.start()
        yield
        live.stop()

    app = FastAPI(
        title="rshash search",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load their scripts from a CDN: the schema only
        redoc_url=None,
        description="Search an rshash index: by image id, by code or by an uploaded image.",
    )
    app.state.live = live

    def common(
        k: Annotated[int, Query(ge=1, le=MAX_K, description="results per page")] = 20,
        offset: Annotated[int, Query(ge=0, le=10_000_000, description="results to skip")] = 0,
        class_name: Annotated[
            str | None, Query(alias="class", description="only images of this class")
        ] = None,
        max_distance: Annotated[
            int | None, Query(ge=0, description="only images at this Hamming distance or less")
        ] = None,
        pos: Annotated[list[str] | None, Query(description="ids marked relevant")] = None,
        neg: Annotated[list[str] | None, Query(description="ids marked not relevant")] = None,
        bbox: Annotated[
            str | None,
            Query(
                description="chips of scenes: only those whose footprint meets this box, "
                "west,south,east,north in EPSG:4326"
            ),
        ] = None,
        date_from: Annotated[
            str | None, Query(description="chips of scenes: only those of this day or later")
        ] = None,
        date_to: Annotated[
            str | None, Query(description="chips of scenes: only those of this day or earlier")
        ] = None,
        fmt: Annotated[
            str | None,
            Query(alias="format", pattern="^(csv|json|geojson)$", description="a download"),
        ] = None,
    ) -> dict:
        try:  # checked before an upload is encoded
            place = archive_query.Place.of(bbox, date_from, date_to)
        except RshashError as err:
            raise HTTPException(400, str(err)) from None
        return {
            "k": k,
            "offset": offset,
            "class_name": class_name,
            "max_distance": max_distance,
            "pos": pos,
            "neg": neg,
            "place": place,
            "fmt": fmt,
        }

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers=headers)

    @app.get("/app.js", include_in_schema=False)
    def script():
        return FileResponse(STATIC / "app.js", headers=headers)

    @app.get("/app.css", include_in_schema=False)
    def style():
        return FileResponse(STATIC / "app.css", headers=headers)

    @app.get("/api/index", summary="the index being served")
    def index_info():
        index = live.current
        h = index.header
        return {
            "n": len(index),
            "generation": index.generation,
            "method": h.get("method"),
            "bits": index.bits,
            "backbone": h.get("backbone"),
            "class_names": h.get("class_names") or [],
            "can_upload": bool(uploads.model_path or h.get("model")),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "max_upload_pixels": MAX_UPLOAD_PIXELS,
            "max_k": MAX_K,
            "geo": bool(h.get("geo")),
            "scenes": scene_list(index),
            "basemap": basemap,
        }

    features = _FeaturesCache()

    @app.get(
        "/api/findall",
        summary="every chip like the marked ones: scored over the whole archive, "
        "all above a threshold, ranked",
    )
    def findall(
        id: Annotated[str | None, Query(description="the query: an indexed chip's id")] = None,
        pos: Annotated[list[str] | None, Query(description="ids marked relevant")] = None,
        neg: Annotated[list[str] | None, Query(description="ids marked not relevant")] = None,
        rule: Annotated[
            str | None, Query(description="rocchio, probe_codes or probe_features")
        ] = None,
        threshold: Annotated[float | None, Query(description="the rule's score")] = None,
        bbox: Annotated[str | None, Query(description="west,south,east,north")] = None,
        date_from: Annotated[str | None, Query()] = None,
        date_to: Annotated[str | None, Query()] = None,
        merge: Annotated[bool, Query(description="one polygon per patch of chips")] = False,
        fmt: Annotated[
            str | None, Query(alias="format", pattern="^(json|geojson)$", description="a download")
        ] = None,
    ):
        started = time.perf_counter()
        index = live.current
        try:
            place = archive_query.Place.of(bbox, date_from, date_to)
            chosen = rule or default_rule(index)
            feats = features.get(index) if chosen == "probe_features" else None
            found = find_all_in(
                index, id, pos or (), neg or (), rule=chosen, threshold=threshold,
                place=place, features=feats, threads=threads,
            )  # fmt: skip
            doc = as_document(index, found, id, merge)
        except archive_query.NotInIndex as err:
            raise HTTPException(404, str(err)) from None
        except RshashError as err:
            raise HTTPException(400, str(err)) from None
        doc["query_ms"] = round((time.perf_counter() - started) * 1000, 1)
        if fmt == "geojson":
            body = json.dumps(as_feature_collection(doc), ensure_ascii=False).encode()
            disposition = 'attachment; filename="rshash-findall.geojson"'
            return Response(body, media_type="application/geo+json",
                            headers={"Content-Disposition": disposition})  # fmt: skip
        if fmt == "json":
            disposition = 'attachment; filename="rshash-findall.json"'
            return Response(json.dumps(doc, indent=1).encode(), media_type="application/json",
                            headers={"Content-Disposition": disposition})  # fmt: skip
        return JSONResponse(doc)

    @app.get("/api/search", summary="search by an indexed image's id or by a code")
    def search_get(
        params: Annotated[dict, Depends(common)],
        id: Annotated[str | None, Query(description="an indexed image's id")] = None,
        code: Annotated[str | None, Query(description="a query code, hexadecimal")] = None,
    ):
        started = time.perf_counter()
        index = live.current
        query, info = _query_from(index, id, code)
        doc = _search(index, query, info, params, threads, started)
        return _answer(doc, params["fmt"], bool(index.header.get("geo")))

    @app.post(
        "/api/search",
        summary="search by an uploaded image (multipart field `image`)",
        openapi_extra=_MULTIPART,
    )
    async def search_post(request: Request, params: Annotated[dict, Depends(common)]):
        body = await _read_capped(request, MAX_UPLOAD_BYTES + 64 * 1024)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(415, "send the image as multipart/form-data field 'image'")
        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
        except HTTPException:
            raise
        except Exception as exc:  # a malformed multipart body
            raise HTTPException(400, f"malformed multipart body: {exc}") from None
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise HTTPException(400, "multipart field 'image' (a file) is missing")
        data = await image.read()
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"upload over the limit of {MAX_UPLOAD_BYTES} bytes")
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        name = (image.filename or "upload")[:200]

        def run():
            index = live.current
            t0 = time.perf_counter()
            packed, predicted = uploads.encode(index, data, name)
            encode_ms = (time.perf_counter() - t0) * 1000
            info = {"upload": name}
            if predicted is not None:
                info["predicted_class"] = index.class_name(predicted)
            doc = _search(index, packed, info, params, threads, time.perf_counter())
            doc["encode_ms"] = round(encode_ms, 3)
            return doc, bool(index.header.get("geo"))

        from starlette.concurrency import run_in_threadpool

        doc, geo = await run_in_threadpool(run)
        return _answer(doc, params["fmt"], geo)

    @app.get(
        "/api/images/{image_id:path}/thumbnail",
        summary="a JPEG thumbnail of an indexed image",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(image_id: str):
        from rshash.archive.present import chip_jpeg, thumbnail_jpeg

        index = live.current
        row = _row_of(index, image_id)
        path = index.path_of(row)
        if not path:
            raise HTTPException(404, f"image {image_id!r} has no file (indexed from codes)")
        seg, r = index.locate(row)
        if index.geo_of(row) is not None:  # a chip: its window of the scene, read again

            def make():
                return chip_jpeg(index, row, THUMBNAIL_SIDE)
        else:

            def make():
                return thumbnail_jpeg(path, THUMBNAIL_SIDE, max_pixels=MAX_UPLOAD_PIXELS)

        try:
            data = thumbs.get((seg.name, r), make)
        except TooLarge:
            raise HTTPException(
                413, f"image {image_id!r} is over the limit of {MAX_UPLOAD_PIXELS} pixels"
            ) from None
        except RshashError:
            raise HTTPException(404, f"the file of image {image_id!r} cannot be read") from None
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    @app.get(
        "/api/quicklook/{scene_id}",
        summary="a scene's quicklook for the map (PNG, EPSG:3857, at quicklook_bounds_3857)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def quicklook(scene_id: str):
        index = live.current
        name = (index.header.get("geo") or {}).get("quicklooks")
        if name is None:
            raise HTTPException(404, "this index holds no scenes (not geo-referenced)")
        data = looks.get((name, scene_id), lambda: quicklook_png(index, scene_id))
        return Response(
            data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    index_path,
    model_path=None,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads=1,
    basemap: str | None = None,
):
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    app = create_app(index_path, model_path, threads, basemap=basemap)
    if not is_loopback(host):
        print(
            f"rshash serve: warning: listening on {host}, not a loopback address: anyone who "
            "can reach this port can search the index and see its images (no login, no TLS)",
            file=sys.stderr,
        )
    index = app.state.live.current
    print(f"rshash serve: {len(index)} images; open http://{host}:{port}/", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
