"""The tiny study (its first seed) through profiles/slurm against a real single-node SLURM cluster.

The data stages come from the output cache when the workflow tests filled it first.
"""

import json
import subprocess

import pytest
import yaml

import slurm_cluster
from conftest import ROOT
from workflow_utils import copy_project, planned, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
CONFIG = "tests/configs/tiny.yaml"
# What differs from a real site: the partition, no accounting daemon (squeue for
# the status), quick first status check, and requests that fit a 2-core node.
# (--set-resources here replaces the profile's whole set-resources.)
LOCAL_SITE = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "3",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--default-resources", "slurm_partition=debug", "runtime=30", "mem_mb=1000", "cpus_per_task=1",
    "--set-resources", "reference:cpus_per_task=1", "reference:mem_mb=1500", "study_sets:mem_mb=1500",
    "cluster:mem_mb=1500", "generate:mem_mb=1000",
    # the multi-GPU encoder training (4 nodes x 4 GPUs in the profile) on the node's one fake GPU:
    # still a job whose own command is the launcher (srun), as on a real site
    "train_contrastive_encoder:nodes=1", "train_contrastive_encoder:gpu=1", "train_contrastive_encoder:cpus_per_gpu=1",
    "train_contrastive_encoder:mem_mb=2000", "train_contrastive_encoder:runtime=30",
    *[f"{rule}:{k}" for rule in ("train_jet_fm", "train_particle_fm", "train_particle_diffusion") for k in
      ("nodes=1", "gpu=1", "cpus_per_gpu=1", "mem_mb=2000", "runtime=30")],
    # the diffusion jet model with the tf engine on 2 tasks (2 CPU workers of MultiWorkerMirroredStrategy
    # that find each other through SLURM's variables), no GPU
    *[f"train_jet_diffusion:{k}" for k in ("nodes=1", "gpu=0", "tasks=2", "cpus_per_task=1", "mem_mb=1500",
                                           "runtime=30", "mpi=srun")],
    *[f"{rule}:{k}" for rule in ("sample_fm", "sample_diffusion", "pc_classifier", "pc_checks") for k in
      ("gpu=1", "cpus_per_gpu=1", "mem_mb=2000", "runtime=30")],
    "--set-threads", "reference=1",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A private cluster in its own directory (tests/slurm_cluster.py): nothing of it outside that directory
    and the SLURM it unpacks in ~/.cache/resonant-slurm; it skips where a SLURM it did not start is here."""
    try:
        c = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except (slurm_cluster.Unavailable, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot run a private SLURM cluster on this machine: {e}")
    yield c
    c.stop()


METHODS = ("supervised", "idealised", "cathode", "contrastive-ID", "contrastive-EP", "vae", "flow_matching",
           "diffusion", "idealised_pointcloud")
TARGETS = [f"results/tiny/inj60/seed0/{m}/metrics.json" for m in METHODS]
DATA_RULES = ("generate", "cluster", "merge_jets", "merge_simulation", "study_sets")  # from the cache, if there


def test_tiny_study_runs_through_the_slurm_profile(cluster, tmp_path, output_cache):
    wd = copy_project(tmp_path / "wd")
    # its slurm.conf and its client commands (on the PATH of snakemake and, through sbatch, of its jobs)
    site = {**cluster.env(), "SNAKEMAKE_OUTPUT_CACHE": str(output_cache)}
    proc = snakemake(wd, *TARGETS, "--configfile", CONFIG, "--profile", "profiles/slurm", "--cache", *DATA_RULES,
                     *LOCAL_SITE, timeout=1200, extra_env=site)
    out = proc.stdout + proc.stderr
    assert "sbatch" in out.lower() or "slurm" in out.lower()
    assert "Submitted job" in out or "submitted" in out.lower(), out[-3000:]
    m = json.loads((wd / "results/tiny/inj60/seed0/supervised/metrics.json").read_text())
    assert m["auc"] > 0.85
    # the 2-task job trained one model on 2 workers: the chief wrote it, with the world size in its history
    jets = json.loads((wd / "results/tiny/inj60/seed0/diffusion/jet_model.json").read_text())
    assert jets["history"]["world_size"] == 2 and jets["history"]["engine"] == "tf"
    # every job ran as a SLURM job: the executor's job logs are there
    assert list((wd / ".snakemake/slurm_logs").rglob("*.log")), "no SLURM job logs"
    assert planned(wd, *TARGETS, "--configfile", CONFIG, extra_env=site) == {}


def test_profile_gives_every_multi_process_rule_a_task_geometry():
    """The SLURM plugin refuses an `mpi` job without tasks or tasks_per_node (> 1): check the profile's."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    launched = {rule: r for rule, r in profile["set-resources"].items() if r.get("mpi")}
    assert {"train_contrastive_encoder", "train_jet_fm", "train_particle_fm", "train_jet_diffusion",
            "train_particle_diffusion"} <= set(launched)
    for rule, r in launched.items():
        per_node = r.get("tasks_per_node")
        assert (per_node is None) != (r.get("tasks") is None), rule  # exactly one of the two
        assert (per_node or r["tasks"]) > 1, rule
        assert per_node is None or per_node == r["gpu"] * r.get("tasks_per_gpu", 1), rule  # one task per GPU
