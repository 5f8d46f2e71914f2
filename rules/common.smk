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

from resonant.config import (contrastive_training_processes, method_injections, process_group,  # noqa: E402
                             study_processes, validate_config)

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


# Simulation for the contrastive encoder: its own generator groups ("sim-<id>"),
# so its seeds and event ids differ from the data's.
SIM_PREFIX = "sim-"
CONTRASTIVE = config["methods"].get("contrastive", {})


def contrastive_enabled():
    return bool(CONTRASTIVE.get("enabled", False))


SIM_PROCESSES = config["simulation"]["processes"] if contrastive_enabled() else {}
for _pid, _proc in SIM_PROCESSES.items():
    GEN_PROCESSES[SIM_PREFIX + _pid] = _proc


def sim_chunk_files(kind="jets"):
    ext = "parquet" if kind == "jets" else "json"
    return [f"{DATA}/{kind}/{SIM_PREFIX}{pid}/chunk-{c:04d}.{ext}"
            for pid in SIM_PROCESSES for c in range(n_chunks(SIM_PREFIX + pid))]


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
    return json.dumps({"chunk_size": l["chunk_size"], "key": l["key"],
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








# ---------------------------------------------------------------- CATHODE engine
# One set of rules (rules/cathode.smk) runs the CATHODE engine for classic
# CATHODE ({engine} = "cathode", jet features of the study set) and for each
# member of the contrastive branch ({engine} = "contrastive-<config>/e<E>/f<F>",
# the latent tables of encoder E, flow seed F).
def _engine_parts(engine):
    if engine == "cathode":
        return None, None, None
    cfg, e, f = engine.split("/")
    return cfg.split("-", 1)[1], int(e[1:]), int(f[1:])


def engine_input(name):
    """The table ``name`` (sb, sr, test, sr_background) the engine of these wildcards reads."""

    def f(wildcards):
        d = study_dir(wildcards.study, wildcards.inj, wildcards.seed)
        cfg, e, _ = _engine_parts(wildcards.engine)
        return f"{d}/{name}.parquet" if cfg is None else f"{d}/contrastive-{cfg}/e{e}/latent/{name}.parquet"

    return f


def _engine_settings(wildcards):
    """Every setting of an engine run, with what its seeds derive from (resonant.seeds.engine): the study set
    and the engine's name."""
    cfg, e, f = _engine_parts(wildcards.engine)
    if cfg is None:
        return {**json.loads(method_params("cathode")(wildcards)), "engine": wildcards.engine}
    from resonant.features import latent_names

    c = CONTRASTIVE
    return {"features": latent_names(c["encoder"]["latent_dim"]), "flow": c["flow"], "classifier": c["classifier"],
            "study": wildcards.study, "injection": int(wildcards.inj), "seed": int(wildcards.seed),
            "engine": wildcards.engine, "configuration": cfg, "member": f"e{e}/f{f}"}


#: the settings block each engine stage reads: the flow (training, sampling) or the classifier
ENGINE_STAGE_BLOCK = {"flow": "flow", "sample": "flow", "classify": "classifier", "fidelity": "classifier"}


def engine_params(stage):
    """A params function: what one stage of an engine run reads (its settings block, the features, the seeds'
    keys), so that a classifier setting reruns the classifiers and not the flows."""
    block = ENGINE_STAGE_BLOCK[stage]
    other = set(ENGINE_STAGE_BLOCK.values()) - {block}

    def params(wildcards):
        return json.dumps({k: v for k, v in _engine_settings(wildcards).items() if k not in other}, sort_keys=True)

    return params


def checks_engine(cmethod):
    """The engine run whose samples the checks of a method look at (the first member for the contrastive one)."""
    return "cathode" if cmethod == "cathode" else f"{cmethod}/e0/f0"


def checks_fidelity_files(wildcards):
    st = config["studies"][wildcards.study]
    return [f"{study_dir(wildcards.study, inj, seed)}/{checks_engine(wildcards.cmethod)}/fidelity.json"
            for inj in method_injections(config, wildcards.study, wildcards.cmethod) for seed in st["seeds"]]


def checks_sculpting_input(wildcards):
    """The sculpting check looks at the method's smallest injection (ideally 0: no signal), first seed."""
    st = config["studies"][wildcards.study]
    inj = min(method_injections(config, wildcards.study, wildcards.cmethod))
    return f"{study_dir(wildcards.study, inj, st['seeds'][0])}/{checks_engine(wildcards.cmethod)}/mjj_scores.parquet"


def checks_params(wildcards):
    from resonant.plots import label_of

    st = config["studies"][wildcards.study]
    return json.dumps({"title": f"{wildcards.study}: {st['signal']}",
                       "injection": min(method_injections(config, wildcards.study, wildcards.cmethod)),
                       "method": label_of(wildcards.cmethod),
                       "sr": config["regions"]["sr"], "sb": config["regions"]["sb"]}, sort_keys=True)


def checked_methods():
    return [m for m in enabled_methods() if m == "cathode" or m.startswith("contrastive-")]


# ---------------------------------------------------------------- contrastive branch
def encoder_params(wildcards):
    train = contrastive_training_processes(config, wildcards.config)
    return json.dumps({
        "encoder": CONTRASTIVE["encoder"], "n_constituents": CONTRASTIVE["n_constituents"],
        "split": config["simulation"]["split"], "configuration": wildcards.config, "index": int(wildcards.enc),
        "train_processes": {SIM_PREFIX + p: g for p, g in train.items()},
        "groups": {SIM_PREFIX + p: process_group(v) for p, v in SIM_PROCESSES.items()},
    }, sort_keys=True)


def launcher(wildcards, resources):
    """The launcher of a multi-process training rule: under the SLURM profile resources.mpi (srun) with the job's
    task geometry, else none. The geometry is explicit because the SLURM executor starts such a job's command
    without the step variables, so a bare srun would start one task."""
    mpi = getattr(resources, "mpi", "") or ""
    if not mpi:
        return ""
    per_node, tasks = getattr(resources, "tasks_per_node", None), getattr(resources, "tasks", None)
    if per_node:
        return f"{mpi} --nodes={getattr(resources, 'nodes', None) or 1} --ntasks-per-node={per_node}"
    return f"{mpi} --ntasks={tasks}" if tasks else mpi


def encode_params(wildcards):
    return json.dumps({"configuration": wildcards.config, "encoder": int(wildcards.enc)}, sort_keys=True)


def contrastive_member_scores(wildcards):
    d = study_dir(wildcards.study, wildcards.inj, wildcards.seed)
    return [f"{d}/contrastive-{wildcards.config}/e{e}/f{f}/scores.parquet"
            for e in range(CONTRASTIVE["n_encoders"]) for f in range(CONTRASTIVE["n_flows"])]


def combine_params(wildcards):
    return json.dumps({"ensemble_size": CONTRASTIVE["ensemble_size"], "study": wildcards.study,
                       "injection": int(wildcards.inj), "seed": int(wildcards.seed),
                       "configuration": wildcards.config}, sort_keys=True)


def latent_check_params(wildcards):
    qcd = [process_group(v) for v in SIM_PROCESSES.values() if v["model"] == "qcd_dijet"]
    return json.dumps({"configuration": wildcards.config, "background_group": (qcd or ["qcd_dijet"])[0], "groups": {SIM_PREFIX + p: process_group(v)
                                                                      for p, v in SIM_PROCESSES.items()},
                       "train_processes": sorted(SIM_PREFIX + p for p in
                                                 contrastive_training_processes(config, wildcards.config))},
                      sort_keys=True)


# ---------------------------------------------------------------- point-cloud branches
# Generators of whole events (flow matching, diffusion) share the
# point-cloud classifier, its fidelity checks and the feature figures
# (rules/classify.smk). Each (study, injection, seed) trains its own generator
# in its sidebands.
POINTCLOUD = config["pointcloud"]
from resonant.config import GENERATORS, POINTCLOUD_METHODS as PC_METHODS


def generator_code(stage, generator):
    """A generator stage's code: its script's imports and those of the generator's framework module, which
    the script imports by name at run time (``generative.backend``), so no import statement shows it."""
    framework = os.path.join(WORKDIR, "src", "resonant", f"{generator}.py")
    return sorted(set(code(stage)) | set(sources(framework, root=WORKDIR)))


def enabled_generators():
    return [g for g in GENERATORS if g in enabled_methods()]


def generator_params(generator, stage):
    """A params function: what one stage of a generator reads: ``stage`` is "jet_model" or "particle_model"
    (training: that model's settings and the training engine) or "sampling", so that a particle-model setting
    does not retrain the jet model."""

    def params(wildcards):
        s = config["methods"][generator]
        own = {stage: s[stage]}
        if stage == "sampling":
            own["kde_oversampling"] = config["studies"][wildcards.study]["mjj_kde"]["oversampling"]
        elif "engine" in s:
            own["engine"] = s["engine"]
        return json.dumps({**own, "max_particles": POINTCLOUD["max_particles"], "study": wildcards.study,
                           "injection": int(wildcards.inj), "seed": int(wildcards.seed), "generator": generator},
                          sort_keys=True)

    return params


def sampling_region(wildcards):
    """``{region}`` of a samples file: "" for the SR (samples.h5), "_sb" for the sidebands (samples_sb.h5)."""
    return "sb" if wildcards.region == "_sb" else "sr"


def sampling_mjj_input(wildcards):
    """Where a generator's m_jj values come from: the SR KDE draws, or the SB data (its validation background)."""
    d = study_dir(wildcards.study, wildcards.inj, wildcards.seed)
    return f"{d}/sb.parquet" if sampling_region(wildcards) == "sb" else f"{d}/sr_mjj.parquet"


def pc_negative(wildcards):
    """What the point-cloud classifier takes as background: a generator's SR samples, or true SR background."""
    d = study_dir(wildcards.study, wildcards.inj, wildcards.seed)
    if wildcards.pcmethod == "idealised_pointcloud":
        return f"{d}/sr_background.parquet"
    return f"{d}/{wildcards.pcmethod}/samples.h5"


def pc_classifier_params(wildcards):
    return json.dumps({"classifier": POINTCLOUD["classifier"], "max_particles": POINTCLOUD["max_particles"],
                       "method": wildcards.pcmethod, "study": wildcards.study, "injection": int(wildcards.inj),
                       "seed": int(wildcards.seed)}, sort_keys=True)


def pc_check_injection(study, generator):
    """The injection the generator checks look at: the generator's smallest (ideally 0)."""
    return min(method_injections(config, study, generator))


def pc_check_dir(study, generator):
    """The study set the generator checks look at: the generator's smallest injection, first seed."""
    return study_dir(study, pc_check_injection(study, generator), config["studies"][study]["seeds"][0])


def pc_check_inputs(wildcards):
    d = pc_check_dir(wildcards.study, wildcards.generator)
    g = wildcards.generator
    return {"samples": f"{d}/{g}/samples.h5", "samples_sb": f"{d}/{g}/samples_sb.h5",
            "sr_background": f"{d}/sr_background.parquet", "sb": f"{d}/sb.parquet"}


def pc_check_params(wildcards):
    from resonant.plots import label_of

    st = config["studies"][wildcards.study]
    return json.dumps({"classifier": POINTCLOUD["classifier"], "fidelity": POINTCLOUD["fidelity"],
                       "max_particles": POINTCLOUD["max_particles"], "generator": wildcards.generator,
                       "method": label_of(wildcards.generator), "study": wildcards.study,
                       "injection": pc_check_injection(wildcards.study, wildcards.generator),
                       "seed": st["seeds"][0], "title": f"{wildcards.study}: {st['signal']}"}, sort_keys=True)


# ---------------------------------------------------------------- cross-study summary
def all_metrics_files():
    return [f for study in config["studies"] for f in metrics_files_of(study)]


def summary_cuts():
    wps = sorted({wp for st in config["studies"].values() for wp in st["working_points"]}, reverse=True)
    return ["max_sic"] + [f"{wp:g}" for wp in wps]


def required_injection_params():
    return json.dumps({"target_sigma": 5.0, "cuts": summary_cuts(),
                       "signals": {s: st["signal"] for s, st in config["studies"].items()}}, sort_keys=True)


def method_params(method):
    """A params function: the method's settings plus the seed of the study set."""

    def params(wildcards):
        s = config["methods"][method]
        return json.dumps({**{k: v for k, v in s.items() if k != "enabled"}, "study": wildcards.study,
                           "injection": int(wildcards.inj), "seed": int(wildcards.seed)}, sort_keys=True)

    return params


def contrastive_configs():
    return list(CONTRASTIVE["configurations"]) if contrastive_enabled() else []


def enabled_methods():
    """Every method that scores the test set; the contrastive branch once per encoder configuration."""
    out = []
    for m, s in config["methods"].items():
        if not s.get("enabled", True):
            continue
        out += [f"contrastive-{c}" for c in contrastive_configs()] if m == "contrastive" else [m]
    return out


def all_methods():
    return [m for m in config["methods"] if m != "contrastive"] + [f"contrastive-{c}" for c in
                                                                    CONTRASTIVE.get("configurations", {})]


wildcard_constraints:
    method="|".join(all_methods()) or "none",
    reference="|".join(REFERENCE_METHODS),
    engine=r"cathode|contrastive-[A-Za-z0-9_]+/e\d+/f\d+",
    cmethod=r"cathode|contrastive-[A-Za-z0-9_]+",
    config=r"[A-Za-z0-9_]+",
    enc=r"\d+",
    member=r"e\d+/f\d+",
    generator="|".join(GENERATORS),
    pcmethod="|".join(PC_METHODS),


def reference_params(wildcards):
    return method_params(wildcards.reference)(wildcards)


def metrics_params(wildcards):
    return json.dumps({"study": wildcards.study, "method": wildcards.method, "injection": int(wildcards.inj),
                       "seed": int(wildcards.seed),
                       "working_points": config["studies"][wildcards.study]["working_points"]}, sort_keys=True)


def metrics_files_of(study):
    st = config["studies"][study]
    return [f"{study_dir(study, inj, seed)}/{m}/metrics.json"
            for m in enabled_methods() for inj in method_injections(config, study, m) for seed in st["seeds"]]


def study_metrics(wildcards):
    return metrics_files_of(wildcards.study)


def injection_scores(wildcards):
    st = config["studies"][wildcards.study]
    return {f"{m}_{seed}": f"{study_dir(wildcards.study, wildcards.inj, seed)}/{m}/scores.parquet"
            for m in enabled_methods() if int(wildcards.inj) in method_injections(config, wildcards.study, m)
            for seed in st["seeds"]}


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
        out += [f"results/{study}/summary/{m}_checks.json" for m in checked_methods()]
    if enabled_methods():
        out.append("results/summary/required_injection.csv")
    for cfg in contrastive_configs():
        out.append(f"{DATA}/contrastive/{cfg}/latent.png")
    for g in enabled_generators():
        out += [f"results/{study}/summary/{g}_{kind}" for study in config["studies"]
                for kind in ("fidelity.json", "jets.png", "particles.png")]
    if "vae" in enabled_methods():
        out += [f"results/{study}/summary/{f}" for study in config["studies"]
                for f in ("vae_characterisation.json", "vae_checks.json")]
    return out


DATA_PLOTS = ("mjj", "jet_mass_heavy", "jet_mass_light", "tau21_heavy", "tau21_light")
