"""The verbs the workflow rules call (data, features, training, model selection,
evaluation, tables, cost), each with its arguments above it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rshash import RshashError
from rshash.cli.registry import _json, arg, required, verb


@verb(
    "check-config",
    "read config files strictly: a duplicate key, a tab or a syntax error named by file and line",
    arg("files", nargs="+", metavar="FILE"),
)
def cmd_check_config(a):
    from rshash.config import load_config_file

    for path in a.files:
        if not Path(path).is_file():
            raise RshashError(f"config file {path}: not found")
        load_config_file(path)
        print(f"{path}: read strictly, no duplicate key")


@verb(
    "generate",
    "write the synthetic demo images",
    arg("--out-dir", required=True),
    arg("--params", default="{}", help="JSON: n_classes, per_class, size, seed, noise"),
)
def cmd_generate(a):
    from rshash.data.synthetic import generate

    generate(a.out_dir, **_json(a.params))


@verb(
    "manifest",
    "list a class-folder dataset (downloads it if missing)",
    *required("--dataset", "--folder", "--data-dir"),
    arg("--url"),
    arg("--archive-root"),
    arg("--n-classes", type=int),
    arg("--n-images", type=int),
    arg(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable images out (listed in the log and the report)",
    ),
    arg(
        "--protocols",
        default="{}",
        help="JSON {name: protocol}: check every class is large enough for them",
    ),
    arg("--expected", help="JSON: class folder -> image count, all checked"),
    arg("--out", required=True),
    arg(
        "--report",
        help="JSON report of skipped files (default: {out without .parquet}.report.json)",
    ),
)
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


@verb(
    "fetch",
    "download and unpack a dataset whose images are missing",
    arg("--dataset", required=True),
    arg("--folder", required=True, help="the image folder the archive provides"),
    *required("--data-dir", "--url"),
    arg("--archive-root", help="folder the archive unpacks to, under --data-dir"),
    arg(
        "--checksums",
        help="checksum list in rshash/data/checksums checked against every unpacked file",
    ),
    arg("--create-data-dir", action="store_true", help="create an absent --data-dir first"),
    arg("--out", required=True, help="JSON record of the download"),
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


@verb(
    "split",
    "seeded stratified split under a protocol",
    arg("--manifest", required=True),
    arg("--protocol", required=True, help="JSON protocol fields"),
    arg("--protocol-name", default="protocol"),
    arg("--seed", type=int, required=True),
    arg("--out", required=True),
)
def cmd_split(a):
    from rshash.data.manifest import read_manifest
    from rshash.data.splits import make_split, write_split

    split = make_split(read_manifest(a.manifest), _json(a.protocol), a.seed, a.protocol_name)
    write_split(split, a.out)
    print(split.role.value_counts().to_string())


@verb(
    "extract",
    "backbone features to HDF5",
    *required("--manifest", "--backbone", "--out"),
    arg("--threads", type=int, default=1),
    arg("--batch-size", type=int, help="default: rshash.features.extract's"),
    arg("--num-workers", type=int, help="default: rshash.features.extract's"),
    arg("--device", help="auto, cpu, cuda or cuda:N; default: rshash.features.extract's"),
    arg("--kind", default="features", choices=["features", "maps", "layers", "rot"]),
    arg(
        "--source",
        help="JSON: the backbone's config entry keys timm, open_clip, pretrained, weights, "
        "input_size (default: a registered backbone name, {})",
    ),
    arg("--precision", choices=["fp32", "bf16", "fp16"], help="default: fp32"),
)
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


@verb(
    "train",
    "fit a hashing method; write model and codes",
    *required("--features", "--split", "--method"),
    arg("--bits", type=int, required=True),
    arg("--seed", type=int, required=True),
    arg("--params", default="{}", help="JSON method parameters"),
    arg(
        "--extra",
        action="append",
        default=[],
        help="KIND=PATH: a further features file the method reads (maps, layers, rot)",
    ),
    *required("--model", "--codes"),
    arg("--threads", type=int, default=1),
    arg(
        "--val-metric",
        default="map_all",
        help="the validation score a trained method stops on: map_all or map_at_K "
        "(the pipeline passes the protocol's first mAP cut-off)",
    ),
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


@verb(
    "select",
    "score settings on a validation part of the train split (never the queries)",
    *required("--features", "--split", "--method"),
    arg("--bits", type=int, required=True),
    arg("--params", default="{}", help="JSON base parameters"),
    arg("--grid", required=True, help='JSON, e.g. {"lr": [1e-4, 3e-4]}'),
    arg("--val-fraction", type=float, default=0.2),
    arg("--seed", type=int, default=0),
    arg("--threads", type=int, default=1),
)
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


@verb(
    "evaluate",
    "metrics of one codes file under one ranking",
    *required("--codes", "--split"),
    arg("--ranking", default="hamming"),
    arg("--ranking-params", default="{}", help="JSON ranking parameters"),
    arg("--protocol", default="{}", help="JSON protocol fields (mAP cut-offs)"),
    arg("--cell", default="{}", help="JSON cell description"),
    arg("--out", required=True),
    arg("--threads", type=int, default=1, help="threads of the compiled passes"),
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
    )
    print(json.dumps(result["metrics"], indent=1))


@verb(
    "table",
    "collect metrics into an experiment's tables",
    *required("--experiment", "--csv", "--md", "--meta"),
    arg("--protocols", default="{}", help="JSON protocol fields"),
    arg("--reference", default="{}", help='JSON, e.g. {"method": "lsh"}'),
    arg("--comparisons", default="[]", help="JSON list of explicit comparisons"),
    arg("--paired", help="CSV of the paired comparison with the reference"),
    arg(
        "--models",
        nargs="*",
        default=[],
        help="the cells' model files: cells stopped at their cap are marked (end with --)",
    ),
    arg("metrics", nargs="+"),
)
def cmd_table(a):
    from rshash.report.tables import build_table

    build_table(
        a.experiment,
        a.metrics,
        a.csv,
        a.md,
        a.meta,
        protocols=_json(a.protocols),
        reference=_json(a.reference),
        out_paired=a.paired,
        comparisons=_json(a.comparisons) or None,
        model_paths=a.models,
    )


@verb(
    "cost",
    "seconds and peak memory per method x bits from the rules' benchmark files",
    *required("--experiment", "--out"),
    arg("--backbones", nargs="+", help="the backbone names (config.yaml's; default: registered)"),
    arg("benchmarks", nargs="+"),
)
def cmd_cost(a):
    from rshash.backbones import BACKBONES
    from rshash.report.cost import build_cost

    build_cost(a.experiment, a.benchmarks, a.out, a.backbones or list(BACKBONES))
