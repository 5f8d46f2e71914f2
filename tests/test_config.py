"""The config is validated before any job runs, with messages that name the key and the fix."""

import copy

import pytest
import yaml

from resonant.config import load_config, validate_config
from resonant.errors import ConfigError


def check(cfg, *fragments):
    with pytest.raises(ConfigError) as e:
        validate_config(copy.deepcopy(cfg))
    msg = str(e.value)
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_laptop_config_is_valid_and_gets_defaults(laptop_config):
    cfg = validate_config(laptop_config)
    assert cfg["dataset"]["source"] == "generator"
    st = next(iter(cfg["studies"].values()))
    assert st["val_fraction"] == 0.2  # default filled in
    assert st["mjj_kde"]["bandwidth"] == 10.0
    assert cfg["methods"]["supervised"]["features"] == ["mj1", "dmj", "tau21_j1", "tau21_j2"]
    assert cfg["methods"]["idealised"]["enabled"] is True


def test_typo_in_key_suggests_the_right_one(laptop_config):
    cfg = laptop_config
    cfg["selection"]["lead_pt_mn"] = 1200
    check(cfg, "selection.lead_pt_mn", "unknown key", "lead_pt_min")


def test_wrong_type(laptop_config):
    laptop_config["dataset"]["chunk_size"] = "many"
    check(laptop_config, "dataset.chunk_size", "integer")


def test_unknown_method(laptop_config):
    laptop_config["methods"]["cathod"] = {}
    check(laptop_config, "methods.cathod", "unknown key")


def test_unknown_model(laptop_config):
    laptop_config["processes"]["qcd"]["model"] = "qcd_dijets"
    check(laptop_config, "processes.qcd.model", "qcd_dijet")


def test_sr_outside_sb(laptop_config):
    laptop_config["regions"]["sr"] = [2000.0, 2400.0]
    check(laptop_config, "regions.sr", "inside the sideband")


def test_inverted_window(laptop_config):
    laptop_config["regions"]["sr"] = [3700.0, 3300.0]
    check(laptop_config, "regions.sr", "low >= high")


def test_injection_larger_than_signal(laptop_config):
    st = next(iter(laptop_config["studies"].values()))
    st["injections"] = [100, 10**6]
    msg = check(laptop_config, "injections", "larger than")
    assert "n_events" in msg


def test_unknown_process_in_study(laptop_config):
    st = next(iter(laptop_config["studies"].values()))
    st["signal"] = "nonexistent"
    check(laptop_config, "signal", "nonexistent")


def test_background_used_as_signal(laptop_config):
    st = next(iter(laptop_config["studies"].values()))
    st["signal"] = "qcd"
    check(laptop_config, "signal", "label 0")


def test_lhco_source_needs_existing_files(laptop_config, tmp_path):
    laptop_config["dataset"]["source"] = "lhco"
    check(laptop_config, "dataset.lhco", "neither")
    laptop_config["dataset"]["lhco"] = {"features": str(tmp_path / "missing.h5")}
    check(laptop_config, "dataset.lhco.features", "does not exist")


def test_load_config_reports_yaml_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_all_shipped_configs_are_valid():
    from conftest import ROOT

    paths = [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml")), *sorted((ROOT / "tests/configs").glob("*.yaml"))]
    assert len(paths) >= 2
    for p in paths:
        with open(p) as f:
            validate_config(yaml.safe_load(f))


def test_workflow_stops_before_any_job_on_a_bad_config(tmp_path):
    """snakemake itself refuses the config, naming the key; nothing is created."""
    from workflow_utils import copy_project, snakemake

    wd = copy_project(tmp_path / "wd")
    cfg = yaml.safe_load((wd / "tests/configs/tiny.yaml").read_text())
    cfg["regions"]["sr"] = [5200.0, 5600.0]
    (wd / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "regions.sr" in proc.stderr and "inside the sideband" in proc.stderr
    assert not (wd / "results").exists()


def test_contrastive_needs_simulation_and_sane_configurations(laptop_config):
    import copy

    cfg = copy.deepcopy(laptop_config)
    cfg["simulation"]["processes"]["qcd"]["model"] = "qcd_dijit"
    check(cfg, "simulation.processes.qcd.model", "qcd_dijet")
    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["contrastive"]["configurations"]["IP"] = {"exclude": ["wprime_xy_500"]}
    check(cfg, "methods.contrastive.configurations.IP.exclude", "neither a simulation process")
    cfg = copy.deepcopy(laptop_config)
    cfg["simulation"]["processes"] = {k: v for k, v in cfg["simulation"]["processes"].items()
                                      if k not in ("ttbar", "vjet")}
    check(cfg, "methods.contrastive.configurations.bkg", "at least 2")
    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["contrastive"]["configurations"] = {"none": {"exclude": ["wprime_xy", "wprime_wz",
                                                                            "zprime_ttbar", "qstar_qg"]}}
    check(cfg, "methods.contrastive.configurations.none", "no signal process")
    cfg = copy.deepcopy(laptop_config)
    del cfg["simulation"]
    check(cfg, "simulation.processes", "enabled: false")
    cfg["methods"]["contrastive"]["enabled"] = False
    validate_config(cfg)


def test_contrastive_training_processes(laptop_config):
    from resonant.config import contrastive_training_processes

    laptop_config["methods"]["contrastive"]["configurations"].update(
        IP={"exclude": ["wprime_xy_500_100"]}, EP={"exclude": ["wprime_xy"]})
    cfg = validate_config(laptop_config)
    ip = contrastive_training_processes(cfg, "IP")
    assert "wprime_xy_500_100" not in ip and ip["wprime_xy_300_300"] == "wprime_xy"
    assert not any(g == "wprime_xy" for g in contrastive_training_processes(cfg, "EP").values())
    assert set(contrastive_training_processes(cfg, "bkg").values()) == {"qcd_dijet", "sm_ttbar", "sm_vjet"}


def test_point_cloud_branches_need_constituents_within_the_cap(laptop_config, tmp_path):
    import copy

    cfg = copy.deepcopy(laptop_config)
    cfg["pointcloud"]["max_particles"] = cfg["selection"]["max_constituents"] + 1
    check(cfg, "pointcloud.max_particles", "max_constituents")
    cfg = copy.deepcopy(laptop_config)
    features = tmp_path / "features.h5"
    features.write_bytes(b"")
    cfg["dataset"] = {"name": "lhco", "source": "lhco", "lhco": {"features": str(features)}}
    cfg["studies"]["lhco-analogue"]["signal"] = "wprime_lhco"
    cfg["methods"]["contrastive"]["enabled"] = False
    check(cfg, "methods.flow_matching", "features file only")
    cfg["methods"]["flow_matching"]["enabled"] = False
    check(cfg, "methods.diffusion", "features file only")
    cfg["methods"]["diffusion"]["enabled"] = False
    check(cfg, "methods.idealised_pointcloud", "features file only")
    cfg["methods"]["idealised_pointcloud"] = {"enabled": False}
    validate_config(cfg)


def test_generator_network_keys_are_checked(laptop_config):
    import copy

    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["flow_matching"]["jet_model"]["global_dim"] = 8  # EPiC only
    check(cfg, "methods.flow_matching.jet_model.global_dim", "unknown key")
    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["flow_matching"]["particle_model"]["hiden"] = 8
    check(cfg, "methods.flow_matching.particle_model.hiden", "did you mean 'hidden'")
    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["diffusion"]["jet_model"]["hidden"] = 8  # flow-matching name, not diffusion's
    check(cfg, "methods.diffusion.jet_model.hidden", "unknown key")
    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["diffusion"]["engine"] = "mpi"
    check(cfg, "methods.diffusion.engine", "horovod")
    cfg = copy.deepcopy(laptop_config)
    cfg["methods"]["diffusion"]["sampling"]["oversampling"] = 50.0
    check(cfg, "methods.diffusion.sampling.oversampling", "mjj_kde.oversampling")


def test_method_injections_are_a_subset_of_the_study_scan(laptop_config):
    from resonant.config import method_injections

    st = next(iter(laptop_config["studies"].values()))
    st["injections"] = [0, 50, 200]
    st["method_injections"] = {"flow_matching": [0, 200]}
    cfg = validate_config(copy.deepcopy(laptop_config))
    study = next(iter(cfg["studies"]))
    assert method_injections(cfg, study, "flow_matching") == [0, 200]
    assert method_injections(cfg, study, "cathode") == [0, 50, 200]  # not listed: the whole scan
    st["method_injections"] = {"contrastive": [50]}
    cfg = validate_config(copy.deepcopy(laptop_config))
    assert method_injections(cfg, study, "contrastive-ID") == [50]  # each configuration of the branch
    st["method_injections"] = {"flow_matching": [0, 300]}
    check(laptop_config, "method_injections.flow_matching", "[300]", "injections")
    st["method_injections"] = {"flow_matchin": [0]}
    check(laptop_config, "method_injections.flow_matchin", "not a method")
