"""The conda environments pin the same versions as pyproject's extras."""

import tomllib

import yaml

from conftest import ROOT

GPU_BUILDS = {"tensorflow-cpu": "tensorflow[and-cuda]", "xgboost-cpu": "xgboost"}


def pins(reqs):
    out = {}
    for r in reqs:
        name, version = r.split("==")
        out[name.strip()] = version.strip()
    return out


def test_envs_match_pyproject_extras():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {k: v for k, v in pins(pp["dependencies"]).items() if not k.startswith("snakemake")}
    stacks = {"data", "bdt", "torch", "tensorflow"}
    assert stacks <= set(pp["optional-dependencies"])
    for stack in stacks:
        env = yaml.safe_load((ROOT / "envs" / f"{stack}.yaml").read_text())
        assert "python=3.11" in env["dependencies"]
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        want = {GPU_BUILDS.get(k, k): v for k, v in {**core, **pins(pp["optional-dependencies"][stack])}.items()}
        assert pins(pip) == want, f"envs/{stack}.yaml disagrees with pyproject.toml"


def test_every_dependency_is_pinned():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for r in pp["dependencies"] + sum(pp["optional-dependencies"].values(), []):
        assert "==" in r, f"{r} is not pinned"
    assert pins(pp["optional-dependencies"]["torch"])["torch"] == "2.13.0"
    assert pins(pp["optional-dependencies"]["data"])["pythia8mc"] == "8.317.2"


def test_rules_name_their_env():
    import re

    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, re.S | re.M):
            if "shell:" in body:
                m = re.search(r'conda:\s*\n\s*"\.\./envs/(\w+)\.yaml"', body)
                assert m, f"rule {rule} in {smk.name} names no conda env"
                assert (ROOT / "envs" / f"{m.group(1)}.yaml").exists()
