"""An archive of geo-referenced scenes, one job per scene (the workflow's
``rules/archive.smk``):

1. :func:`embed_scene` (``rshash scenes embed``): chip one scene (windows read
   with rasterio, rshash.archive.scenes), run the backbone on the chips, write the
   scene's features file (the features-file format, chip ids as image ids) with each
   chip's window and footprints, and the scene's quicklook for the map;
2. :func:`fit_hash` (``rshash scenes fit``): an unsupervised method (ITQ by
   default) fitted once on the features of the scenes named (or a sample of them),
   saved as a model file, so a scene added later is encoded with it and reruns alone;
3. :func:`encode_scene` (``rshash scenes encode``): a scene's codes with the
   archive's model (fitted here, or a trained cell of the pipeline): the scene's part;
4. :func:`publish_scenes` (``rshash scenes publish``): the index over every scene's
   part, published atomically as every index is (rshash.archive.store), with the
   scenes' quicklooks; :func:`write_chips_table`: the chips as GeoParquet.

Footprints, dates and scenes then travel with each chip through the one query path
(rshash.archive.query: ``bbox`` and date filters) and out as GeoJSON
(rshash.archive.present).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.archive.scenes import ChipSpec, Scene, chip_scene, list_scenes, quicklook
from rshash.archive.store import (
    FORMAT,
    VERSION,
    Index,
    Rows,
    day_number,
    publish,
    read_index,
    verified_manifest,
    write_segments,
    writing,
)
from rshash.digest import file_sha256, read_arrays, write_arrays

PART_FORMAT = "rshash-scene-part"


def find_scene(source: dict, scene_id: str, base=".") -> Scene:
    """One scene of an archive's ``scenes`` entry, by id."""
    for scene in list_scenes(source, base):
        if scene.id == scene_id:
            return scene
    raise RshashError(f"archive scenes: no scene with id {scene_id!r}")


def embed_scene(
    entry: dict,
    scene_id: str,
    backbone: str,
    out,
    base=".",
    threads: int = 1,
    batch_size: int = 32,
    device: str = "cpu",
    source: dict | None = None,
) -> Path:
    """Chip one scene and write its chips' backbone features (the scene job)."""
    from rshash.features import embedder
    from rshash.features import write_arrays as write_features

    spec = ChipSpec.from_entry(entry, "archive")
    scene = find_scene(entry["scenes"], scene_id, base)
    chips, pixels = chip_scene(scene, spec)
    embed = embedder(backbone, threads, batch_size, device, source)
    parts = [embed.forward(batch) for batch in _prefetched(pixels, embed.load, batch_size)]
    if not chips.ids:
        raise RshashError(
            f"scene {scene.id}: every chip is more than {spec.max_nodata:.0%} nodata "
            f"({chips.left_out} left out)"
        )
    meta = chips.meta
    ql, ql_bounds = quicklook(scene, spec, meta["stretch"])
    meta["quicklook_bounds_3857"] = ql_bounds
    print(
        f"scene {scene.id}: {len(chips.ids)} chips, {chips.left_out} left out "
        f"(more than {spec.max_nodata:.0%} nodata)",
        file=sys.stderr,
    )
    write_features(
        out,
        chips.ids,
        np.full(len(chips.ids), -1),
        {
            "features": np.concatenate(parts),
            "window": chips.windows,
            "footprint_native": chips.native,
            "footprint": chips.lonlat,
            "quicklook": ql,
        },
        {
            "backbone": backbone,
            "kind": "features",
            "scene": json.dumps(meta),
            "chip": json.dumps(spec.as_dict()),
            "n_images": len(chips.ids),
        },
    )
    return Path(out)


def _prefetched(pixels, load, batch_size: int, ahead: int = 2):
    """Preprocessed batches (float32 [B, 3, size, size]) of a scene's chips, read and
    resized in a thread while the network runs on the batch before: rasterio's reads
    and PIL's resizing release the GIL, as the folder extraction's decoding worker runs
    beside the network. At most ``ahead`` batches wait (bounded memory)."""
    import queue
    import threading

    todo: queue.Queue = queue.Queue(maxsize=ahead)
    done = object()

    def produce():
        try:
            batch = []
            for chip in pixels:
                batch.append(load(chip))
                if len(batch) == batch_size:
                    todo.put(np.stack(batch))
                    batch = []
            if batch:
                todo.put(np.stack(batch))
            todo.put(done)
        except BaseException as exc:  # raised again in the caller's thread
            todo.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while True:
        item = todo.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def read_scene_features(path) -> tuple[object, dict]:
    """(Features, {window, footprint_native, footprint, quicklook, scene}) of a scene's
    features file, its digest checked."""
    import h5py

    from rshash.features import read_features

    feats = read_features(path)
    if "scene" not in feats.attrs:
        raise RshashError(f"{path}: not a scene's features file (no scene attribute)")
    with h5py.File(path, "r") as f:
        extra = {k: f[k][...] for k in ("window", "footprint_native", "footprint", "quicklook")}
    extra["scene"] = json.loads(feats.attrs["scene"])
    return feats, extra


def fit_hash(
    feature_files: list,
    out,
    method: str = "itq",
    bits: int = 64,
    seed: int = 0,
    sample: int | None = None,
    params: dict | None = None,
) -> Path:
    """Fit an unsupervised method on the chips of the scenes given (all of their chips,
    or ``sample`` of them drawn with ``seed``) and save it as a model file that records
    the backbone and the scenes it was fitted on."""
    from rshash.methods import build, method_info

    if not feature_files:
        raise RshashError("fit-hash: no scene features to fit on")
    info = method_info(method)
    if info.supervised or info.inputs != ("features",):
        raise RshashError(
            f"archive hash method {method!r} needs labels or other inputs; an archive's own "
            "hash is unsupervised on pooled features (e.g. itq), or name a trained model"
        )
    backbones, scenes, blocks = set(), [], []
    for f in feature_files:
        feats, extra = read_scene_features(f)
        backbones.add(feats.attrs["backbone"])
        scenes.append(extra["scene"]["id"])
        blocks.append(feats.features)
    if len(backbones) != 1:
        raise RshashError(
            f"fit-hash: scenes extracted with different backbones {sorted(backbones)}"
        )
    X = np.concatenate(blocks)
    if sample and sample < len(X):
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), sample, replace=False))]
    model = build(method, bits, seed, **(params or {})).fit(X)
    model.save(out, {"backbone": backbones.pop(), "fitted_on": {"scenes": scenes, "rows": len(X)}})
    return Path(out)


def encode_scene(features_file, model_path, out) -> Path:
    """A scene's part of the archive: its chips' codes with the archive's model, their
    ids, windows, footprints and date, the scene's record and quicklook."""
    from rshash.archive.encoder import load_model

    feats, extra = read_scene_features(features_file)
    method, header = load_model(model_path, feats.attrs["backbone"])
    if header["backbone"] != feats.attrs["backbone"]:
        raise RshashError(
            f"model {model_path} reads {header['backbone']} features; scene "
            f"{extra['scene']['id']} was extracted with {feats.attrs['backbone']}"
        )
    enc = method.encode(feats.features)
    packed = np.packbits(np.asarray(enc.bits, dtype=bool), axis=1)
    ids = [str(i) for i in feats.image_id]
    lonlat = np.asarray(extra["footprint"], np.float64)
    arrays = {
        "packed": packed,
        "ids": np.array(ids, dtype=np.bytes_) if ids else np.zeros(0, "S1"),
        "window": np.asarray(extra["window"], np.int32),
        "footprint": lonlat,
        "quicklook": extra["quicklook"],
    }
    if enc.predicted_label is not None:
        arrays["predicted_label"] = np.asarray(enc.predicted_label, np.int64)
    attrs = {
        "format": PART_FORMAT,
        "scene": extra["scene"],
        "model": {
            "method": header["method"],
            "bits": int(header["bits"]),
            "backbone": header["backbone"],
            "path": str(Path(model_path).resolve()),
            "sha256": file_sha256(model_path),
        },
        "chip": json.loads(feats.attrs["chip"]),
        # the features file the codes come from: find-all's probes read it again
        "features": {"path": str(Path(features_file).resolve()), "sha256": feats.sha256},
    }
    write_arrays(out, attrs, arrays)
    return Path(out)


def _read_part(path) -> tuple[dict, dict]:
    attrs, arrays = read_arrays(path, "scene part")
    if attrs.get("format") != PART_FORMAT:
        raise RshashError(f"{path}: not a scene part of an archive")
    return attrs, arrays


def publish_scenes(parts: list, out) -> Index:
    """The index of every scene's part, published in one rename: a reader sees the
    previous generation or this one. Every part must come from the same model file."""
    if not parts:
        raise RshashError("publish: no scene parts")
    loaded = [_read_part(p) for p in parts]
    models = {json.dumps(a["model"], sort_keys=True) for a, _ in loaded}
    if len(models) != 1:
        raise RshashError(
            "publish: the scene parts were encoded with different models; rerun the "
            "scenes' encode jobs (snakemake does) so one model encodes every scene"
        )
    model = loaded[0][0]["model"]
    scenes, rows = [], []
    for number, (attrs, arrays) in enumerate(loaded):
        scene = dict(attrs["scene"])
        scenes.append(scene)
        n = len(arrays["ids"])
        lonlat = np.asarray(arrays["footprint"], np.float64)
        day = day_number(scene["date"])
        pred = arrays.get("predicted_label")
        rows.append(
            Rows(
                np.asarray(arrays["packed"]),
                np.array([b.decode("utf-8") for b in arrays["ids"]], dtype=str),
                np.full(n, scene["href"]),
                np.full(n, -1, np.int64),
                None if pred is None else np.asarray(pred, np.int64),
                {
                    "scene": np.full(n, number, np.int32),
                    "window": np.asarray(arrays["window"], np.int32),
                    "footprint": lonlat,
                    "lonlat_bounds": np.concatenate([lonlat.min(1), lonlat.max(1)], axis=1).reshape(
                        n, 4
                    ),
                    "date": np.full(n, day, np.int32),
                },
            )
        )
    all_rows = Rows.concat(rows, int(model["bits"]) // 8)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "backbone": model["backbone"],
        "method": model["method"],
        "bits": model["bits"],
        "model": model["path"],
        "model_sha256": model["sha256"],
        "source": "scenes",
        "class_names": [],
        "geo": {
            "chip": loaded[0][0]["chip"],
            "scenes": scenes,
            "features": [a.get("features") for a, _ in loaded],
        },
    }
    location = Path(out)
    with writing(location, create=True):
        index_before = _generation(location)
        generation = index_before + 1
        entries = write_segments(location, generation, all_rows)
        name = f"q{generation:06d}-{entries[0]['name'].split('-')[1]}" if entries else "q"
        write_arrays(
            location.with_name(location.name + ".parts") / f"{name}.meta",
            {"scenes": [s["id"] for s in scenes]},
            {f"q{i}": np.asarray(arrays["quicklook"]) for i, (_, arrays) in enumerate(loaded)},
        )
        header["geo"]["quicklooks"] = name
        publish(location, {**header, "generation": generation}, entries)
    return read_index(location)


def _generation(location: Path) -> int:
    """The generation of the index published at ``location`` (its manifest alone), 0
    when there is none to replace."""
    try:
        header = verified_manifest(location)
    except RshashError:
        return 0
    return int((header or {}).get("generation", 0))


def quicklooks(index: Index) -> dict[str, np.ndarray]:
    """Scene id -> its quicklook, RGBA uint8 in Web Mercator (memory maps)."""
    geo = index.header.get("geo") or {}
    if not geo.get("quicklooks") or index.location is None:
        return {}
    folder = index.location.with_name(index.location.name + ".parts")
    attrs, arrays = read_arrays(folder / f"{geo['quicklooks']}.meta", "quicklooks file")
    return {sid: arrays[f"q{i}"] for i, sid in enumerate(attrs["scenes"])}


def chips_frame(index: Index):
    """Every chip of a geo-referenced index as a GeoDataFrame in EPSG:4326: id, scene,
    date, window, the scene's CRS (EPSG code when it has one) and the footprint."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    rows = index._all
    if rows.geo is None:
        raise RshashError(f"{index.location}: not an index of geo-referenced scenes")
    scenes = index.scenes
    fp = np.asarray(rows.geo["footprint"], np.float64)
    ring = np.concatenate([fp[:, ::-1], fp[:, -1:]], axis=1)  # counter-clockwise, closed
    geometry = shapely.polygons(ring)
    number = np.asarray(rows.geo["scene"])
    window = np.asarray(rows.geo["window"])
    frame = pd.DataFrame(
        {
            "id": rows.image_id.astype(str),
            "scene": [scenes[i]["id"] for i in number],
            "date": pd.to_datetime(np.asarray(rows.geo["date"]).astype("datetime64[D]")),
            "col_off": window[:, 0],
            "row_off": window[:, 1],
            "width": window[:, 2],
            "height": window[:, 3],
            "scene_epsg": [scenes[i].get("epsg") or -1 for i in number],
        }
    )
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def write_chips_table(index_path, out) -> Path:
    """The chips of an archive as GeoParquet (geopandas' writer: the ``geo`` metadata
    with the CRS, WKB polygons), sealed with rshash's digest in the Parquet footer:
    geopandas writes the table to memory, and the table it wrote (its ``geo`` schema
    metadata included) is written again with the digest slot."""
    import io

    import pyarrow.parquet as pq

    from rshash.digest import write_parquet

    buffer = io.BytesIO()
    chips_frame(read_index(index_path)).to_parquet(buffer, index=False)
    buffer.seek(0)
    write_parquet(out, pq.read_table(buffer))
    return Path(out)


def archive_features(index: Index) -> np.ndarray:
    """The real-valued features of every chip of a geo-referenced index, in index order
    (find-all's probe on features): each scene's features file as the index recorded it
    (its digest checked against the one recorded at publication: a scene re-extracted
    since is an error, not other features)."""
    from rshash.features import read_features

    geo = index.header.get("geo") or {}
    files = geo.get("features") or []
    if not files or any(f is None for f in files):
        raise RshashError(f"{index.location}: the index records no features files")
    blocks = []
    for scene, entry in zip(index.scenes, files):
        path = Path(entry["path"])
        if not path.is_file():
            raise RshashError(f"scene {scene['id']}: features file {path} not found")
        feats = read_features(path)
        if feats.sha256 != entry["sha256"]:
            raise RshashError(
                f"scene {scene['id']}: features file {path} changed since the index was "
                "published (rerun the workflow's publication)"
            )
        if len(feats) != scene["n_chips"]:
            raise RshashError(
                f"scene {scene['id']}: {path} holds {len(feats)} chips, not {scene['n_chips']}"
            )
        blocks.append(feats.features)
    return np.concatenate(blocks)
