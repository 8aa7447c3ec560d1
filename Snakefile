# rshash: remote-sensing image retrieval with deep hashing.
# Build the default targets (config key `targets`, the demo):  snakemake --cores 8
# Build a table:  snakemake --cores 8 results/tables/ucmd.csv
# config files read strictly first (a key given twice: one line naming file and line)
include: "workflow/config_files.smk"


configfile: CONFIG_FILE


include: "workflow/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/archive.smk"


# The default target: the experiments of config key `targets` (default [demo]).
rule all:
    default_target: True
    input:
        expand("results/tables/{experiment}.csv", experiment=TARGETS),
        expand("results/tables/{experiment}_cost.csv", experiment=TARGETS),
