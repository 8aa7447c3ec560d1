rule generate_demo:
    output:
        directory("results/datasets/{dataset}"),
    log:
        "results/logs/generate_demo/{dataset}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        synthetic=lambda w: as_json(dataset_spec(w).synthetic),
    shell:
        "rshash generate --out-dir {output} --params {params.synthetic:q} > {log} 2>&1"


# Every value from config reaches the shell through :q (lists are quoted item by item).
checkpoint fetch_dataset:
    output:
        fetch_record("{dataset}"),
    log:
        "results/logs/fetch_dataset/{dataset}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        folder=lambda w: str(image_root(dataset_spec(w), DATA_DIR)),
        data_dir=lambda w: str(DATA_DIR),
        options=fetch_options,
    shell:
        "rshash fetch --dataset {wildcards.dataset} --folder {params.folder:q} "
        "--data-dir {params.data_dir:q} {params.options:q} --out {output:q} > {log:q} 2>&1"


rule build_manifest:
    input:
        manifest_input,
    output:
        manifest="results/manifests/{dataset}.parquet",
        report="results/manifests/{dataset}.report.json",
    log:
        "results/logs/build_manifest/{dataset}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        folder=image_folder,
        files=folder_listing,
        protocols=dataset_protocols_json,
        data_dir=lambda w: str(DATA_DIR),
        options=manifest_options,
    shell:
        "rshash manifest --dataset {wildcards.dataset} --folder {params.folder:q} "
        "--data-dir {params.data_dir:q} {params.options:q} --protocols {params.protocols:q} "
        "--out {output.manifest:q} --report {output.report:q} > {log:q} 2>&1"


rule make_split:
    input:
        "results/manifests/{dataset}.parquet",
    output:
        "results/splits/{dataset}/{protocol}/split{seed}.parquet",
    log:
        "results/logs/make_split/{dataset}/{protocol}/split{seed}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        protocol=split_protocol_json,
    shell:
        "rshash split --manifest {input} --protocol {params.protocol:q} "
        "--protocol-name {wildcards.protocol} --seed {wildcards.seed} --out {output} > {log} 2>&1"
