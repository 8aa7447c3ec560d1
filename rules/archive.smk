# Archives of geo-referenced scenes, one job per scene (README "Archives of scenes"):
#   snakemake --cores 8 results/archives/naip/index
# embed_scene chips a scene (rasterio windows) and runs the backbone; encode_scene
# hashes its chips with the archive's model; publish_archive publishes the index over
# every scene's part at once, and its chips as GeoParquet.


rule embed_scene:
    input:
        scene_input,
        archive_backbone_weights,
    output:
        "results/archives/{archive}/features/{scene}.h5",
    log:
        "results/logs/embed_scene/{archive}/{scene}.log",
    benchmark:
        "results/benchmarks/embed_scene/{archive}/{scene}.tsv"
    conda:
        "../envs/rshash.yaml"
    threads: 8
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
        mem_mb=8000,
        runtime=60,
    params:
        entry=archive_entry_json,
        item=scene_item,
        backbone=archive_backbone,
        batch_size=lambda w: archive_settings(archive_backbone(w))[0],
        device=DEVICE,
        source=lambda w: archive_settings(archive_backbone(w))[1],
        data_dir=lambda w: str(DATA_DIR),
    shell:
        "rshash scenes embed --entry {params.entry:q} --scene {wildcards.scene:q} "
        "--backbone {params.backbone} --data-dir {params.data_dir:q} --out {output:q} "
        "--threads {threads} --batch-size {params.batch_size} --device {params.device} "
        "--source {params.source:q} > {log:q} 2>&1"


# The archive's own hash, fitted once (README: refitting re-encodes every scene).
rule fit_archive_hash:
    input:
        archive_fit_features,
    output:
        "results/archives/{archive}/hash.npz",
    log:
        "results/logs/fit_archive_hash/{archive}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        method=lambda w: archive_hash_settings(w)["method"],
        bits=lambda w: archive_hash_settings(w)["bits"],
        seed=lambda w: archive_hash_settings(w)["seed"],
        params=lambda w: as_json(archive_hash_settings(w)["params"]),
        sample=lambda w: (
            f"--sample {archive_hash_settings(w)['sample']}"
            if archive_hash_settings(w).get("sample")
            else ""
        ),
    shell:
        "rshash scenes fit --features {input:q} --method {params.method} "
        "--bits {params.bits} --seed {params.seed} --params {params.params:q} "
        "{params.sample} --out {output:q} > {log:q} 2>&1"


rule encode_scene:
    input:
        features="results/archives/{archive}/features/{scene}.h5",
        model=archive_model,
    output:
        "results/archives/{archive}/parts/{scene}.part",
    log:
        "results/logs/encode_scene/{archive}/{scene}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash scenes encode --features {input.features:q} --model {input.model:q} "
        "--out {output:q} > {log:q} 2>&1"


rule publish_archive:
    input:
        archive_parts,
    output:
        index="results/archives/{archive}/index",
        chips="results/archives/{archive}/chips.parquet",
    log:
        "results/logs/publish_archive/{archive}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash scenes publish --parts {input:q} --out {output.index:q} "
        "--chips {output.chips:q} > {log:q} 2>&1"
