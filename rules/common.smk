# Helpers only: config validation, paths, wildcard constraints, the code each
# stage depends on, and the params of every rule. No rules here.
import json
import math
import os
import sys

WORKDIR = os.path.abspath(workflow.basedir)
sys.path.insert(0, os.path.join(WORKDIR, "src"))
# Shared cores: OpenMP threads (torch, xgboost) must not busy-wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Jobs (local, conda or SLURM) import the library from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.path.join(WORKDIR, "src"), os.environ.get("PYTHONPATH")) if p
)

from resonant.config import validate_config, study_processes  # noqa: E402

validate_config(config)

DATASET = config["dataset"]
DATA = f"results/data/{DATASET['name']}"
PROCESSES = study_processes(config)
# The interpreter of the jobs: the conda env's under --sdm conda, else the one
# running Snakemake (the project's .venv), whatever the PATH says.
from snakemake.settings.types import DeploymentMethod  # noqa: E402

PY = "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable

wildcard_constraints:
    chunk=r"\d{4}",
    inj=r"\d+",
    seed=r"\d+",
    study="|".join(config["studies"]),
    group=r"[A-Za-z0-9][A-Za-z0-9_-]*",


# ---------------------------------------------------------------- code deps
# Each stage lists its script and every src/ module the script imports (found
# from the code by resonant.deps) among its inputs: editing one reruns exactly
# the stages that use it, and changes their output-cache hash.
from resonant.deps import sources  # noqa: E402

STAGE_SCRIPT = {"import_particles": "import_lhco", "import_features": "import_lhco"}


def code(stage):
    script = STAGE_SCRIPT.get(stage, stage)
    return sources(os.path.join(WORKDIR, "workflow", "scripts", f"{script}.py"), root=WORKDIR)


# ---------------------------------------------------------------- data
TURN_ON = "turnon-qcd"


def nominal_qcd():
    """The first qcd_dijet process of the table, whose generator cut the turn-on checks."""
    return next((p for p, v in PROCESSES.items() if v.get("model") == "qcd_dijet"), None)


def turn_on_enabled():
    return DATASET["source"] == "generator" and DATASET["turn_on"]["enabled"] and nominal_qcd() is not None


GEN_PROCESSES = dict(PROCESSES)
if turn_on_enabled():
    _qcd = PROCESSES[nominal_qcd()]
    GEN_PROCESSES[TURN_ON] = {
        "model": "qcd_dijet", "label": 0, "n_events": DATASET["turn_on"]["n_events"],
        "params": {**_qcd.get("params", {}), "pthat_min": DATASET["turn_on"]["pthat_min"]},
    }


def n_chunks(process):
    return math.ceil(GEN_PROCESSES[process]["n_events"] / DATASET["chunk_size"])


def turn_on_files(kind):
    if not turn_on_enabled():
        return []
    ext = "json" if kind == "stats" else "parquet"
    return [f"{DATA}/{kind}/{TURN_ON}/chunk-{c:04d}.{ext}" for c in range(n_chunks(TURN_ON))]


def turn_on_params():
    from resonant.data.processes import MODELS

    nominal = MODELS["qcd_dijet"].resolve(PROCESSES[nominal_qcd()].get("params", {}))["pthat_min"]
    return json.dumps({"nominal_pthat_min": nominal, "sample_pthat_min": DATASET["turn_on"]["pthat_min"],
                       "sb": config["regions"]["sb"], "sr": config["regions"]["sr"]}, sort_keys=True)


def raw_groups():
    """Raw-event groups: one per generated process, or the LHCO particle file."""
    if DATASET["source"] == "lhco":
        return {"lhco": 1} if DATASET["lhco"]["particles"] else {}
    return {p: n_chunks(p) for p in PROCESSES}


def jet_chunk_files(kind="jets"):
    ext = "parquet" if kind == "jets" else "json"
    return [
        f"{DATA}/{kind}/{group}/chunk-{c:04d}.{ext}"
        for group, n in raw_groups().items()
        for c in range(n)
    ]


def generate_params(wildcards):
    proc = GEN_PROCESSES[wildcards.group]
    chunk = int(wildcards.chunk)
    size = DATASET["chunk_size"]
    from resonant.data.generate import chunk_seed

    return {
        "model": proc["model"],
        "model_params": json.dumps(proc.get("params", {}), sort_keys=True),
        "label": proc["label"],
        "n_events": min(size, proc["n_events"] - chunk * size),
        "seed": chunk_seed(DATASET["seed"], wildcards.group, chunk),
        "chunk": chunk,
        "detector": json.dumps(DATASET["detector"], sort_keys=True),
    }


def selection_params():
    return json.dumps(config["selection"], sort_keys=True)


def lhco_params():
    l = DATASET["lhco"]
    return json.dumps({"chunk_size": l["chunk_size"],
                       "process_names": {"0": l["background_process"], "1": l["signal_process"]},
                       **config["selection"]}, sort_keys=True)


def lhco_feature_files(wildcards):
    l = DATASET["lhco"]
    return {k: l[k] for k in ("features", "extra_background") if l[k]}


def extra_background_arg():
    extra = DATASET["lhco"]["extra_background"]
    return f"--extra-background {extra}" if extra else ""


def jets_from_features():
    return DATASET["source"] == "lhco" and not DATASET["lhco"]["particles"]


def jet_stats_files():
    return [] if jets_from_features() else jet_chunk_files("stats")


def jets_source():
    """Where jets.parquet comes from: clustered chunks, or the LHCO features files."""
    if jets_from_features():
        return [f"{DATA}/jets/lhco-features.parquet"]
    return jet_chunk_files()


# ---------------------------------------------------------------- studies
STUDY_FILES = ("sb.parquet", "sr.parquet", "sr_background.parquet", "sr_signal.parquet",
               "test.parquet", "sr_mjj.parquet", "summary.json")


def study_dir(study, inj, seed):
    return f"results/{study}/inj{inj}/seed{seed}"


def study_params(wildcards):
    st = config["studies"][wildcards.study]
    return json.dumps({
        "background": st["background"], "signal": st["signal"], "injection": int(wildcards.inj),
        "seed": int(wildcards.seed), "sr": config["regions"]["sr"], "sb": config["regions"]["sb"],
        "split_seed": st["split_seed"], "val_fraction": st["val_fraction"],
        "signal_test_fraction": st["signal_test_fraction"], "sr_background": st["sr_background"],
        "mjj_kde": st["mjj_kde"],
    }, sort_keys=True)


def study_instances():
    for study, st in config["studies"].items():
        for inj in st["injections"]:
            for seed in st["seeds"]:
                yield study, inj, seed


def all_targets():
    targets = [f"{DATA}/selection.json"]
    for study, inj, seed in study_instances():
        targets.append(f"{study_dir(study, inj, seed)}/summary.json")
    return targets + report_targets()


# ---------------------------------------------------------------- methods
REFERENCE_METHODS = ("supervised", "idealised")








def cathode_fidelity_files(wildcards):
    st = config["studies"][wildcards.study]
    return [f"{study_dir(wildcards.study, inj, seed)}/cathode/fidelity.json"
            for inj in st["injections"] for seed in st["seeds"]]


def cathode_sculpting_input(wildcards):
    """The sculpting check looks at the smallest injection (ideally 0: no signal), first seed."""
    st = config["studies"][wildcards.study]
    return f"{study_dir(wildcards.study, min(st['injections']), st['seeds'][0])}/cathode/mjj_scores.parquet"


def cathode_checks_params(wildcards):
    st = config["studies"][wildcards.study]
    return json.dumps({"title": f"{wildcards.study}: {st['signal']}", "injection": min(st["injections"]),
                       "sr": config["regions"]["sr"], "sb": config["regions"]["sb"]}, sort_keys=True)


def method_params(method):
    """A params function: the method's settings plus the seed of the study set."""

    def params(wildcards):
        s = config["methods"][method]
        return json.dumps({**{k: v for k, v in s.items() if k != "enabled"}, "study": wildcards.study,
                           "injection": int(wildcards.inj), "seed": int(wildcards.seed)}, sort_keys=True)

    return params


def enabled_methods():
    return [m for m, s in config["methods"].items() if s.get("enabled", True)]


wildcard_constraints:
    method="|".join(config["methods"]) or "none",
    reference="|".join(REFERENCE_METHODS),


def reference_params(wildcards):
    return method_params(wildcards.reference)(wildcards)


def metrics_params(wildcards):
    return json.dumps({"study": wildcards.study, "method": wildcards.method, "injection": int(wildcards.inj),
                       "seed": int(wildcards.seed)}, sort_keys=True)


def study_metrics(wildcards):
    st = config["studies"][wildcards.study]
    return [f"{study_dir(wildcards.study, inj, seed)}/{m}/metrics.json"
            for m in enabled_methods() for inj in st["injections"] for seed in st["seeds"]]


def injection_scores(wildcards):
    st = config["studies"][wildcards.study]
    return {f"{m}_{seed}": f"{study_dir(wildcards.study, wildcards.inj, seed)}/{m}/scores.parquet"
            for m in enabled_methods() for seed in st["seeds"]}


def injection_scores_arg(wildcards, input):
    return " ".join(f"{k.rsplit('_', 1)[0]}={v}" for k, v in input.items() if k != "code")


def title_params(wildcards):
    st = config["studies"][wildcards.study]
    return json.dumps({"title": f"{wildcards.study}: {st['signal']}"})


def report_targets():
    out = [f"{DATA}/plots/{name}.png" for name in DATA_PLOTS]
    if turn_on_enabled():
        out.append(f"{DATA}/plots/turn_on.png")
    for study, st in config["studies"].items():
        if enabled_methods():
            out += [f"results/{study}/summary/metrics.csv", f"results/{study}/summary/max_sic.png"]
            out += [f"results/{study}/summary/sic_inj{inj}.png" for inj in st["injections"]]
        if "cathode" in enabled_methods():
            out.append(f"results/{study}/summary/cathode_checks.json")
    return out


DATA_PLOTS = ("mjj", "jet_mass_heavy", "jet_mass_light", "tau21_heavy", "tau21_light")
