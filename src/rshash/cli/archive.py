"""The archive verbs: build and change a search index (``index``), search it from the
command line (``search``) or in the browser (``serve``)."""

from __future__ import annotations

from rshash import RshashError
from rshash.cli.registry import arg, verb


@verb(
    "index",
    "encode a folder of images (class sub-folders or flat) or a codes file into a search index",
    arg("--model", help="a trained model (.npz)"),
    arg("--images", help="a folder of images: flat, or one sub-folder per class"),
    arg("--codes", help="a codes file (.parquet) instead of images"),
    arg("--backbone", help="the backbone, for a model that does not record it"),
    arg("--out", help="the index to build (replaces any index there)"),
    arg(
        "--append",
        metavar="IMAGES",
        help="a folder of images to add to --index (images it already holds, by id, are skipped)",
    ),
    arg("--remove", nargs="+", metavar="ID", help="image ids to remove from --index"),
    arg("--index", help="the index --append or --remove changes"),
    arg("--threads", type=int, default=1),
)
def cmd_index(a):
    from rshash.index import append_images, build_index, index_from_codes, remove_images

    if a.append is not None or a.remove:
        if a.index is None or a.out is not None or a.images is not None or a.codes is not None:
            raise RshashError("index: --append IMAGES and --remove ID... take --index INDEX only")
        if a.append is not None and a.remove:
            raise RshashError("index: give --append or --remove, not both")
        if a.append is not None:
            index, added, present = append_images(
                a.index, a.append, a.model, backbone=a.backbone, threads=a.threads
            )
            print(
                f"added {added} images to {a.index} ({present} already there); "
                f"{len(index)} images, generation {index.generation}"
            )
        else:
            index, removed = remove_images(a.index, a.remove)
            print(
                f"removed {removed} images from {a.index}; "
                f"{len(index)} images, generation {index.generation}"
            )
        return
    if a.out is None:
        raise RshashError("index: --out PATH is required to build an index")
    if (a.images is None) == (a.codes is None):
        raise RshashError("index: give either --images DIR (with --model) or --codes CODES")
    if a.codes is not None:
        index = index_from_codes(a.codes, a.out, a.model)
    elif a.model is None:
        raise RshashError("index: --images needs --model")
    else:
        index = build_index(a.model, a.images, a.out, backbone=a.backbone, threads=a.threads)
    h = index.header
    print(
        f"indexed {len(index)} images ({h['method']}, {h['bits']} bits, {h['backbone']}) "
        f"into {a.out}"
    )


@verb(
    "search",
    "the nearest indexed images to query images",
    arg("images", nargs="+", metavar="IMAGE"),
    arg("--index", required=True),
    arg("--top", type=int, default=20),
    arg("--model", help="the model to encode queries (default: the index's)"),
    arg("--backbone", help="the backbone, for a model that does not record it"),
    arg("--html", help="also write a page with thumbnails"),
    arg("--threads", type=int, default=1),
)
def cmd_search(a):
    from rshash.index import format_results, read_index, search_images, write_html

    index = read_index(a.index)
    results = search_images(index, a.images, a.top, a.model, a.backbone, a.threads)
    print(format_results(index, results), end="")
    if a.html:
        write_html(index, results, a.html)


@verb(
    "serve",
    "search an index in the browser (a page and a JSON API)",
    arg("--index", required=True),
    arg("--model", help="the model to encode uploaded queries (default: the index's)"),
    arg("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)"),
    arg("--port", type=int, default=8000),
    arg("--threads", type=int, default=1, help="threads of a search and an encoding"),
)
def cmd_serve(a):
    from rshash.serve.app import serve

    serve(a.index, a.model, host=a.host, port=a.port, threads=a.threads)
