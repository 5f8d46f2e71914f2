# Events: generate (or import), cluster, merge into the dataset's jet table.


rule generate:
    """Generate one chunk of a process with Pythia 8 and the detector smearing."""
    output:
        f"{DATA}/raw/{{group}}/chunk-{{chunk}}.parquet",
    input:
        code=code("generate"),
    params:
        p=generate_params,
    log:
        f"{DATA}/logs/generate/{{group}}-{{chunk}}.log",
    resources:
        runtime=120,
        mem_mb=2000,
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/generate.py --model {params.p[model]} --params {params.p[model_params]:q}"
        " --n-events {params.p[n_events]} --seed {params.p[seed]} --process {wildcards.group}"
        " --label {params.p[label]} --chunk {params.p[chunk]} --detector {params.p[detector]:q}"
        " --output {output} 2> {log}"


rule import_lhco_particles:
    """Convert the official LHCO particle file to raw events (chunked, constant memory)."""
    output:
        f"{DATA}/raw/lhco/chunk-0000.parquet",
    input:
        h5=DATASET["lhco"]["particles"] or [],
        code=code("import_particles"),
    params:
        p=lhco_params(),
    log:
        f"{DATA}/logs/import_lhco_particles.log",
    resources:
        mem_mb=3000,
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/import_lhco.py particles --input {input.h5} --params {params.p:q}"
        " --output {output} 2> {log}"


rule import_lhco_features:
    """Import the LHCO high-level features files as a jet table without constituents."""
    output:
        f"{DATA}/jets/lhco-features.parquet",
    input:
        unpack(lhco_feature_files),
        code=code("import_features"),
    params:
        p=lhco_params(),
        extra=extra_background_arg(),
    log:
        f"{DATA}/logs/import_lhco_features.log",
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/import_lhco.py features --input {input.features} {params.extra}"
        " --params {params.p:q} --output {output} 2> {log}"


rule cluster:
    """Anti-kt R=1.0 jets, the selection, substructure and constituents of one chunk."""
    output:
        jets=f"{DATA}/jets/{{group}}/chunk-{{chunk}}.parquet",
        stats=f"{DATA}/stats/{{group}}/chunk-{{chunk}}.json",
    input:
        raw=f"{DATA}/raw/{{group}}/chunk-{{chunk}}.parquet",
        code=code("cluster"),
    params:
        p=selection_params(),
    log:
        f"{DATA}/logs/cluster/{{group}}-{{chunk}}.log",
    resources:
        mem_mb=3000,
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/cluster.py --input {input.raw} --params {params.p:q}"
        " --output {output.jets} --stats {output.stats} 2> {log}"


rule merge_jets:
    """The dataset's jet table: every process, one file."""
    output:
        multiext(f"{DATA}/", "jets.parquet", "selection.json"),
    input:
        jets=jets_source(),
        stats=jet_stats_files(),
        code=code("merge_jets"),
    log:
        f"{DATA}/logs/merge_jets.log",
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/merge_jets.py --inputs {input.jets} --stats {input.stats}"
        " --output {output[0]} --summary {output[1]} 2> {log}"


rule merge_simulation:
    """The simulation of the contrastive encoder: every simulated process group, one file."""
    output:
        multiext(f"{DATA}/", "simulation.parquet", "simulation_selection.json"),
    input:
        jets=sim_chunk_files(),
        stats=sim_chunk_files("stats"),
        code=code("merge_jets"),
    log:
        f"{DATA}/logs/merge_simulation.log",
    cache: "omit-software"
    conda:
        "../envs/data.yaml"
    shell:
        "{PY} workflow/scripts/merge_jets.py --inputs {input.jets} --stats {input.stats}"
        " --output {output[0]} --summary {output[1]} 2> {log}"
