# Full phase space CATHODE: point-cloud generators of the background. Each
# (study, injection, seed) trains a jet model (both jets given m_jj) and a
# particle model (each jet's constituents given the jet and m_jj) on its
# sideband data, then samples them in the SR (and, for the checks, in the SB).
# The same three rules for every generator, named by its short name:
#   flow matching (fm):  CNFs, PyTorch Lightning (DDP)        -> *.pt
#   diffusion:           score models, Keras 3 on TensorFlow  -> *.h5
# The point-cloud classifier and the checks are the shared rules of classify.smk.
GENERATOR_RULES = {  # generator: (rule-name suffix, model file extension, conda env)
    "flow_matching": ("fm", "pt", "torch"),
    "diffusion": ("diffusion", "h5", "tensorflow"),
}

for _gen, (_short, _ext, _env) in GENERATOR_RULES.items():
    _dir = f"results/{{study}}/inj{{inj}}/seed{{seed}}/{_gen}"

    for _part in ("jet", "particle"):

        rule:
            """A generator's jet or particle model, trained on the SB data of a study set.

            A multi-GPU rule: on SLURM the profile sets resources.mpi = srun and the
            job's tasks are the data-parallel workers; locally it is one process.
            """
            name:
                f"train_{_part}_{_short}"
            output:
                model=f"{_dir}/{_part}_model.{_ext}",
                meta=f"{_dir}/{_part}_model.json",
            input:
                sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
                code=generator_code("train_generator", _gen),
            params:
                p=generator_params(_gen, f"{_part}_model"),
                model=f"{_part}s",
                launcher=launcher,
            log:
                f"results/{{study}}/logs/{_gen}/{_part}_model-inj{{inj}}-seed{{seed}}.log",
            threads: 1
            cache: "omit-software"
            conda:
                f"../envs/{_env}.yaml"
            shell:
                "{params.launcher} {PY} workflow/scripts/train_generator.py --model {params.model} --sb {input.sb}"
                " --params {params.p:q} --threads {threads} --output {output.model} 2> {log}"

    rule:
        """Generated background: m_jj from the SR KDE (samples.h5), or of the SB validation background (samples_sb.h5)."""
        name:
            f"sample_{_short}"
        output:
            f"{_dir}/samples{{region}}.h5",
        input:
            jets=f"{_dir}/jet_model.{_ext}",
            particles=f"{_dir}/particle_model.{_ext}",
            mjj=sampling_mjj_input,
            code=generator_code("sample_generator", _gen),
        params:
            p=generator_params(_gen, "sampling"),
            region=sampling_region,
        wildcard_constraints:
            region="|_sb",
        log:
            f"results/{{study}}/logs/{_gen}/sample{{region}}-inj{{inj}}-seed{{seed}}.log",
        threads: 1
        conda:
            f"../envs/{_env}.yaml"
        shell:
            "{PY} workflow/scripts/sample_generator.py --jet-model {input.jets} --particle-model {input.particles}"
            " --mjj {input.mjj} --region {params.region} --params {params.p:q} --threads {threads}"
            " --output {output} 2> {log}"
