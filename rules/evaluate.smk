# Metrics, summary tables, figures and the report.


rule metrics:
    """AUC, max SIC, SIC at the working points, rejection of one method, injection and seed, with test-set
    bootstrap errors and the SR counts."""
    output:
        "results/{study}/inj{inj}/seed{seed}/{method}/metrics.json",
    input:
        scores="results/{study}/inj{inj}/seed{seed}/{method}/scores.parquet",
        summary="results/{study}/inj{inj}/seed{seed}/summary.json",
        code=code("metrics"),
    params:
        p=metrics_params,
    log:
        "results/{study}/logs/metrics/{method}-inj{inj}-seed{seed}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/metrics.py --scores {input.scores} --summary {input.summary} --params {params.p:q}"
        " --output {output} 2> {log}"


rule summarize:
    """Median and 68% band over seeds, median bootstrap error; max SIC and AUC versus injection, every method."""
    output:
        csv=report("results/{study}/summary/metrics.csv", caption="../workflow/report/summary.rst",
                   category="{study}", subcategory="Summary"),
        json="results/{study}/summary/metrics.json",
        max_sic=report("results/{study}/summary/max_sic.png", caption="../workflow/report/max_sic.rst",
                       category="{study}", subcategory="Summary"),
        auc=report("results/{study}/summary/auc.png", caption="../workflow/report/auc.rst",
                   category="{study}", subcategory="Summary"),
        working_points=report("results/{study}/summary/sic_working_points.png",
                              caption="../workflow/report/sic_working_points.rst", category="{study}",
                              subcategory="Summary"),
    input:
        metrics=study_metrics,
        code=code("summarize"),
    params:
        p=title_params,
    log:
        "results/{study}/logs/summarize.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/summarize.py --metrics {input.metrics} --params {params.p:q} --csv {output.csv}"
        " --json {output.json} --max-sic-plot {output.max_sic} --auc-plot {output.auc}"
        " --working-points-plot {output.working_points} 2> {log}"


rule required_injection:
    """The injected signal needed for 5 sigma after the selection, per signal model (study) and method."""
    output:
        csv="results/summary/required_injection.csv",
        plots=[report(f"results/summary/required_injection_{cut}.png",
                      caption="../workflow/report/required_injection.rst", category="Summary")
               for cut in summary_cuts()],
    input:
        metrics=all_metrics_files(),
        code=code("required_injection"),
    params:
        p=required_injection_params(),
    log:
        "results/summary/logs/required_injection.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/required_injection.py --metrics {input.metrics} --params {params.p:q}"
        " --csv {output.csv} --plots {output.plots} 2> {log}"


rule plot_curves:
    """SIC and rejection curves with bands over seeds, every method, one injection."""
    output:
        sic=report("results/{study}/summary/sic_inj{inj}.png", caption="../workflow/report/sic.rst",
                   category="{study}", subcategory="Curves"),
        rejection=report("results/{study}/summary/rejection_inj{inj}.png",
                         caption="../workflow/report/rejection.rst", category="{study}", subcategory="Curves"),
    input:
        unpack(injection_scores),
        code=code("plot_curves"),
    params:
        p=title_params,
        scores=injection_scores_arg,
    log:
        "results/{study}/logs/plot_curves/inj{inj}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/plot_curves.py --scores {params.scores} --params {params.p:q}"
        " --sic-plot {output.sic} --rejection-plot {output.rejection} 2> {log}"


rule plot_data:
    """Distributions of the dataset: m_jj with the SR, jet masses and tau21 per process."""
    output:
        [report(f"{DATA}/plots/{name}.png", caption=f"../workflow/report/data_{name}.rst",
                category="Data") for name in DATA_PLOTS],
    input:
        jets=f"{DATA}/jets.parquet",
        code=code("plot_data"),
    params:
        p=json.dumps({"sr": config["regions"]["sr"], "sb": config["regions"]["sb"]}),
        outdir=f"{DATA}/plots",
    log:
        f"{DATA}/logs/plot_data.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/plot_data.py --jets {input.jets} --params {params.p:q} --outdir {params.outdir}"
        " 2> {log}"


rule plot_turn_on:
    """Efficiency of the generator cut versus m_jj and leading-jet pT, from a sample with a lower cut."""
    output:
        report(f"{DATA}/plots/turn_on.png", caption="../workflow/report/turn_on.rst", category="Data"),
    input:
        raw=turn_on_files("raw"),
        jets=turn_on_files("jets"),
        code=code("plot_turn_on"),
    params:
        p=turn_on_params() if turn_on_enabled() else "{}",
    log:
        f"{DATA}/logs/plot_turn_on.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/plot_turn_on.py --raw {input.raw} --jets {input.jets} --params {params.p:q}"
        " --output {output} 2> {log}"
