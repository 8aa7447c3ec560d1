rule extract_features:
    input:
        "results/manifests/{dataset}.parquet",
        backbone_weights,
    output:
        "results/features/{dataset}/{backbone}.h5",
    log:
        "results/logs/extract_features/{dataset}/{backbone}.log",
    benchmark:
        "results/benchmarks/extract_features/{dataset}/{backbone}.tsv"
    conda:
        "../envs/rshash.yaml"
    threads: 8
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
        mem_mb=16000,
        runtime=120,
        # how images are decoded, not what is computed (the features are byte-identical
        # for any number of workers: tests/test_streaming.py), so no params entry
        num_workers=lambda w: extraction_settings(config, w.backbone)["num_workers"],
    # batch_size is a param: the batch size changes the float summation order of CPU
    # convolutions (features differ in the last bits), so it reruns extraction
    params:
        batch_size=lambda w: extraction_settings(config, w.backbone)["batch_size"],
        device=DEVICE,
        source=lambda w: as_json(backbone_source(config, w.backbone)),
        precision=lambda w: extraction_settings(config, w.backbone)["precision"],
    shell:
        "rshash extract --manifest {input} --backbone {wildcards.backbone} --out {output} "
        "--threads {threads} --batch-size {params.batch_size} "
        "--num-workers {resources.num_workers} --device {params.device} "
        "--source {params.source:q} --precision {params.precision} > {log} 2>&1"


# The last conv maps (DAH), three stages pooled (PBFFN) and the rotated copies
# (PBFFN, rotation_top3): one file per kind, so a method depends only on what it reads.
use rule extract_features as extract_feature_kind with:
    output:
        "results/features/{dataset}/{backbone}_{kind}.h5",
    log:
        "results/logs/extract_features/{dataset}/{backbone}_{kind}.log",
    benchmark:
        "results/benchmarks/extract_features/{dataset}/{backbone}_{kind}.tsv"
    wildcard_constraints:
        kind="maps|layers|rot",
    params:
        batch_size=lambda w: extraction_settings(config, w.backbone)["batch_size"],
        device=lambda w: f"{DEVICE} --kind {w.kind}",
        source=lambda w: as_json(backbone_source(config, w.backbone)),
        precision=lambda w: extraction_settings(config, w.backbone)["precision"],
