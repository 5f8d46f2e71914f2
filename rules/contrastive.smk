# Signal-aware contrastive latent: an encoder trained on simulation, CATHODE in
# its latent space (the engine rules of cathode.smk), members combined.


rule train_contrastive_encoder:
    """Supervised-contrastive encoder of one configuration (ID, IP, EP, background only) on the simulation.

    A multi-GPU rule: on SLURM the profile sets resources.mpi = srun and the
    job's tasks are the DDP workers; locally it is one process.
    """
    output:
        model=f"{DATA}/contrastive/{{config}}/encoder{{enc}}.pt",
        meta=f"{DATA}/contrastive/{{config}}/encoder{{enc}}.json",
        latent=f"{DATA}/contrastive/{{config}}/encoder{{enc}}-test-latent.parquet",
    input:
        sim=f"{DATA}/simulation.parquet",
        code=code("train_contrastive_encoder"),
    params:
        p=encoder_params,
        launcher=launcher,
    log:
        f"{DATA}/logs/contrastive/{{config}}-encoder{{enc}}.log",
    threads: 1  # measured: 2 threads train no faster on a shared 2-core machine; GPUs on SLURM
    cache: "omit-software"
    conda:
        "../envs/torch.yaml"
    shell:
        "{params.launcher} {PY} workflow/scripts/train_contrastive_encoder.py --simulation {input.sim}"
        " --params {params.p:q} --threads {threads} --output {output.model} --test-latent {output.latent}"
        " 2> {log}"


rule contrastive_latent_checks:
    """Latent space of an encoder on the simulation's test split: projections per group, m_jj leakage."""
    output:
        plot=report(f"{DATA}/contrastive/{{config}}/latent.png", caption="../workflow/report/contrastive_latent.rst",
                    category="Contrastive encoder", subcategory="{config}"),
        summary=f"{DATA}/contrastive/{{config}}/latent_checks.json",
    input:
        latent=f"{DATA}/contrastive/{{config}}/encoder0-test-latent.parquet",
        code=code("contrastive_latent"),
    params:
        p=latent_check_params,
    log:
        f"{DATA}/logs/contrastive/{{config}}-latent.log",
    threads: 1
    conda:
        "../envs/bdt.yaml"
    shell:
        "{PY} workflow/scripts/contrastive_latent.py --latent {input.latent} --params {params.p:q}"
        " --plot {output.plot} --summary {output.summary} 2> {log}"


rule contrastive_encode:
    """The whole dataset in the latent space of one encoder (once; the study sets pick their events)."""
    output:
        f"{DATA}/contrastive/{{config}}/encoder{{enc}}-latent.parquet",
    input:
        jets=f"{DATA}/jets.parquet",
        encoder=f"{DATA}/contrastive/{{config}}/encoder{{enc}}.pt",
        code=code("contrastive_encode"),
    params:
        p=encode_params,
    log:
        f"{DATA}/logs/contrastive/{{config}}-encode{{enc}}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/contrastive_encode.py --encoder {input.encoder} --input {input.jets}"
        " --params {params.p:q} --threads {threads} --output {output} 2> {log}"


rule contrastive_latent_sets:
    """A study set in one encoder's latent space (SB, SR, idealised background, test)."""
    output:
        multiext("results/{study}/inj{inj}/seed{seed}/contrastive-{config}/e{enc}/latent/",
                 "sb.parquet", "sr.parquet", "sr_background.parquet", "test.parquet"),
    input:
        sets=multiext("results/{study}/inj{inj}/seed{seed}/", "sb.parquet", "sr.parquet",
                      "sr_background.parquet", "test.parquet"),
        latent=f"{DATA}/contrastive/{{config}}/encoder{{enc}}-latent.parquet",
        code=code("contrastive_latent_sets"),
    params:
        p=encode_params,
    log:
        "results/{study}/logs/contrastive-{config}/latent-sets-e{enc}-inj{inj}-seed{seed}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/contrastive_latent_sets.py --latent {input.latent} --inputs {input.sets}"
        " --params {params.p:q} --outputs {output} 2> {log}"


rule contrastive_combine:
    """Test-set scores of all encoder x flow x classifier members, grouped into ensembles."""
    output:
        "results/{study}/inj{inj}/seed{seed}/contrastive-{config}/scores.parquet",
    input:
        members=contrastive_member_scores,
        code=code("contrastive_combine"),
    params:
        p=combine_params,
    log:
        "results/{study}/logs/contrastive-{config}/combine-inj{inj}-seed{seed}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/contrastive_combine.py --members {input.members} --params {params.p:q}"
        " --output {output} 2> {log}"
