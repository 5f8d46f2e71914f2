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


rule cathode_flow:
    """Classic CATHODE: the background flow p(m_j1, dm_j, tau21s | m_jj) trained in the sidebands."""
    output:
        flow="results/{study}/inj{inj}/seed{seed}/cathode/flow.pt",
        meta="results/{study}/inj{inj}/seed{seed}/cathode/flow.json",
    input:
        sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
        code=code("cathode_flow"),
    params:
        p=method_params("cathode"),
    log:
        "results/{study}/logs/cathode/flow-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/cathode_flow.py --sb {input.sb} --params {params.p:q} --threads {threads}"
        " --output {output.flow} 2> {log}"


rule cathode_sample:
    """Background samples in the SR: the flow at m_jj values from the SR KDE."""
    output:
        "results/{study}/inj{inj}/seed{seed}/cathode/samples.h5",
    input:
        flow="results/{study}/inj{inj}/seed{seed}/cathode/flow.pt",
        mjj="results/{study}/inj{inj}/seed{seed}/sr_mjj.parquet",
        code=code("cathode_sample"),
    params:
        p=method_params("cathode"),
    log:
        "results/{study}/logs/cathode/sample-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/cathode_sample.py --flow {input.flow} --mjj {input.mjj} --params {params.p:q}"
        " --threads {threads} --output {output} 2> {log}"


rule cathode_classify:
    """k-fold BDTs of SR data vs CATHODE samples, scored on the test set."""
    output:
        scores="results/{study}/inj{inj}/seed{seed}/cathode/scores.parquet",
        history="results/{study}/inj{inj}/seed{seed}/cathode/classifier.json",
        mjj="results/{study}/inj{inj}/seed{seed}/cathode/mjj_scores.parquet",
    input:
        sr="results/{study}/inj{inj}/seed{seed}/sr.parquet",
        sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
        samples="results/{study}/inj{inj}/seed{seed}/cathode/samples.h5",
        test="results/{study}/inj{inj}/seed{seed}/test.parquet",
        code=code("cathode_classify"),
    params:
        p=method_params("cathode"),
    log:
        "results/{study}/logs/cathode/classify-inj{inj}-seed{seed}.log",
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
        "results/{study}/inj{inj}/seed{seed}/cathode/fidelity.json",
    input:
        true="results/{study}/inj{inj}/seed{seed}/sr_background.parquet",
        samples="results/{study}/inj{inj}/seed{seed}/cathode/samples.h5",
        code=code("cathode_fidelity"),
    params:
        p=method_params("cathode"),
    log:
        "results/{study}/logs/cathode/fidelity-inj{inj}-seed{seed}.log",
    threads: 2
    conda:
        "../envs/bdt.yaml"
    shell:
        "{PY} workflow/scripts/cathode_fidelity.py --true {input.true} --background {input.samples}"
        " --params {params.p:q} --threads {threads} --output {output} 2> {log}"


rule cathode_checks:
    """Sculpting checks: generated-vs-true AUC for every injection, m_jj before and after cuts."""
    output:
        fidelity=report("results/{study}/summary/cathode_fidelity.png",
                        caption="../workflow/report/cathode_fidelity.rst", category="{study}",
                        subcategory="CATHODE checks"),
        sculpting=report("results/{study}/summary/cathode_mjj.png", caption="../workflow/report/cathode_mjj.rst",
                         category="{study}", subcategory="CATHODE checks"),
        summary="results/{study}/summary/cathode_checks.json",
    input:
        fidelity=cathode_fidelity_files,
        mjj=cathode_sculpting_input,
        code=code("cathode_checks"),
    params:
        p=cathode_checks_params,
    log:
        "results/{study}/logs/cathode/checks.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/cathode_checks.py --fidelity {input.fidelity} --mjj-scores {input.mjj}"
        " --params {params.p:q} --fidelity-plot {output.fidelity} --sculpting-plot {output.sculpting}"
        " --summary {output.summary} 2> {log}"
