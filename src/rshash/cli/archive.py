"""The archive verbs: build and change a search index (``index build|append|remove``),
search it from the command line (``search``) or in the browser (``serve``)."""

from __future__ import annotations

import argparse
import json
import shlex

from rshash import RshashError
from rshash.cli.registry import arg, group, one_of, verb


def _old_form(a):
    """``rshash index`` without a subcommand: the old flag forms (``--out``, ``--append``,
    ``--remove``) answer with the new form, in one line."""
    forms = []
    if a.old_append is not None:
        forms.append(["append", "--index", a.old_index or "INDEX", "--images", a.old_append])
        forms[-1] += _given(a, "model", "backbone", "threads")
    if a.old_remove:
        forms.append(["remove", "--index", a.old_index or "INDEX", *a.old_remove])
    if not forms and any(
        v is not None for v in (a.old_out, a.old_images, a.old_codes, a.old_model)
    ):
        forms.append(["build", "--out", a.old_out or "PATH"])
        if a.old_codes is not None:
            forms[-1] += ["--codes", a.old_codes, *_given(a, "model")]
        else:
            forms[-1] += ["--images", a.old_images or "DIR", "--model", a.old_model or "MODEL"]
            forms[-1] += _given(a, "backbone", "threads")
    if not forms:
        raise RshashError("give a subcommand: build, append or remove (rshash index --help)")
    raise RshashError(
        "use " + " and ".join(f"`rshash index {shlex.join(map(str, f))}`" for f in forms)
    )


def _given(a, *names) -> list[str]:
    words = []
    for name in names:
        value = getattr(a, f"old_{name}")
        if value is not None:
            words += [f"--{name}", str(value)]
    return words


def _hidden(flag: str, **options):
    """An old flag of ``rshash index``, parsed only to name its new form."""
    return arg(flag, dest="old_" + flag[2:], help=argparse.SUPPRESS, **options)


group(
    "index",
    "build a search index (build), add images to it (append) or remove images (remove)",
    _hidden("--out"),
    _hidden("--images"),
    _hidden("--codes"),
    _hidden("--model"),
    _hidden("--backbone"),
    _hidden("--append"),
    _hidden("--remove", nargs="+"),
    _hidden("--index"),
    _hidden("--threads", type=int),
    func=_old_form,
)


@verb(
    "index build",
    "encode a folder of images (class sub-folders or flat) or a codes file into a search index",
    arg(
        "--out", required=True, metavar="PATH", help="the index to build (replaces any index there)"
    ),
    one_of(
        arg(
            "--images", metavar="DIR", help="a folder of images: flat, or one sub-folder per class"
        ),
        arg("--codes", help="a codes file (.parquet) instead of images"),
        required=True,
    ),
    arg("--model", help="a trained model (.npz); needed with --images"),
    arg("--backbone", help="the backbone, for a model that does not record it (with --images)"),
    arg("--threads", type=int, default=1),
)
def cmd_index_build(a):
    from rshash.archive import build_index, index_from_codes

    if a.codes is not None:
        if a.backbone is not None:
            raise RshashError("--backbone goes with --images, not --codes")
        index = index_from_codes(a.codes, a.out, a.model)
    elif a.model is None:
        raise RshashError("--images needs --model")
    else:
        index = build_index(a.model, a.images, a.out, backbone=a.backbone, threads=a.threads)
    h = index.header
    print(
        f"indexed {len(index)} images ({h['method']}, {h['bits']} bits, {h['backbone']}) "
        f"into {a.out}"
    )


@verb(
    "index append",
    "encode the images of a folder that an index does not hold yet (by id) and add them",
    arg("--index", required=True, metavar="PATH", help="the index to add to"),
    arg(
        "--images",
        required=True,
        metavar="DIR",
        help="a folder of images (images the index already holds, by id, are skipped)",
    ),
    arg("--model", help="the model to encode them (default: the index's)"),
    arg("--backbone", help="the backbone, for a model that does not record it"),
    arg("--threads", type=int, default=1),
)
def cmd_index_append(a):
    from rshash.archive import append_images

    index, added, present = append_images(
        a.index, a.images, a.model, backbone=a.backbone, threads=a.threads
    )
    print(
        f"added {added} images to {a.index} ({present} already there); "
        f"{len(index)} images, generation {index.generation}"
    )


@verb(
    "index remove",
    "remove images from an index by id",
    arg("--index", required=True, metavar="PATH", help="the index to remove from"),
    arg("ids", nargs="+", metavar="ID", help="image ids to remove"),
)
def cmd_index_remove(a):
    from rshash.archive import remove_images

    index, removed = remove_images(a.index, a.ids)
    print(
        f"removed {removed} images from {a.index}; "
        f"{len(index)} images, generation {index.generation}"
    )


def _ids(flag: str, help: str):
    """An option naming indexed images, given once per image."""
    return arg(flag, action="append", default=[], metavar="IMAGE_ID", help=help)


@verb(
    "search",
    "the nearest indexed images to query images or indexed ids (the server's query path)",
    arg("images", nargs="*", metavar="IMAGE", help="query image files"),
    _ids("--id", "an indexed image as the query (repeat for more; no model needed)"),
    arg("--index", required=True),
    arg("--top", type=int, default=20, help="results per query"),
    arg("--offset", type=int, default=0, help="results to skip (a later page)"),
    arg("--class", dest="class_name", metavar="CLASS", help="only images of this class"),
    arg("--max-distance", type=int, help="only images at this Hamming distance or less"),
    _ids("--relevant", "an indexed image marked relevant (relevance feedback; repeat)"),
    _ids("--not-relevant", "an indexed image marked not relevant (repeat)"),
    arg(
        "--bbox",
        metavar="W,S,E,N",
        help="chips of scenes: only those whose footprint meets this box (EPSG:4326; "
        "a box that starts with a minus takes an '=': --bbox=-99.2,47.0,-99.1,47.1)",
    ),
    arg("--date-from", metavar="YYYY-MM-DD", help="chips of scenes: only of this day or later"),
    arg("--date-to", metavar="YYYY-MM-DD", help="chips of scenes: only of this day or earlier"),
    arg("--model", help="the model to encode queries (default: the index's)"),
    arg("--backbone", help="the backbone, for a model that does not record it"),
    one_of(
        arg("--json", action="store_true", help="print the results as JSON (as the server's)"),
        arg(
            "--geojson",
            action="store_true",
            help="print the results (chips of scenes) as RFC 7946 GeoJSON, as the server's "
            "format=geojson",
        ),
    ),
    arg("--html", help="also write a page with thumbnails"),
    arg("--threads", type=int, default=1),
)
def cmd_search(a):
    from rshash.archive import read_index, search_ids, search_images
    from rshash.archive.present import as_json, format_results, write_html
    from rshash.archive.query import Place

    if not a.images and not a.id:
        raise RshashError("give query images, or indexed images with --id")
    place = Place.of(a.bbox, a.date_from, a.date_to)  # checked before anything is loaded
    index = read_index(a.index)
    if a.geojson and not index.header.get("geo"):
        raise RshashError("--geojson needs an index of geo-referenced scenes")
    filters = {
        "offset": a.offset,
        "class_name": a.class_name,
        "max_distance": a.max_distance,
        "relevant": a.relevant,
        "not_relevant": a.not_relevant,
        "place": place,
    }
    results = []
    if a.images:
        results += search_images(index, a.images, a.top, a.model, a.backbone, a.threads, **filters)
    if a.id:
        results += search_ids(index, a.id, a.top, a.threads, **filters)
    if a.json:
        print(json.dumps(as_json(index, results), indent=1, ensure_ascii=False))
    elif a.geojson:
        print(json.dumps(_geojson(index, results), ensure_ascii=False))
    else:
        print(format_results(index, results), end="")
    if a.html:
        write_html(index, results, a.html)


@verb(
    "findall",
    "every chip of an archive like the marked ones: all scoring above a threshold, ranked "
    "(the server's /api/findall)",
    arg("--index", required=True),
    arg("--id", help="the query: an indexed chip's id"),
    _ids("--relevant", "an indexed chip marked relevant (repeat)"),
    _ids("--not-relevant", "an indexed chip marked not relevant (repeat)"),
    arg(
        "--rule",
        help="rocchio, probe_codes or probe_features (default: the best measured "
        "for the index: README, Find all)",
    ),  # fmt: skip
    arg("--threshold", type=float, help="the rule's score to reach (default: the rule's)"),
    arg("--bbox", metavar="W,S,E,N", help="only chips whose footprint meets this box"),
    arg("--date-from", metavar="YYYY-MM-DD"),
    arg("--date-to", metavar="YYYY-MM-DD"),
    arg("--merge", action="store_true", help="one polygon per patch of adjacent chips"),
    one_of(
        arg("--json", action="store_true", help="print the server's JSON"),
        arg("--geojson", metavar="OUT", help="write RFC 7946 GeoJSON to OUT ('-': print it)"),
    ),
    arg("--threads", type=int, default=1),
)
def cmd_findall(a):
    from pathlib import Path

    from rshash.archive import read_index
    from rshash.archive.findall import as_document, as_feature_collection, find_all_in
    from rshash.archive.query import Place
    from rshash.atomic import atomic_write

    place = Place.of(a.bbox, a.date_from, a.date_to)
    index = read_index(a.index)
    found = find_all_in(
        index, a.id, a.relevant, a.not_relevant, rule=a.rule, threshold=a.threshold,
        place=place, threads=a.threads,
    )  # fmt: skip
    doc = as_document(index, found, a.id, a.merge)
    if a.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    elif a.geojson:
        text = json.dumps(as_feature_collection(doc), ensure_ascii=False)
        if a.geojson == "-":
            print(text)
        else:
            atomic_write(a.geojson, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
            print(f"{a.geojson}: {doc['total']} chips found of {doc['scored']} "
                  f"({doc['rule']}, score >= {doc['threshold']})")  # fmt: skip
    else:
        print(f"{doc['total']} chips found of {doc['scored']} ({doc['rule']}, score >= "
              f"{doc['threshold']})")  # fmt: skip
        for r in doc["results"]:
            print(f"{r['rank']:>6}  {r['score']:>8.4f}  {r.get('date', '-'):<10}  {r['image_id']}")


def _geojson(index, results) -> dict:
    """One query's results as the server's ``format=geojson`` gives them; several
    queries' in one collection, each feature naming its query."""
    from rshash.archive.present import as_geojson, describe

    if len(results) == 1:
        return as_geojson(describe(index, results[0].page), results[0].query)
    features = []
    for res in results:
        for f in as_geojson(describe(index, res.page))["features"]:
            f["properties"]["query"] = res.query
            features.append(f)
    return {"type": "FeatureCollection", "features": features}


@verb(
    "serve",
    "search an index in the browser (a page and a JSON API)",
    arg("--index", required=True),
    arg("--model", help="the model to encode uploaded queries (default: the index's)"),
    arg("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)"),
    arg("--port", type=int, default=8000),
    arg("--threads", type=int, default=1, help="threads of a search and an encoding"),
    arg(
        "--basemap",
        metavar="URL",
        help="an XYZ tile template drawn under the scenes of the map, e.g. "
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png (off by default: the page then asks "
        "nothing of any other server)",
    ),
)
def cmd_serve(a):
    from rshash.serve.app import serve

    serve(a.index, a.model, host=a.host, port=a.port, threads=a.threads, basemap=a.basemap)
