# Study sets: SR/SB, signal injection, splits, test set, SR m_jj samples.


rule study_sets:
    """Data with an injected signal, the idealised background, the test set and SR m_jj samples."""
    output:
        multiext("results/{study}/inj{inj}/seed{seed}/", *STUDY_FILES),
    input:
        jets=f"{DATA}/jets.parquet",
        code=code("study_sets"),
    params:
        p=study_params,
    log:
        "results/{study}/logs/study_sets/inj{inj}-seed{seed}.log",
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/study_sets.py --jets {input.jets} --params {params.p:q}"
        " --outdir results/{wildcards.study}/inj{wildcards.inj}/seed{wildcards.seed} 2> {log}"
