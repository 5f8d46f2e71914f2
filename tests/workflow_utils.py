"""Running the workflow on a copy of the project, as a user with a clone would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
PROJECT_FILES = ("Snakefile", "config.yaml", "config.schema.yaml", "rules", "workflow", "src", "envs", "profiles",
                 "tests/configs")


def copy_project(dest: Path) -> Path:
    """A fresh 'clone' of the project's workflow files in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake", "results")
    for item in PROJECT_FILES:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        else:
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    return dest


# Snakemake's SLURM plugin asks `scontrol show config` at import; where a SLURM
# client is installed but no controller answers, that hangs for 10 s on every
# call. Outside the SLURM test (which passes its private cluster's SLURM_CONF
# and PATH), point it at a controller that refuses at once.
NO_SLURM_CONF = Path(os.environ.get("TMPDIR", "/tmp")) / "resonant-no-slurm.conf"


def _no_slurm_conf() -> str:
    if not NO_SLURM_CONF.exists():
        NO_SLURM_CONF.write_text("ClusterName=none\nSlurmctldHost=localhost\nMessageTimeout=1\n")
    return str(NO_SLURM_CONF)


def env(**extra) -> dict:
    e = dict(os.environ)
    e.setdefault("SLURM_CONF", _no_slurm_conf())
    e.pop("PYTHONPATH", None)
    e.update({k: str(v) for k, v in extra.items()})
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"  # the venv first, also on a PATH given in extra
    return e


def snakemake(cwd: Path, *args, check=True, timeout=1500, extra_env=None) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env(**(extra_env or {})), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def planned(cwd: Path, *args, extra_env=None) -> dict[str, int]:
    """The job counts per rule that a dry run plans ({} when nothing is to be done)."""
    proc = snakemake(cwd, "-n", *args, extra_env=extra_env)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    m = re.search(r"Job stats:\n(.*?)\ntotal\s+\d+", out, re.S)
    assert m, out[-3000:]
    jobs = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    jobs.pop("all", None)
    return jobs
