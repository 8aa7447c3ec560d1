"""Command line: the verbs the workflow rules call, one library call each.

Every verb prints a one-line error naming the file or setting and exits 2
on a user error (RshashError), without a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from rshash import RshashError


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RshashError(f"not valid JSON: {text!r} ({err})") from None


def cmd_generate(a):
    from rshash.data.synthetic import generate

    generate(a.out_dir, **_json(a.params))


def cmd_manifest(a):
    from rshash.data.fetch import ensure_images
    from rshash.data.manifest import (
        check_images,
        read_dataset,
        report_path,
        write_manifest,
        write_report,
    )
    from rshash.data.splits import check_class_sizes

    folder = ensure_images(a.dataset, Path(a.folder), a.url, a.archive_root, Path(a.data_dir))
    found, ignored = read_dataset(
        folder, a.n_classes, a.n_images, _json(a.expected) if a.expected else None
    )
    df, skipped = check_images(found, a.skip_unreadable)
    for name, protocol in _json(a.protocols).items():
        check_class_sizes(df, protocol, name)
    write_report(a.report or report_path(a.out), len(found), df, skipped, ignored)
    write_manifest(df, a.out)
    print(
        f"{a.dataset}: {len(df)} images in {df.label.nunique()} classes from {folder}"
        + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else "")
        + (f"; left out {len(ignored)} other file(s), listed in the report" if ignored else "")
    )


def cmd_fetch(a):
    from rshash.atomic import atomic_write
    from rshash.data.datasets import packaged_checksums
    from rshash.data.fetch import ensure_images

    sums = packaged_checksums(a.checksums) if a.checksums else None
    folder = ensure_images(
        a.dataset,
        Path(a.folder),
        a.url,
        a.archive_root,
        Path(a.data_dir),
        checksums=sums,
        create_data_dir=a.create_data_dir,
    )
    record = {
        "dataset": a.dataset,
        "url": a.url,
        "folder": str(folder),
        "checked_files": len(sums) if sums else None,
    }
    atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(
        f"{a.dataset}: images in {folder}"
        + (f" ({len(sums)} files checked against {a.checksums})" if sums else "")
    )


def cmd_split(a):
    from rshash.data.manifest import read_manifest
    from rshash.data.splits import make_split, write_split

    split = make_split(read_manifest(a.manifest), _json(a.protocol), a.seed, a.protocol_name)
    write_split(split, a.out)
    print(split.role.value_counts().to_string())


def cmd_extract(a):
    from rshash.features import extract

    given = {
        k: getattr(a, k)
        for k in ("batch_size", "num_workers", "device", "precision")
        if getattr(a, k) is not None
    }  # else extract's defaults, the one home of each
    extract(
        a.manifest,
        a.backbone,
        a.out,
        threads=a.threads,
        kind=a.kind,
        source=_json(a.source) if a.source else None,
        **given,
    )


def cmd_train(a):
    from rshash.train import train_cell

    extra = {}
    for item in a.extra:
        kind, _, path = item.partition("=")
        if not path:
            raise RshashError(f"--extra expects KIND=PATH, got {item!r}")
        extra[kind] = path
    print(
        f"rshash train: fitting {a.method} ({a.bits} bits, seed {a.seed})",
        file=sys.stderr,
        flush=True,
    )
    info = train_cell(
        a.features,
        a.split,
        a.method,
        a.bits,
        a.seed,
        _json(a.params),
        a.model,
        a.codes,
        threads=a.threads,
        extra=extra,
        val_metric=a.val_metric,
        log=lambda line: print(line, flush=True),
    )
    epochs = (
        f", {info['epochs_run']} epochs (best {info['best_epoch']})" if "epochs_run" in info else ""
    )
    if info.get("refit_epochs"):
        epochs += f", refit on train + val for {info['refit_epochs']}"
    print(
        f"trained {a.method} ({a.bits} bits, seed {a.seed}) on {info['n_train']} images "
        f"in {info['seconds']:.1f} s{epochs}"
    )


def cmd_evaluate(a):
    from rshash.evaluate import evaluate_cell

    result = evaluate_cell(
        a.codes,
        a.split,
        a.out,
        ranking=a.ranking,
        protocol=_json(a.protocol),
        ranking_params=_json(a.ranking_params),
        cell=_json(a.cell),
        threads=a.threads,
        config={
            "cell": _json(a.cell),
            "protocol": _json(a.protocol),
            "ranking_params": _json(a.ranking_params),
        },
    )
    print(json.dumps(result["metrics"], indent=1))


def cmd_table(a):
    from rshash.report.tables import build_table

    build_table(
        a.experiment,
        a.metrics,
        a.csv,
        a.md,
        a.meta,
        protocols=_json(a.protocols),
        config={
            "protocols": _json(a.protocols),
            "reference": _json(a.reference),
            "comparisons": _json(a.comparisons),
        },
        reference=_json(a.reference),
        out_paired=a.paired,
        comparisons=_json(a.comparisons) or None,
    )


def cmd_cost(a):
    from rshash.backbones import BACKBONES
    from rshash.report.cost import build_cost

    build_cost(a.experiment, a.benchmarks, a.out, a.backbones or list(BACKBONES))


def cmd_tsne(a):
    from rshash.report.plots import plot_tsne

    plot_tsne(a.codes, a.out, a.title)


def cmd_plot_curves(a):
    from rshash.report.figures import plot_curves

    plot_curves(a.metrics, a.kind, a.out, a.title)


def cmd_plot_val(a):
    from rshash.report.figures import plot_val_curves

    plot_val_curves(a.models, a.out, a.title)


def cmd_plot_ap(a):
    from rshash.report.figures import plot_ap_per_class

    plot_ap_per_class(a.metrics, a.manifest, a.out, a.title)


def cmd_plot_retrieval(a):
    from rshash.report.figures import plot_retrieval

    plot_retrieval(a.codes, a.split, a.manifest, a.out, a.title, a.ranking, _json(a.ranking_params))


def cmd_select(a):
    from rshash.selection import grid_search

    grid = _json(a.grid)
    print("\t".join(["map_all", "map_at_20", "seconds", *grid]))
    for params, result, seconds in grid_search(
        a.features,
        a.split,
        a.method,
        a.bits,
        _json(a.params),
        grid,
        a.val_fraction,
        a.seed,
        a.threads,
    ):
        print(
            "\t".join(
                [
                    f"{result['map_all']:.4f}",
                    f"{result['map_at_20']:.4f}",
                    f"{seconds:.1f}",
                    *(str(params[k]) for k in grid),
                ]
            ),
            flush=True,
        )


def cmd_index(a):
    from rshash.archive import append_images, build_index, index_from_codes, remove_images

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


def cmd_search(a):
    from rshash.archive import read_index, search_images
    from rshash.archive.present import format_results, write_html

    index = read_index(a.index)
    results = search_images(index, a.images, a.top, a.model, a.backbone, a.threads)
    print(format_results(index, results), end="")
    if a.html:
        write_html(index, results, a.html)


def cmd_serve(a):
    from rshash.serve.app import serve

    serve(a.index, a.model, host=a.host, port=a.port, threads=a.threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rshash", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("generate", help="write the synthetic demo images")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--params", default="{}", help="JSON: n_classes, per_class, size, seed, noise")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("manifest", help="list a class-folder dataset (downloads it if missing)")
    s.add_argument("--dataset", required=True)
    s.add_argument("--folder", required=True)
    s.add_argument("--data-dir", required=True)
    s.add_argument("--url")
    s.add_argument("--archive-root")
    s.add_argument("--n-classes", type=int)
    s.add_argument("--n-images", type=int)
    s.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable images out (listed in the log and the report)",
    )
    s.add_argument(
        "--protocols",
        default="{}",
        help="JSON {name: protocol}: check every class is large enough for them",
    )
    s.add_argument("--expected", help="JSON: class folder -> image count, all checked")
    s.add_argument("--out", required=True)
    s.add_argument(
        "--report",
        help="JSON report of skipped files (default: {out without .parquet}.report.json)",
    )
    s.set_defaults(func=cmd_manifest)

    s = sub.add_parser("fetch", help="download and unpack a dataset whose images are missing")
    s.add_argument("--dataset", required=True)
    s.add_argument("--folder", required=True, help="the image folder the archive provides")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--url", required=True)
    s.add_argument("--archive-root", help="folder the archive unpacks to, under --data-dir")
    s.add_argument(
        "--checksums",
        help="checksum list in rshash/data/checksums checked against every unpacked file",
    )
    s.add_argument(
        "--create-data-dir", action="store_true", help="create an absent --data-dir first"
    )
    s.add_argument("--out", required=True, help="JSON record of the download")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("split", help="seeded stratified split under a protocol")
    s.add_argument("--manifest", required=True)
    s.add_argument("--protocol", required=True, help="JSON protocol fields")
    s.add_argument("--protocol-name", default="protocol")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("extract", help="backbone features to HDF5")
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--batch-size", type=int, help="default: rshash.features.extract's")
    s.add_argument("--num-workers", type=int, help="default: rshash.features.extract's")
    s.add_argument("--device", help="auto, cpu, cuda or cuda:N; default: rshash.features.extract's")
    s.add_argument("--kind", default="features", choices=["features", "maps", "layers", "rot"])
    s.add_argument(
        "--source",
        help="JSON: the backbone's config entry keys timm, open_clip, pretrained, weights, "
        "input_size (default: a registered backbone name, {})",
    )
    s.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="default: fp32")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("train", help="fit a hashing method; write model and codes")
    s.add_argument("--features", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--bits", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--params", default="{}", help="JSON method parameters")
    s.add_argument(
        "--extra",
        action="append",
        default=[],
        help="KIND=PATH: a further features file the method reads (maps, layers, rot)",
    )
    s.add_argument("--model", required=True)
    s.add_argument("--codes", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument(
        "--val-metric",
        default="map_all",
        help="the validation score a trained method stops on: map_all or map_at_K "
        "(the pipeline passes the protocol's first mAP cut-off)",
    )
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="metrics of one codes file under one ranking")
    s.add_argument("--codes", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--ranking", default="hamming")
    s.add_argument("--ranking-params", default="{}", help="JSON ranking parameters")
    s.add_argument("--protocol", default="{}", help="JSON protocol fields (mAP cut-offs)")
    s.add_argument("--cell", default="{}", help="JSON cell description")
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1, help="threads of the compiled passes")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("table", help="collect metrics into an experiment's tables")
    s.add_argument("--experiment", required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--md", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--protocols", default="{}", help="JSON protocol fields")
    s.add_argument("--reference", default="{}", help='JSON, e.g. {"method": "lsh"}')
    s.add_argument("--comparisons", default="[]", help="JSON list of explicit comparisons")
    s.add_argument("--paired", help="CSV of the paired comparison with the reference")
    s.add_argument("metrics", nargs="+")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser(
        "cost", help="seconds and peak memory per method x bits from the rules' benchmark files"
    )
    s.add_argument("--experiment", required=True)
    s.add_argument("--out", required=True)
    s.add_argument(
        "--backbones", nargs="+", help="the backbone names (config.yaml's; default: registered)"
    )
    s.add_argument("benchmarks", nargs="+")
    s.set_defaults(func=cmd_cost)

    s = sub.add_parser("tsne", help="t-SNE plot of a codes file's query codes")
    s.add_argument("--codes", required=True)
    _figure_args(s)
    s.set_defaults(func=cmd_tsne)
    s = sub.add_parser(
        "plot-curves",
        help="precision-recall over Hamming radius or P@k / R@k curves, one line per method",
    )
    s.add_argument("--kind", required=True, choices=["pr_hamming", "p_at_k", "r_at_k"])
    _figure_args(s)
    s.add_argument("metrics", nargs="+")
    s.set_defaults(func=cmd_plot_curves)

    s = sub.add_parser(
        "plot-val", help="a trained model's validation curve (the checks it stopped on)"
    )
    _figure_args(s)
    s.add_argument("models", nargs="+", help="model files (results/models/...npz)")
    s.set_defaults(func=cmd_plot_val)

    s = sub.add_parser("plot-ap", help="heat map of AP per class")
    s.add_argument("--manifest", required=True)
    _figure_args(s)
    s.add_argument("metrics", nargs="+")
    s.set_defaults(func=cmd_plot_ap)

    s = sub.add_parser("plot-retrieval", help="a few queries and their top 20")
    s.add_argument("--codes", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--ranking", default="hamming")
    s.add_argument("--ranking-params", default="{}")
    _figure_args(s)
    s.set_defaults(func=cmd_plot_retrieval)

    s = sub.add_parser(
        "select", help="score settings on a validation part of the train split (never the queries)"
    )
    s.add_argument("--features", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--bits", type=int, required=True)
    s.add_argument("--params", default="{}", help="JSON base parameters")
    s.add_argument("--grid", required=True, help='JSON, e.g. {"lr": [1e-4, 3e-4]}')
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_select)

    s = sub.add_parser(
        "index",
        help="encode a folder of images (class sub-folders or flat) "
        "or a codes file into a search index",
    )
    s.add_argument("--model", help="a trained model (.npz)")
    s.add_argument("--images", help="a folder of images: flat, or one sub-folder per class")
    s.add_argument("--codes", help="a codes file (.parquet) instead of images")
    s.add_argument("--backbone", help="the backbone, for a model that does not record it")
    s.add_argument("--out", help="the index to build (replaces any index there)")
    s.add_argument(
        "--append",
        metavar="IMAGES",
        help="a folder of images to add to --index (images it already holds, by id, are skipped)",
    )
    s.add_argument("--remove", nargs="+", metavar="ID", help="image ids to remove from --index")
    s.add_argument("--index", help="the index --append or --remove changes")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="the nearest indexed images to query images")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("--index", required=True)
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--model", help="the model to encode queries (default: the index's)")
    s.add_argument("--backbone", help="the backbone, for a model that does not record it")
    s.add_argument("--html", help="also write a page with thumbnails")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("serve", help="search an index in the browser (a page and a JSON API)")
    s.add_argument("--index", required=True)
    s.add_argument("--model", help="the model to encode uploaded queries (default: the index's)")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--threads", type=int, default=1, help="threads of a search and an encoding")
    s.set_defaults(func=cmd_serve)
    return p


def _figure_args(s) -> None:
    """A figure command's title and output file."""
    s.add_argument("--title", default="")
    s.add_argument("--out", required=True)


_TERMINATED: list[int] = []


def _exit_on_sigterm(signum, _frame):
    """SIGTERM (a cluster's kill, Snakemake's cancel) unwinds like Ctrl-C, so the
    library's ``finally`` blocks remove their temporary files. Python drops an exception
    raised while a weakref callback or finaliser runs ("Exception ignored in ..."), so
    the signal is also remembered: a command that then runs to its end still exits
    128 + signum (its outputs are complete and sealed, but it was told to stop)."""
    _TERMINATED.append(signum)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main else None
    try:
        args.func(args)
    except RshashError as err:
        print(f"rshash {args.verb}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    if _TERMINATED:
        print(f"rshash {args.verb}: terminated (signal {_TERMINATED[0]})", file=sys.stderr)
        return 128 + _TERMINATED[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
