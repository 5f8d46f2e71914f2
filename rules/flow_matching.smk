# Full phase space CATHODE with flow matching: a CNF of the two jets given m_jj
# and an EPiC CNF of each jet's constituents, both trained on the sideband data
# of a study set, then sampled in the SR (and, for the checks, in the SB).
# The point-cloud classifier and the checks are the shared rules of classify.smk.
FM_DIR = "results/{study}/inj{inj}/seed{seed}/flow_matching"


rule train_jet_fm:
    """Jet model: conditional CNF of both jets' (pt, eta, phi, m, n) given m_jj, on the SB data.

    A multi-GPU rule: on SLURM the profile sets resources.mpi = srun and the
    job's tasks are the DDP workers; locally it is one process.
    """
    output:
        model=f"{FM_DIR}/jet_model.pt",
        meta=f"{FM_DIR}/jet_model.json",
    input:
        sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
        code=code("train_fm"),
    params:
        p=generator_params("flow_matching"),
        launcher=launcher,
    log:
        "results/{study}/logs/flow_matching/jet_model-inj{inj}-seed{seed}.log",
    threads: 1
    cache: "omit-software"
    conda:
        "../envs/torch.yaml"
    shell:
        "{params.launcher} {PY} workflow/scripts/train_fm.py --model jets --sb {input.sb} --params {params.p:q}"
        " --threads {threads} --output {output.model} 2> {log}"


rule train_particle_fm:
    """Particle model: EPiC CNF of each jet's constituents given the jet and m_jj, on the SB data (multi-GPU rule)."""
    output:
        model=f"{FM_DIR}/particle_model.pt",
        meta=f"{FM_DIR}/particle_model.json",
    input:
        sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
        code=code("train_fm"),
    params:
        p=generator_params("flow_matching"),
        launcher=launcher,
    log:
        "results/{study}/logs/flow_matching/particle_model-inj{inj}-seed{seed}.log",
    threads: 1
    cache: "omit-software"
    conda:
        "../envs/torch.yaml"
    shell:
        "{params.launcher} {PY} workflow/scripts/train_fm.py --model particles --sb {input.sb} --params {params.p:q}"
        " --threads {threads} --output {output.model} 2> {log}"


rule sample_fm:
    """Generated background: m_jj from the SR KDE (samples.h5), or of the SB validation background (samples_sb.h5)."""
    output:
        f"{FM_DIR}/samples{{region}}.h5",
    input:
        jets=f"{FM_DIR}/jet_model.pt",
        particles=f"{FM_DIR}/particle_model.pt",
        mjj=sampling_mjj_input,
        code=code("sample_fm"),
    params:
        p=generator_params("flow_matching"),
        region=sampling_region,
    wildcard_constraints:
        region="|_sb",
    log:
        "results/{study}/logs/flow_matching/sample{region}-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/torch.yaml"
    shell:
        "{PY} workflow/scripts/sample_fm.py --jet-model {input.jets} --particle-model {input.particles}"
        " --mjj {input.mjj} --region {params.region} --params {params.p:q} --threads {threads}"
        " --output {output} 2> {log}"
