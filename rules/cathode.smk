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
        " --models-dir {output.models} --scores {output.scores} --threads {threads} 2> {log}"


# The CATHODE engine, for classic CATHODE ({engine} = cathode) and for every
# member of the contrastive branch ({engine} = contrastive-<config>/e<E>/f<F>).
ENGINE_DIR = "results/{study}/inj{inj}/seed{seed}/{engine}"


rule cathode_flow:
    """CATHODE's background flow p(features | m_jj), trained in the sidebands."""
    output:
        flow=f"{ENGINE_DIR}/flow.pt",
        meta=f"{ENGINE_DIR}/flow.json",
    input:
        sb=engine_input("sb"),
        code=code("cathode_flow"),
    params:
        p=engine_params("flow"),
    log:
        "results/{study}/logs/{engine}/flow-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/cathode_flow.py --sb {input.sb} --params {params.p:q} --threads {threads}"
        " --output {output.flow} 2> {log}"


rule cathode_sample:
    """Background samples in the SR: the flow at m_jj values from the SR KDE."""
    output:
        f"{ENGINE_DIR}/samples.h5",
    input:
        flow=f"{ENGINE_DIR}/flow.pt",
        mjj="results/{study}/inj{inj}/seed{seed}/sr_mjj.parquet",
        code=code("cathode_sample"),
    params:
        p=engine_params("sample"),
    log:
        "results/{study}/logs/{engine}/sample-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/cathode_sample.py --flow {input.flow} --mjj {input.mjj} --params {params.p:q}"
        " --threads {threads} --output {output} 2> {log}"


rule cathode_classify:
    """k-fold BDTs of SR data vs the flow's samples, scored on the test set."""
    output:
        scores=f"{ENGINE_DIR}/scores.parquet",
        history=f"{ENGINE_DIR}/classifier.json",
        mjj=f"{ENGINE_DIR}/mjj_scores.parquet",
    input:
        sr=engine_input("sr"),
        sb=engine_input("sb"),
        samples=f"{ENGINE_DIR}/samples.h5",
        test=engine_input("test"),
        code=code("cathode_classify"),
    params:
        p=engine_params("classify"),
    log:
        "results/{study}/logs/{engine}/classify-inj{inj}-seed{seed}.log",
    threads: 2
    conda:
        "../envs/bdt.yaml"
    shell:
        "{PY} workflow/scripts/cathode_classify.py --sr {input.sr} --sb {input.sb} --background {input.samples}"
        " --test {input.test} --params {params.p:q} --scores {output.scores} --mjj-scores {output.mjj}"
        " --history {output.history} --threads {threads} 2> {log}"


rule cathode_fidelity:
    """Sculpting check: classifier of generated vs true SR background (AUC 0.5 for a perfect model)."""
    output:
        f"{ENGINE_DIR}/fidelity.json",
    input:
        true=engine_input("sr_background"),
        samples=f"{ENGINE_DIR}/samples.h5",
        code=code("cathode_fidelity"),
    params:
        p=engine_params("fidelity"),
    log:
        "results/{study}/logs/{engine}/fidelity-inj{inj}-seed{seed}.log",
    threads: 2
    conda:
        "../envs/bdt.yaml"
    shell:
        "{PY} workflow/scripts/cathode_fidelity.py --true {input.true} --background {input.samples}"
        " --params {params.p:q} --threads {threads} --output {output} 2> {log}"


rule cathode_checks:
    """Sculpting checks of a CATHODE-type method: generated-vs-true AUC per injection, m_jj before and after cuts."""
    output:
        fidelity=report("results/{study}/summary/{cmethod}_fidelity.png",
                        caption="../workflow/report/cathode_fidelity.rst", category="{study}",
                        subcategory="{cmethod} checks"),
        sculpting=report("results/{study}/summary/{cmethod}_mjj.png", caption="../workflow/report/cathode_mjj.rst",
                         category="{study}", subcategory="{cmethod} checks"),
        summary="results/{study}/summary/{cmethod}_checks.json",
    input:
        fidelity=checks_fidelity_files,
        mjj=checks_sculpting_input,
        code=code("cathode_checks"),
    params:
        p=checks_params,
    log:
        "results/{study}/logs/{cmethod}/checks.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/cathode_checks.py --fidelity {input.fidelity} --mjj-scores {input.mjj}"
        " --params {params.p:q} --fidelity-plot {output.fidelity} --sculpting-plot {output.sculpting}"
        " --summary {output.summary} 2> {log}"
