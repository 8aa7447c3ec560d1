"""The verbs of an archive of geo-referenced scenes (rules/archive.smk calls them, one
scene a job): list the scenes, embed one, fit the archive's hash, encode one, publish
the index and its chips table."""

from __future__ import annotations

from rshash.cli.registry import _json, arg, group, required, verb

group("scenes", "an archive of geo-referenced scenes: one job per scene (rules/archive.smk)")


def _entry(a) -> dict:
    return _json(a.entry)


@verb(
    "scenes list",
    "print the scene ids of an archive's config entry (JSON), one a line, with their dates",
    *required("--entry"),
    arg("--data-dir", default="."),
)
def cmd_scenes_list(a):
    from rshash.archive.scenes import list_scenes

    for scene in list_scenes(_entry(a)["scenes"], a.data_dir):
        print(f"{scene.id}\t{scene.date}\t{scene.href}")


@verb(
    "scenes embed",
    "chip one scene (rasterio windows) and write its chips' backbone features",
    *required("--entry", "--scene", "--backbone", "--out"),
    arg("--data-dir", default="."),
    arg("--threads", type=int, default=1),
    arg("--batch-size", type=int, default=32),
    arg("--device", default="cpu"),
    arg("--source", default="{}", help="JSON: the backbone's config entry (timm, OpenCLIP)"),
)
def cmd_scenes_embed(a):
    from rshash.archive.geo import embed_scene

    embed_scene(
        _entry(a),
        a.scene,
        a.backbone,
        a.out,
        a.data_dir,
        a.threads,
        a.batch_size,
        a.device,
        _json(a.source) or None,
    )


@verb(
    "scenes fit",
    "fit the archive's own unsupervised hash on the features of the scenes given",
    arg("--features", nargs="+", required=True),
    arg("--method", default="itq"),
    arg("--bits", type=int, default=64),
    arg("--seed", type=int, default=0),
    arg("--sample", type=int, help="fit on this many chips drawn with the seed (default: all)"),
    arg("--params", default="{}", help="JSON: the method's parameters"),
    *required("--out"),
)
def cmd_scenes_fit(a):
    from rshash.archive.geo import fit_hash

    fit_hash(a.features, a.out, a.method, a.bits, a.seed, a.sample, _json(a.params))


@verb(
    "scenes encode",
    "encode one scene's chips with the archive's model: the scene's part of the index",
    *required("--features", "--model", "--out"),
)
def cmd_scenes_encode(a):
    from rshash.archive.geo import encode_scene

    encode_scene(a.features, a.model, a.out)


@verb(
    "scenes publish",
    "publish the index over every scene's part (atomically) and its chips as GeoParquet",
    arg("--parts", nargs="+", required=True),
    *required("--out", "--chips"),
)
def cmd_scenes_publish(a):
    from rshash.archive.geo import publish_scenes, write_chips_table

    index = publish_scenes(a.parts, a.out)
    write_chips_table(a.out, a.chips)
    left_out = sum(s.get("n_left_out", 0) for s in index.scenes)
    print(
        f"{a.out}: {len(index)} chips of {len(index.scenes)} scenes "
        f"({left_out} chips left out for nodata), generation {index.generation}"
    )
