# The VAE latent-space bump hunt: the published KL anomaly score (vae), the rarity of the encodings on the same
# members (vae_latent), the ensemble's diagnostics and sculpting checks, and the latent characterisation.
from resonant.errors import ConfigError

if config["methods"]["vae_latent"]["enabled"]:
    if not config["methods"]["vae"]["enabled"]:
        raise ConfigError("methods.vae_latent", "the encoding-rarity score scores the members the vae method "
                          "trains, but methods.vae.enabled is false",
                          "set methods.vae.enabled: true, or methods.vae_latent.enabled: false")
    for _study in config["studies"]:
        _missing = sorted(set(method_injections(config, _study, "vae_latent"))
                          - set(method_injections(config, _study, "vae")))
        if _missing:
            raise ConfigError(f"studies.{_study}.method_injections.vae_latent",
                              f"injections {_missing} have no vae members to score",
                              "run vae at every injection of vae_latent")


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


def vae_checks_injections(study):
    """(largest, smallest) injection of the vae method in ``study``: the diagnostics' and the sculpting check's."""
    inj = method_injections(config, study, "vae")
    return max(inj), min(inj)


def vae_checks_sets(wildcards):
    """The members and data of the diagnostics (largest injection) and of the sculpting check (smallest), first seed."""
    seed = config["studies"][wildcards.study]["seeds"][0]
    diag, sculpt = (study_dir(wildcards.study, inj, seed) for inj in vae_checks_injections(wildcards.study))
    return {"diagnostics_models": f"{diag}/vae/models", "diagnostics_sb": f"{diag}/sb.parquet",
            "diagnostics_sr": f"{diag}/sr.parquet", "sculpting_models": f"{sculpt}/vae/models",
            "sculpting_sb": f"{sculpt}/sb.parquet", "sculpting_sr": f"{sculpt}/sr.parquet"}


def vae_checks_params(wildcards):
    st = config["studies"][wildcards.study]
    s = config["methods"]["vae_latent"]
    return json.dumps({**{k: v for k, v in s.items() if k != "enabled"}, "study": wildcards.study,
                       **dict(zip(("diagnostics_injection", "sculpting_injection"),
                                  vae_checks_injections(wildcards.study))),
                       "seed": st["seeds"][0], "sr": config["regions"]["sr"], "sb": config["regions"]["sb"],
                       "title": f"{wildcards.study}: {st['signal']}"}, sort_keys=True)


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


rule vae_latent:
    """The rarity of each test event's encoding among the data's encodings, on vae_train's members (no labels)."""
    output:
        scores="results/{study}/inj{inj}/seed{seed}/vae_latent/scores.parquet",
    input:
        models="results/{study}/inj{inj}/seed{seed}/vae/models",
        sb="results/{study}/inj{inj}/seed{seed}/sb.parquet",
        sr="results/{study}/inj{inj}/seed{seed}/sr.parquet",
        test="results/{study}/inj{inj}/seed{seed}/test.parquet",
        code=code("vae_latent"),
    params:
        p=method_params("vae_latent"),
    log:
        "results/{study}/logs/vae_latent/score-inj{inj}-seed{seed}.log",
    threads: 1
    conda:
        "../envs/tensorflow.yaml"
    shell:
        "{PY} workflow/scripts/vae_latent.py --models-dir {input.models} --sb {input.sb} --sr {input.sr}"
        " --test {input.test} --params {params.p:q} --scores {output.scores} --threads {threads} 2> {log}"


rule vae_checks:
    """Per member the validation KL against epoch and the data's latent means; m_jj sculpting of both scores."""
    output:
        training=report("results/{study}/summary/vae_training.png", caption="../workflow/report/vae_training.rst",
                        category="{study}", subcategory="VAE"),
        latent=report("results/{study}/summary/vae_latent_means.png",
                      caption="../workflow/report/vae_latent_means.rst", category="{study}", subcategory="VAE"),
        kl_sculpting=report("results/{study}/summary/vae_mjj.png", caption="../workflow/report/vae_mjj.rst",
                            category="{study}", subcategory="VAE"),
        sculpting=report("results/{study}/summary/vae_latent_mjj.png",
                         caption="../workflow/report/vae_latent_mjj.rst", category="{study}", subcategory="VAE"),
        summary="results/{study}/summary/vae_checks.json",
    input:
        unpack(vae_checks_sets),
        code=code("vae_checks"),
    params:
        p=vae_checks_params,
    log:
        "results/{study}/logs/vae/checks.log",
    threads: 1
    conda:
        "../envs/tensorflow.yaml"
    shell:
        "{PY} workflow/scripts/vae_checks.py --diagnostics-models {input.diagnostics_models}"
        " --diagnostics-sets {input.diagnostics_sb} {input.diagnostics_sr}"
        " --sculpting-models {input.sculpting_models} --sculpting-sets {input.sculpting_sb} {input.sculpting_sr}"
        " --params {params.p:q} --training-plot {output.training} --latent-plot {output.latent}"
        " --kl-sculpting-plot {output.kl_sculpting} --sculpting-plot {output.sculpting}"
        " --summary {output.summary} --threads {threads} 2> {log}"


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
