# Resonant anomaly detection: one DAG from events to the report.
#   snakemake                          the laptop study (config.yaml)
#   snakemake --profile profiles/slurm the same on a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


# The laptop study, unless another config is given with --configfile (which
# replaces it: configs are complete studies, not patches of this one).
if not config:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/regions.smk"
include: "rules/cathode.smk"
include: "rules/contrastive.smk"
include: "rules/vae.smk"
include: "rules/generators.smk"
include: "rules/classify.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        all_targets(),
    default_target: True
