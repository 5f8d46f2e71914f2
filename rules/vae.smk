# The VAE latent-space bump hunt: KL anomaly score and latent characterisation.


def vae_characterise_sets(wildcards):
    """sb/sr of the study's largest injection (with signal) and of injection 0 (without), first seed.

    Without injection 0 in the study, the data set without signal is the largest
    injection's with its signal events removed: the same background events
    (injections only add signal to a fixed background).
    """
    st = config["studies"][wildcards.study]
    seed = st["seeds"][0]
    sig = study_dir(wildcards.study, max(st["injections"]), seed)
    bkg = study_dir(wildcards.study, 0 if 0 in st["injections"] else max(st["injections"]), seed)
    return {"signal_sb": f"{sig}/sb.parquet", "signal_sr": f"{sig}/sr.parquet",
            "background_sb": f"{bkg}/sb.parquet", "background_sr": f"{bkg}/sr.parquet"}


def vae_characterise_params(wildcards):
    st = config["studies"][wildcards.study]
    s = config["methods"]["vae"]
    return json.dumps({**{k: v for k, v in s.items() if k != "enabled"}, "study": wildcards.study,
                       "injection": max(st["injections"]), "seed": st["seeds"][0],
                       "sr": config["regions"]["sr"], "sb": config["regions"]["sb"],
                       "drop_signal_from_background": 0 not in st["injections"],
                       "title": f"{wildcards.study}: {st['signal']}"}, sort_keys=True)


rule vae_train:
    """VAE ensemble on all data (SB + SR, no labels), KL-peak early stopping; mean per-event KL on the test set."""
    output:
        models=directory("results/{study}/inj{inj}/seed{seed}/vae/models"),
        scores="results/{study}/inj{inj}/seed{seed}/vae/scores.parquet",
    input:
        sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
        sr="results/{study}/inj{inj}/seed{seed}/sr.parquet",
        test="results/{study}/inj{inj}/seed{seed}/test.parquet",
        code=code("vae_train"),
    params:
        p=method_params("vae"),
    log:
        "results/{study}/logs/vae/train-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/tensorflow.yaml"
    shell:
        "{PY} workflow/scripts/vae_train.py --sb {input.sb} --sr {input.sr} --test {input.test}"
        " --params {params.p:q} --models-dir {output.models} --scores {output.scores} --threads {threads} 2> {log}"


rule vae_characterise:
    """Latent characterisation: decoder with m_jj on the frozen encoder, (m_jj, z) heat maps, marginal bands."""
    output:
        latent_signal=report("results/{study}/summary/vae_latent_signal.png",
                             caption="../workflow/report/vae_latent_signal.rst", category="{study}",
                             subcategory="VAE"),
        latent_background=report("results/{study}/summary/vae_latent_background.png",
                                 caption="../workflow/report/vae_latent_background.rst", category="{study}",
                                 subcategory="VAE"),
        marginals=report("results/{study}/summary/vae_marginals.png", caption="../workflow/report/vae_marginals.rst",
                         category="{study}", subcategory="VAE"),
        summary="results/{study}/summary/vae_characterisation.json",
    input:
        unpack(vae_characterise_sets),
        code=code("vae_characterise"),
    params:
        p=vae_characterise_params,
    log:
        "results/{study}/logs/vae/characterise.log",
    threads: 1
    conda:
        "../envs/tensorflow.yaml"
    shell:
        "{PY} workflow/scripts/vae_characterise.py --signal-sets {input.signal_sb} {input.signal_sr}"
        " --background-sets {input.background_sb} {input.background_sr} --params {params.p:q}"
        " --latent-signal-plot {output.latent_signal} --latent-background-plot {output.latent_background}"
        " --marginals-plot {output.marginals} --summary {output.summary} --threads {threads} 2> {log}"
