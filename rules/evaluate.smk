rule evaluate_ranking:
    input:
        codes=f"results/codes/{CELL}.parquet",
        split="results/splits/{dataset}/{protocol}/split{seed}.parquet",
    output:
        f"results/metrics/{CELL}/{{ranking}}.json",
    log:
        f"results/logs/evaluate_ranking/{CELL}/{{ranking}}.log",
    benchmark:
        f"results/benchmarks/evaluate_ranking/{CELL}/{{ranking}}.tsv"
    conda:
        "../envs/rshash.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cell=cell_json,
        protocol=protocol_json,
        ranking_params=ranking_params_json,
    shell:
        "rshash evaluate --codes {input.codes} --split {input.split} "
        "--ranking {wildcards.ranking} --ranking-params {params.ranking_params:q} "
        "--protocol {params.protocol:q} --cell {params.cell:q} --threads {threads} "
        "--out {output} > {log} 2>&1"
