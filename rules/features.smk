rule extract_features:
    input:
        "results/manifests/{dataset}.parquet",
    output:
        "results/features/{dataset}/{backbone}.h5",
    params:
        batch_size=lambda w: config["backbones"][w.backbone].get("batch_size", 32),
        num_workers=lambda w: config["backbones"][w.backbone].get("num_workers", 0),
        device=DEVICE,
    threads: 8
    resources:
        gpu=0 if DEVICE == "cpu" else 1,
    log:
        "results/logs/extract_features/{dataset}/{backbone}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash extract --manifest {input} --backbone {wildcards.backbone} --out {output} "
        "--threads {threads} --batch-size {params.batch_size} "
        "--num-workers {params.num_workers} --device {params.device} > {log} 2>&1"
