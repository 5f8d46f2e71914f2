# The point-cloud classifier, shared by the generators of whole events (flow
# matching, diffusion) and the point-cloud idealised detector; the
# generators' fidelity checks and generated-vs-true feature figures.


rule pc_classifier:
    """Transformer ensemble of SR data (1) vs background (0): a generator's SR samples, or true SR background."""
    output:
        models=directory("results/{study}/inj{inj}/seed{seed}/{pcmethod}/classifiers"),
        scores="results/{study}/inj{inj}/seed{seed}/{pcmethod}/scores.parquet",
    input:
        sr="results/{study}/inj{inj}/seed{seed}/sr.parquet",
        background=pc_negative,
        test="results/{study}/inj{inj}/seed{seed}/test.parquet",
        code=code("pc_classify"),
    params:
        p=pc_classifier_params,
    log:
        "results/{study}/logs/{pcmethod}/classify-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/pc_classify.py --sr {input.sr} --background {input.background} --test {input.test}"
        " --params {params.p:q} --threads {threads} --models-dir {output.models} --scores {output.scores}"
        " 2> {log}"


rule pc_checks:
    """A generator's fidelity: classifier AUC of generated vs true background (SR without signal, SB), histograms."""
    output:
        summary="results/{study}/summary/{generator}_fidelity.json",
        jets=report("results/{study}/summary/{generator}_jets.png", caption="../workflow/report/pc_jets.rst",
                    category="{study}", subcategory="{generator} checks"),
        particles=report("results/{study}/summary/{generator}_particles.png",
                         caption="../workflow/report/pc_particles.rst", category="{study}",
                         subcategory="{generator} checks"),
    input:
        unpack(pc_check_inputs),
        code=code("pc_checks"),
    params:
        p=pc_check_params,
    log:
        "results/{study}/logs/{generator}/checks.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/pc_checks.py --samples {input.samples} --samples-sb {input.samples_sb}"
        " --sr-background {input.sr_background} --sb {input.sb} --params {params.p:q} --threads {threads}"
        " --summary {output.summary} --jets-plot {output.jets} --particles-plot {output.particles} 2> {log}"
