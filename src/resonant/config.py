"""Loading and validating the workflow configuration.

The JSON schema (``config.schema.yaml``) fixes names, types and defaults; the
checks here add what a schema cannot say (an SR inside the sidebands, an
injection no larger than the signal available, processes that exist). Every
problem is reported as a :class:`~resonant.errors.ConfigError` naming the key
and the fix, before any job runs.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config.schema.yaml"

LHCO_SIGNAL_EVENTS = 100_000  # signal events in the official R&D particle file


def load_schema(path=None) -> dict:
    with open(path or SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class):
    """A validator that fills in ``default`` values of properties as it goes."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFiller = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _known_keys(schema: dict, root: dict, path) -> list[str]:
    """The allowed property names of the sub-schema that rejected a key."""
    props = dict(schema.get("properties") or {})
    if "$ref" in schema:  # a referenced definition, possibly extended here (unevaluatedProperties)
        ref = schema["$ref"].split("/")[-1]
        props.update(root["$defs"][ref].get("properties") or {})
    return sorted(props)


def _explain(error: jsonschema.ValidationError, root: dict) -> ConfigError:
    key = _key(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = _known_keys(error.schema, root, error.absolute_path)
        extra = sorted(set(error.instance) - set(known)) if isinstance(error.instance, dict) else []
        bad = extra[0] if extra else "?"
        near = difflib.get_close_matches(bad, known, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"allowed keys: {', '.join(known)}"
        where = f"{key}.{bad}" if key != "<top level>" else bad
        return ConfigError(where, "unknown key", hint)
    if error.validator == "required":
        return ConfigError(key, error.message, "add the missing key (see config.schema.yaml)")
    if error.validator == "enum":
        return ConfigError(key, f"{error.instance!r} is not one of {error.validator_value}",
                           f"use one of {', '.join(map(str, error.validator_value))}")
    if error.validator == "type":
        return ConfigError(key, f"{error.instance!r} is not of type {error.validator_value}",
                           f"give a value of type {error.validator_value}")
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    return ConfigError(key, error.message, desc or "see config.schema.yaml")


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place (defaults filled in) and return it."""
    schema = schema or load_schema()
    validator = _DefaultFiller(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise _explain(errors[0], schema)
    check_semantics(config)
    return config


def load_config(path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found", "pass --configfile with an existing file") from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), f"not valid YAML ({e})", "fix the YAML syntax") from e
    if not isinstance(config, dict):
        raise ConfigError(str(path), "the config must be a mapping", "see config.yaml for an example")
    return validate_config(config)


def study_processes(config: dict) -> dict:
    """The process table in force: the config's, or the fixed one of the LHCO files."""
    ds = config["dataset"]
    if ds["source"] == "lhco":
        lhco = ds["lhco"]
        return {
            lhco["background_process"]: {"label": 0, "n_events": 1_000_000, "model": "lhco"},
            lhco["signal_process"]: {"label": 1, "n_events": LHCO_SIGNAL_EVENTS, "model": "lhco"},
        }
    return config.get("processes", {})


def _check_process_table(table: dict, key: str) -> None:
    from .data.processes import MODELS  # registry only; Pythia is not imported here

    for pid, proc in table.items():
        if proc["model"] not in MODELS:
            near = difflib.get_close_matches(proc["model"], list(MODELS), n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"known models: {', '.join(sorted(MODELS))}"
            raise ConfigError(f"{key}.{pid}.model", f"unknown model '{proc['model']}'", hint)
        try:
            MODELS[proc["model"]].resolve(proc.get("params", {}))
        except ConfigError as e:
            raise ConfigError(f"{key}.{pid}.params", e.problem, e.fix) from None


def method_injections(config: dict, study: str, method: str) -> list[int]:
    """The injections of ``study`` at which ``method`` runs (``contrastive-<configuration>`` counts as
    ``contrastive``): ``studies.<study>.method_injections.<method>``, else every injection of the study."""
    st = config["studies"][study]
    base = "contrastive" if method.startswith("contrastive-") else method
    return sorted(st.get("method_injections", {}).get(base, st["injections"]))


def process_group(proc: dict) -> str:
    """The process group of a process-table entry: its ``group``, else its model."""
    return proc.get("group") or proc["model"]


def contrastive_training_processes(config: dict, configuration: str) -> dict[str, str]:
    """Simulation processes an encoder configuration trains on: {process id: group}."""
    cfg = config["methods"]["contrastive"]["configurations"][configuration]
    excluded = set(cfg.get("exclude", []))
    out = {}
    for pid, proc in config["simulation"]["processes"].items():
        group = process_group(proc)
        if pid in excluded or group in excluded or (cfg.get("background_only") and proc["label"] == 1):
            continue
        out[pid] = group
    return out


def _check_contrastive(config: dict) -> None:
    c = config["methods"].get("contrastive", {})
    if not c.get("enabled", False):
        return
    key = "methods.contrastive"
    ds = config["dataset"]
    if ds["source"] == "lhco" and not ds["lhco"]["particles"]:
        raise ConfigError(key, "the contrastive encoder needs jet constituents, but the data are the LHCO "
                          "features file only", "give dataset.lhco.particles or set methods.contrastive.enabled: "
                          "false")
    sim = config["simulation"]
    if not sim["processes"]:
        raise ConfigError("simulation.processes", "the contrastive encoder trains on simulation, but none is "
                          "configured", "add simulation.processes (see config.yaml) or set "
                          "methods.contrastive.enabled: false")
    _check_process_table(sim["processes"], "simulation.processes")
    sp = sim["split"]
    if min(sp.values()) <= 0 or sum(sp.values()) > 1.0 + 1e-9:
        raise ConfigError("simulation.split", f"train/val/test shares {sp} must be positive and add up to <= 1",
                          "give e.g. {train: 0.6, val: 0.2, test: 0.2}")
    names = set(sim["processes"]) | {process_group(p) for p in sim["processes"].values()}
    for cname, cfg in c["configurations"].items():
        ck = f"{key}.configurations.{cname}"
        for x in cfg.get("exclude", []):
            if x not in names:
                raise ConfigError(f"{ck}.exclude", f"'{x}' is neither a simulation process nor a process group",
                                  f"use some of {', '.join(sorted(names))}")
        procs = contrastive_training_processes(config, cname)
        groups = set(procs.values())
        if len(groups) < 2:
            raise ConfigError(ck, f"the encoder would train on {len(groups)} process group(s) "
                              f"({', '.join(sorted(groups)) or 'none'}): a contrastive loss needs at least 2",
                              "exclude less, or add simulation processes of other groups (e.g. sm_ttbar, sm_vjet "
                              "for a background-only encoder)")
        if not cfg.get("background_only") and not any(sim["processes"][p]["label"] == 1 for p in procs):
            raise ConfigError(ck, "no signal process is left in the training", "exclude less, or set "
                              "background_only: true if that is the intent")


GENERATORS = ("flow_matching", "diffusion")  # of point clouds, sampled in the SR
POINTCLOUD_METHODS = (*GENERATORS, "idealised_pointcloud")


def pointcloud_methods(config: dict) -> list[str]:
    """The enabled methods that work on point clouds (jets and their constituents)."""
    return [m for m in POINTCLOUD_METHODS if config["methods"].get(m, {}).get("enabled", False)]


def _check_pointcloud(config: dict) -> None:
    methods = pointcloud_methods(config)
    if not methods:
        return
    ds = config["dataset"]
    if ds["source"] == "lhco" and not ds["lhco"]["particles"]:
        raise ConfigError(f"methods.{methods[0]}", "the point-cloud branches need jet constituents, but the data are "
                          "the LHCO features file only", "give dataset.lhco.particles or set "
                          + " and ".join(f"methods.{m}.enabled: false" for m in methods))
    for g in (g for g in GENERATORS if g in methods):
        want = config["methods"][g]["sampling"]["oversampling"]
        for sname, st in config["studies"].items():
            have = st["mjj_kde"]["oversampling"]
            if want > have:
                raise ConfigError(f"methods.{g}.sampling.oversampling",
                                  f"{want} generated events per SR event asked, but study '{sname}' draws only "
                                  f"{have} SR m_jj values per SR event",
                                  f"lower it, or raise studies.{sname}.mjj_kde.oversampling")
    cap = config["selection"]["max_constituents"]
    if config["pointcloud"]["max_particles"] > cap:
        raise ConfigError("pointcloud.max_particles", f"{config['pointcloud']['max_particles']} particles per jet "
                          f"asked, but the jets keep only selection.max_constituents = {cap}",
                          "lower pointcloud.max_particles or raise selection.max_constituents")


def check_semantics(config: dict) -> None:
    ds = config["dataset"]
    if ds["source"] == "generator":
        if not config.get("processes"):
            raise ConfigError("processes", "the generator needs a process table", "add processes (see config.yaml)")
        from .data.detector import detector_config

        _check_process_table(config["processes"], "processes")
        try:
            detector_config(ds["detector"])
        except ConfigError as e:
            raise ConfigError("dataset.detector", e.problem, e.fix) from None
    else:
        lhco = ds["lhco"]
        if not (lhco["particles"] or lhco["features"]):
            raise ConfigError("dataset.lhco", "source is 'lhco' but neither 'particles' nor 'features' is given",
                              "give the path of events_anomalydetection_v2.h5 or of its features file")
        for k in ("particles", "features", "extra_background"):
            p = lhco[k]
            if p and not Path(p).exists():
                raise ConfigError(f"dataset.lhco.{k}", f"file '{p}' does not exist",
                                  "download the LHC Olympics 2020 R&D files and give their path")

    sr = config["regions"]["sr"]
    sb = config["regions"]["sb"]
    for name, w in (("regions.sr", sr), ("regions.sb", sb)):
        if not w[0] < w[1]:
            raise ConfigError(name, f"window {w} has low >= high", "give [low, high] with low < high (GeV)")
    if not (sb[0] < sr[0] and sr[1] < sb[1]):
        raise ConfigError("regions.sr", f"SR {sr} is not inside the sideband range {sb}",
                          "choose sb[0] < sr[0] < sr[1] < sb[1] so that there are sidebands on both sides")

    procs = study_processes(config)
    for sname, st in config["studies"].items():
        key = f"studies.{sname}"
        if ds["source"] == "lhco":
            st["background"] = [ds["lhco"]["background_process"]]
        for b in st["background"]:
            if b not in procs:
                raise ConfigError(f"{key}.background", f"process '{b}' is not in the process table",
                                  f"use one of {', '.join(procs)}")
            if procs[b]["label"] != 0:
                raise ConfigError(f"{key}.background", f"process '{b}' has label 1 (signal)",
                                  "list background processes (label 0) here")
        sig = st["signal"]
        if sig not in procs:
            raise ConfigError(f"{key}.signal", f"process '{sig}' is not in the process table",
                              f"use one of {', '.join(p for p, v in procs.items() if v['label'] == 1)}")
        if procs[sig]["label"] != 1:
            raise ConfigError(f"{key}.signal", f"process '{sig}' has label 0 (background)",
                              "choose a signal process (label 1)")
        available = int(procs[sig]["n_events"] * (1.0 - st["signal_test_fraction"]))
        biggest = max(st["injections"])
        if biggest > available:
            raise ConfigError(
                f"{key}.injections",
                f"injection of {biggest} signal events is larger than the {available} available "
                f"({procs[sig]['n_events']} generated x (1 - signal_test_fraction {st['signal_test_fraction']}),"
                " before the selection)",
                f"lower the injection or raise processes.{sig}.n_events",
            )
        for method, injections in st["method_injections"].items():
            if method not in config["methods"]:
                raise ConfigError(f"{key}.method_injections.{method}", f"'{method}' is not a method",
                                  f"use one of {', '.join(config['methods'])}")
            extra = sorted(set(injections) - set(st["injections"]))
            if extra:
                raise ConfigError(f"{key}.method_injections.{method}", f"injection(s) {extra} are not among the "
                                  f"study's injections {st['injections']}",
                                  f"list only injections of {key}.injections, or add them there")
        fr = st["sr_background"]
        if fr["data"] <= 0 or fr["test"] <= 0:
            raise ConfigError(f"{key}.sr_background", "the data and test shares must be positive",
                              "give e.g. {data: 0.5, idealised: 0.25, test: 0.25}")
        if fr["data"] + fr["idealised"] + fr["test"] > 1.0 + 1e-9:
            raise ConfigError(f"{key}.sr_background", f"shares add up to more than 1 ({fr})",
                              "make data + idealised + test <= 1")
    _check_contrastive(config)
    _check_pointcloud(config)
