# rshash: remote-sensing image retrieval with deep hashing.
# Build a table:  snakemake --cores 8 results/tables/ucmd.csv
configfile: "config.yaml"


include: "workflow/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        expand("results/tables/{experiment}.csv", experiment=config["experiments"]),
        expand("results/tables/{experiment}_cost.csv", experiment=config["experiments"]),
    default_target: True
