"""How an archive's search results are shown: each result described once
(:func:`describe`, what ``rshash search --json``, the server's JSON and CSV and the
page show), plain-text tables, an HTML page of thumbnails, and thumbnails."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from rshash.archive.query import Page, Result
from rshash.archive.store import Index
from rshash.atomic import atomic_write

# what each result says, in this order (the CSV export's columns)
RESULT_FIELDS = (
    "rank",
    "image_id",
    "path",
    "distance",
    "score",
    "class_name",
    "predicted_class",
)
# and what a chip of a geo-referenced scene says besides (rshash.archive.scenes)
GEO_FIELDS = ("scene", "date", "window", "footprint")


def describe(index: Index, page: Page) -> list[dict]:
    """Each result of a page (:data:`RESULT_FIELDS`): rank, image id, path, distance,
    score, class and predicted class (their names; "-" when unknown, None without a
    class head); a chip of a scene also its :data:`GEO_FIELDS`: scene id, date (ISO),
    window in the scene (col_off, row_off, width, height) and footprint (lon/lat
    corners)."""
    out = []
    for n, (row, d, s) in enumerate(zip(page.rows, page.distance, page.score)):
        row = int(row)
        pred = index.predicted_of(row)
        values = (
            page.offset + n + 1,
            index.image_id_of(row),
            index.path_of(row),
            int(d),
            round(float(s), 4),
            index.class_name(index.label_of(row)),
            None if pred is None else index.class_name(pred),
        )
        doc = dict(zip(RESULT_FIELDS, values))
        geo = index.geo_of(row)
        if geo is not None:
            doc.update(
                scene=geo["scene"]["id"],
                date=geo["date"],
                window=geo["window"],
                footprint=geo["footprint"],
            )
        out.append(doc)
    return out


def as_geojson(described: list[dict], query: str | None = None) -> dict:
    """Described results (:func:`describe`) of chips as an RFC 7946 FeatureCollection:
    one Polygon per chip (lon/lat, counter-clockwise, closed), its rank, distance,
    score, id, scene and date as properties."""
    features = []
    for doc in described:
        if "footprint" not in doc:
            raise ValueError(f"{doc['image_id']}: not a chip of a geo-referenced scene")
        ring = doc["footprint"][::-1]  # corners are clockwise (UL, UR, LR, LL)
        features.append(
            {
                "type": "Feature",
                "id": doc["image_id"],
                "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
                "properties": {
                    "rank": doc["rank"],
                    "id": doc["image_id"],
                    "distance": doc["distance"],
                    "score": doc["score"],
                    "scene": doc["scene"],
                    "date": doc["date"],
                    "window": doc["window"],
                },
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    if query is not None:
        collection["query"] = query
    return collection


def chip_jpeg(index: Index, row: int, size: int = 128) -> bytes:
    """A JPEG of a chip read again from its scene's window (bands and stretch as
    indexed), at most ``size`` pixels a side."""
    from PIL import Image

    from rshash.archive.scenes import read_window

    geo = index.geo_of(row)
    pixels = read_window(geo["scene"], geo["window"], max_side=size)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def as_json(index: Index, results: list[Result]) -> list[dict]:
    """The results of a search as JSON-ready documents, one per query."""
    return [
        {
            "query": r.query,
            "predicted_class": None
            if r.predicted_label is None
            else index.class_name(r.predicted_label),
            "total": r.page.total,
            "results": describe(index, r.page),
        }
        for r in results
    ]


def format_results(index: Index, results: list[Result]) -> str:
    """Plain-text tables: rank, distance, class (a chip of a scene: its date), the
    predicted class (methods with a class head) and image id."""
    lines = []
    with_pred = any(s.predicted_label is not None for s in index.segments)
    with_geo = bool(index.header.get("geo"))
    for res in results:
        title = f"query {res.query}"
        if res.predicted_label is not None:
            title += f"  (predicted class {index.class_name(res.predicted_label)})"
        lines.append(title)
        lines.append(
            f"{'rank':>4}  {'distance':>8}  "
            + (f"{'date':<10}  " if with_geo else f"{'class':<20}  ")
            + (f"{'predicted':<20}  " if with_pred else "")
            + "image_id"
        )
        for h in describe(index, res.page):
            lines.append(
                f"{h['rank']:>4}  {h['distance']:>8}  "
                + (f"{h['date']:<10}  " if with_geo else f"{h['class_name']:<20}  ")
                + (f"{h['predicted_class']:<20}  " if with_pred else "")
                + h["image_id"]
            )
        lines.append("")
    return "\n".join(lines)


def thumbnail_jpeg(path: str, size: int = 96, max_pixels: int | None = None) -> bytes:
    """A small JPEG copy of an image file, decoded by the pipeline's decoder (refused,
    before any pixel is decoded, past ``max_pixels``)."""
    from rshash.data.images import decode

    img = decode(path, max_pixels=max_pixels)  # errors name the file
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _thumbnail(path: str, size: int = 96) -> str:
    """An inline JPEG data URL of a small copy of the image ("" if it has no path)."""
    if not path:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(path, size)).decode()


def write_html(index: Index, results: list[Result], out: str | os.PathLike) -> None:
    """A page with each query and its results as inline thumbnails."""

    def cell(src, caption):
        img = f'<img src="{src}" alt="">' if src else '<div class="none">no image</div>'
        return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"

    parts = [
        "<!doctype html><meta charset='utf-8'><title>rshash search</title><style>"
        "figure{display:inline-block;margin:4px;width:110px;font:11px sans-serif;"
        "vertical-align:top}figure img{width:96px}.q{border-right:2px solid #333;"
        "padding-right:8px}</style>"
    ]
    for res in results:
        parts.append(f"<h3>{html.escape(res.query)}</h3><div>")
        parts.append(
            cell(_thumbnail(res.query), "query").replace("<figure>", '<figure class="q">', 1)
        )
        for h in describe(index, res.page):
            parts.append(
                cell(
                    _thumbnail(h["path"]),
                    f"{h['rank']}. d={h['distance']} {h['class_name']} {h['image_id']}",
                )
            )
        parts.append("</div>")

    def write(tmp):
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")

    atomic_write(out, write)
