rule generate_demo:
    output:
        directory("results/datasets/{dataset}"),
    params:
        synthetic=lambda w: as_json(dataset_spec(w).synthetic),
    log:
        "results/logs/generate_demo/{dataset}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash generate --out-dir {output} --params {params.synthetic:q} > {log} 2>&1"


rule build_manifest:
    input:
        manifest_input,
    output:
        manifest="results/manifests/{dataset}.parquet",
        report="results/manifests/{dataset}.report.json",
    params:
        folder=image_folder,
        skip="--skip-unreadable" if config.get("skip_unreadable") else "",
        protocols=dataset_protocols_json,
        data_dir=lambda w: str(DATA_DIR),
        url=lambda w: f"--url {dataset_spec(w).url}" if dataset_spec(w).url else "",
        root=lambda w: f"--archive-root {dataset_spec(w).archive_root}" if dataset_spec(w).archive_root else "",
        counts=lambda w: " ".join(
            f"--{k.replace('_', '-')} {getattr(dataset_spec(w), k)}"
            for k in ("n_classes", "n_images") if getattr(dataset_spec(w), k)
        ),
        expected=lambda w: (f"--expected {shlex.quote(as_json(dataset_spec(w).expected))}"
                            if dataset_spec(w).expected else ""),
    log:
        "results/logs/build_manifest/{dataset}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash manifest --dataset {wildcards.dataset} --folder {params.folder:q} "
        "--data-dir {params.data_dir:q} {params.url} {params.root} {params.counts} "
        "{params.expected} {params.skip} --protocols {params.protocols:q} "
        "--out {output.manifest} --report {output.report} > {log} 2>&1"


rule make_split:
    input:
        "results/manifests/{dataset}.parquet",
    output:
        "results/splits/{dataset}/{protocol}/split{seed}.parquet",
    params:
        protocol=lambda w: as_json(config["protocols"][w.protocol]),
    log:
        "results/logs/make_split/{dataset}/{protocol}/split{seed}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash split --manifest {input} --protocol {params.protocol:q} "
        "--protocol-name {wildcards.protocol} --seed {wildcards.seed} --out {output} > {log} 2>&1"
