rule build_table:
    input:
        metrics=experiment_metrics,
        # the model headers say which cells stopped at their cap (marked in the .md)
        models=experiment_models,
        plots=experiment_plots,
    output:
        csv=report(
            "results/tables/{experiment}.csv",
            caption="../workflow/report/table.rst",
            category="{experiment}",
            subcategory="tables",
            labels={"table": "long format (every metric)"},
        ),
        md="results/tables/{experiment}.md",
        meta="results/tables/{experiment}.meta.json",
        paired=report(
            "results/tables/{experiment}.paired.csv",
            caption="../workflow/report/paired.rst",
            category="{experiment}",
            subcategory="tables",
            labels={"table": "paired comparison with the reference"},
        ),
    log:
        "results/logs/build_table/{experiment}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        protocols=experiment_protocols,
        reference=experiment_reference,
        comparisons=experiment_comparisons,
    shell:
        "rshash table --experiment {wildcards.experiment} --csv {output.csv} --md {output.md} "
        "--meta {output.meta} --protocols {params.protocols:q} --reference {params.reference:q} "
        "--comparisons {params.comparisons:q} --paired {output.paired} "
        "--models {input.models} -- {input.metrics} > {log} 2>&1"


# Seconds and peak memory of the extraction, training and evaluation jobs
# (their benchmark files), per method x bits over split seeds. Its name also
# fits build_table's {experiment}.csv, hence the rule order.
ruleorder: build_cost > build_table


rule build_cost:
    input:
        experiment_benchmarks,
    output:
        report(
            "results/tables/{experiment}_cost.csv",
            caption="../workflow/report/cost.rst",
            category="{experiment}",
            subcategory="tables",
            labels={"table": "compute cost (seconds, peak memory)"},
        ),
    log:
        "results/logs/build_cost/{experiment}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        # the configured backbone names (a timm or OpenCLIP entry's name is any name)
        backbones=" ".join(config["backbones"]),
    shell:
        "rshash cost --experiment {wildcards.experiment} --out {output} "
        "--backbones {params.backbones} -- {input} > {log} 2>&1"


rule plot_tsne:
    input:
        f"results/codes/{CELL}.parquet",
    output:
        report(
            f"results/plots/{{experiment}}/tsne/{CELL}.png",
            caption="../workflow/report/tsne.rst",
            category="{experiment}",
            subcategory="t-SNE of codes",
            labels={
                "dataset": "{dataset}",
                "protocol": "{protocol}",
                "method": "{method}",
                "bits": "{bits}",
            },
        ),
    log:
        f"results/logs/plot_tsne/{{experiment}}/{CELL}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash tsne --codes {input} --title '{wildcards.method}, {wildcards.bits} bits "
        "({wildcards.dataset}, {wildcards.protocol}, split {wildcards.seed})' "
        "--out {output} > {log} 2>&1"


rule plot_curves:
    input:
        curve_metrics,
    output:
        report(
            "results/plots/{experiment}/{kind}/{dataset}/{backbone}/{protocol}/{bits}.png",
            caption="../workflow/report/curves.rst",
            category="{experiment}",
            subcategory="{kind}",
            labels={
                "dataset": "{dataset}",
                "protocol": "{protocol}",
                "bits": "{bits}",
            },
        ),
    log:
        "results/logs/plot_curves/{experiment}/{kind}/{dataset}/{backbone}/{protocol}/{bits}.log",
    wildcard_constraints:
        kind="pr_hamming|p_at_k",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash plot-curves --kind {wildcards.kind} --title '{wildcards.dataset} · "
        "{wildcards.backbone} · {wildcards.protocol} · {wildcards.bits} bits' "
        "--out {output} {input} > {log} 2>&1"


rule plot_ap_per_class:
    input:
        metrics=group_metrics,
        manifest="results/manifests/{dataset}.parquet",
    output:
        report(
            "results/plots/{experiment}/ap_per_class/{dataset}/{backbone}/{protocol}.png",
            caption="../workflow/report/ap_per_class.rst",
            category="{experiment}",
            subcategory="AP per class",
            labels={"dataset": "{dataset}", "protocol": "{protocol}"},
        ),
    log:
        "results/logs/plot_ap_per_class/{experiment}/{dataset}/{backbone}/{protocol}.log",
    conda:
        "../envs/rshash.yaml"
    shell:
        "rshash plot-ap --manifest {input.manifest} --title 'AP per class: {wildcards.dataset} "
        "· {wildcards.backbone} · {wildcards.protocol}' --out {output} {input.metrics} "
        "> {log} 2>&1"


rule plot_retrieval:
    input:
        codes=f"results/codes/{CELL}.parquet",
        split="results/splits/{dataset}/{protocol}/split{seed}.parquet",
        manifest="results/manifests/{dataset}.parquet",
    output:
        report(
            f"results/plots/{{experiment}}/retrieval/{CELL}/{{ranking}}.png",
            caption="../workflow/report/retrieval.rst",
            category="{experiment}",
            subcategory="retrieval examples",
            labels={
                "dataset": "{dataset}",
                "protocol": "{protocol}",
                "method": "{method}",
                "bits": "{bits}",
                "ranking": "{ranking}",
            },
        ),
    log:
        f"results/logs/plot_retrieval/{{experiment}}/{CELL}/{{ranking}}.log",
    conda:
        "../envs/rshash.yaml"
    params:
        ranking_params=ranking_params_json,
    shell:
        "rshash plot-retrieval --codes {input.codes} --split {input.split} "
        "--manifest {input.manifest} --ranking {wildcards.ranking} "
        "--ranking-params {params.ranking_params:q} --title '{wildcards.method}, "
        "{wildcards.bits} bits, ranking {wildcards.ranking} ({wildcards.dataset}, "
        "{wildcards.protocol}, split {wildcards.seed})' --out {output} > {log} 2>&1"
