# The references on the jet features (classic CATHODE joins them here).


rule reference:
    """Supervised classifier or idealised anomaly detector: a BDT ensemble, scored on the test set."""
    output:
        models=directory("results/{study}/inj{inj}/seed{seed}/{reference}/models"),
        scores="results/{study}/inj{inj}/seed{seed}/{reference}/scores.parquet",
    input:
        sets=multiext("results/{study}/inj{inj}/seed{seed}/", "sr.parquet", "sr_background.parquet",
                      "sr_signal.parquet", "test.parquet"),
        code=code("reference"),
    params:
        p=reference_params,
    log:
        "results/{study}/logs/{reference}/inj{inj}-seed{seed}.log",
    threads: 2
    conda:
        "../envs/bdt.yaml"
    shell:
        "{PY} workflow/scripts/reference.py --method {wildcards.reference} --params {params.p:q}"
        " --study-dir results/{wildcards.study}/inj{wildcards.inj}/seed{wildcards.seed}"
        " --models-dir {output.models} --scores {output.scores} 2> {log}"
