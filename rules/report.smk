rule build_table:
    input:
        metrics=experiment_metrics,
        plots=experiment_plots,
    output:
        csv="results/tables/{experiment}.csv",
        md="results/tables/{experiment}.md",
        meta="results/tables/{experiment}.meta.json",
    params:
        protocols=experiment_protocols,
    log:
        "results/logs/build_table/{experiment}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash table --experiment {wildcards.experiment} --csv {output.csv} --md {output.md} "
        "--meta {output.meta} --protocols {params.protocols:q} {input.metrics} > {log} 2>&1"


rule plot_tsne:
    input:
        f"results/codes/{CELL}.parquet",
    output:
        f"results/plots/{{experiment}}/tsne/{CELL}.png",
    log:
        f"results/logs/plot_tsne/{{experiment}}/{CELL}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash tsne --codes {input} --title '{wildcards.method}, {wildcards.bits} bits "
        "({wildcards.dataset}, {wildcards.protocol}, split {wildcards.seed})' "
        "--out {output} > {log} 2>&1"
