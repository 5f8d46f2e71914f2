"""The private SLURM cluster of the SLURM test, without its daemons: when it refuses to start, and that it
stops only what it started."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import slurm_cluster as sc


def fake_proc(root: Path, procs: dict) -> Path:
    """A /proc with pid -> (comm, argv[0], state)."""
    for pid, (comm, argv0, state) in procs.items():
        d = root / "proc" / str(pid)
        d.mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(argv0.encode() + b"\0-D\0")
        (d / "stat").write_text(f"{pid} ({comm}) {state} 1 " + " ".join(["7"] * 30) + "\n")
    (root / "proc/sys").mkdir(parents=True, exist_ok=True)
    return root / "proc"


def test_a_slurm_it_did_not_start_is_a_reason_to_skip(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    quiet = fake_proc(tmp_path / "quiet", {10: ("bash", "/bin/bash", "S"), 11: ("python", "python", "R")})
    assert sc.foreign_slurm(etc, {}, quiet) == []

    (etc / "slurm").mkdir()
    (etc / "slurm/slurm.conf").write_text("ClusterName=site\n")
    assert sc.foreign_slurm(etc, {}, quiet) == [f"{etc}/slurm/slurm.conf exists"]

    env = {"SLURM_CONF": "/site/slurm.conf", "SLURM_JOB_ID": "42", "HOME": "/root"}
    reasons = sc.foreign_slurm(tmp_path / "no-etc", env, quiet)
    assert reasons == ["SLURM_CONF is set (/site/slurm.conf)", "SLURM_JOB_ID is set (42)"]

    busy = fake_proc(tmp_path / "busy", {20: ("slurmctld", "/usr/sbin/slurmctld", "S"),
                                         21: ("slurmd-wlm", "/usr/sbin/slurmd-wlm", "S"),
                                         22: ("slurmstepd", "slurmstepd: [3.batch]", "S"),
                                         23: ("munged", "/usr/sbin/munged", "Z"),  # exited, not yet reaped
                                         24: ("munged", "/usr/sbin/munged", "S"),
                                         25: ("sleep", "sleep", "S")})
    assert sc.slurm_processes(busy) == {20: "slurmctld", 21: "slurmd", 22: "slurmstepd", 24: "munged"}
    (reason,) = sc.foreign_slurm(tmp_path / "no-etc", {}, busy)
    assert reason == "running: slurmctld (pid 20), slurmd (pid 21), slurmstepd (pid 22), munged (pid 24)"


def test_start_refuses_before_touching_anything(tmp_path):
    etc = tmp_path / "etc"
    (etc / "slurm").mkdir(parents=True)
    (etc / "slurm/slurm.conf").write_text("ClusterName=site\n")
    with pytest.raises(sc.Unavailable, match="did not start is configured or running here: .*slurm.conf exists"):
        sc.start(tmp_path / "cluster", etc=etc, cache=tmp_path / "cache")
    assert not (tmp_path / "cluster").exists() and not (tmp_path / "cache").exists()


@pytest.fixture
def prefix(tmp_path):
    """A 'SLURM installation' whose one daemon is a copy of sleep."""
    prefix = tmp_path / "prefix"
    (prefix / "sbin").mkdir(parents=True)
    shutil.copy(shutil.which("sleep"), prefix / "sbin/dummyd")
    return prefix.resolve()


def test_stop_ends_only_the_processes_it_started(tmp_path, prefix):
    ours = subprocess.Popen([prefix / "sbin/dummyd", "300"])
    reused = subprocess.Popen([prefix / "sbin/dummyd", "300"])
    stranger = subprocess.Popen([shutil.which("sleep"), "300"])
    try:
        pid, start = sc.identity(reused.pid)
        c = sc.Cluster(tmp_path / "c", prefix, tmp_path / "cache/clusters/c.json",
                       daemons={"dummyd": sc.identity(ours.pid),
                                "reused": (pid, start + 1),  # the pid, but not the process recorded
                                "stranger": sc.identity(stranger.pid)})  # not a binary of the prefix
        c.save()
        c.stop(timeout=5)
        assert ours.wait(5) == -signal.SIGTERM
        assert reused.poll() is None and stranger.poll() is None
        assert not c.record.exists() and c.daemons == {}
    finally:
        for p in (ours, reused, stranger):
            p.kill()
            p.wait()


def test_a_cluster_whose_test_died_is_stopped_by_the_next_start(tmp_path, prefix):
    cache = tmp_path / "cache"
    dead_owner = subprocess.Popen([shutil.which("sleep"), "300"])
    owner = sc.identity(dead_owner.pid)
    dead_owner.kill()
    dead_owner.wait()
    orphan = subprocess.Popen([prefix / "sbin/dummyd", "300"])
    alive = subprocess.Popen([prefix / "sbin/dummyd", "300"])
    try:
        sc.Cluster(tmp_path / "a", prefix, cache / "clusters/a.json", {"dummyd": sc.identity(orphan.pid)},
                   owner).save()
        sc.Cluster(tmp_path / "b", prefix, cache / "clusters/b.json", {"dummyd": sc.identity(alive.pid)},
                   sc.identity(os.getpid())).save()  # its test is still running
        assert sc.reap_orphans(cache) == [tmp_path / "a"]
        assert orphan.wait(5) == -signal.SIGTERM and alive.poll() is None
        assert [p.name for p in (cache / "clusters").iterdir()] == ["b.json"]
    finally:
        for p in (orphan, alive):
            p.kill()
            p.wait()
