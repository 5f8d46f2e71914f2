# Resonant anomaly detection: one DAG from events to the report.
#   snakemake                          the laptop study (config.yaml)
#   snakemake --profile profiles/slurm the same on a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/regions.smk"


rule all:
    input:
        all_targets(),
    default_target: True
