rule train_method:
    input:
        features="results/features/{dataset}/{backbone}.h5",
        split="results/splits/{dataset}/{protocol}/split{seed}.parquet",
        extra=extra_features,
    output:
        model=f"results/models/{CELL}.npz",
        codes=f"results/codes/{CELL}.parquet",
    log:
        f"results/logs/train_method/{CELL}.log",
    benchmark:
        f"results/benchmarks/train_method/{CELL}.tsv"
    conda:
        "../envs/rshash.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        base=lambda w: variant(w)["method"],
        options=variant_options,
        val_metric=val_metric,
        extra=lambda w, input: " ".join(
            f"--extra {k}={p}" for k, p in zip(method_inputs(w), input.extra)
        ),
    shell:
        "rshash train --features {input.features} --split {input.split} "
        "--method {params.base} --bits {wildcards.bits} --seed {wildcards.seed} "
        "--params {params.options:q} {params.extra} --threads {threads} "
        "--val-metric {params.val_metric:q} "
        "--model {output.model} --codes {output.codes} > {log} 2>&1"
