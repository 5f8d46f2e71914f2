"""A real single-node SLURM cluster (Debian's slurmctld, slurmd, munge) for the tests.

``start()`` installs the packages if they are missing (as root, from Debian's
repositories), writes a minimal configuration with a fake GPU, starts munged,
slurmctld and slurmd without systemd, and waits for the node to be idle.
``stop()`` ends the daemons. Any step that this machine cannot do raises
``Unavailable`` with the reason, so that the tests skip with it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PARTITION = "debug"
CONF = Path("/etc/slurm/slurm.conf")


class Unavailable(RuntimeError):
    pass


def _run(cmd, timeout=600, check=True, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise Unavailable(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return proc


def install() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sinfo", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and this user cannot apt-get install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env)


def write_config(state: Path) -> str:
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    for d in ("ctld", "d", "log"):
        (state / d).mkdir(parents=True, exist_ok=True)
    conf = f"""ClusterName=resonant-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
DefMemPerCPU=1000
GresTypes=gpu
SchedulerParameters=batch_sched_delay=0
NodeName={host} CPUs={cpus} RealMemory={mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    etc = Path("/etc/slurm")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "slurm.conf").write_text(conf)
    (etc / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\n")
    return host


def start(state: Path) -> None:
    install()
    if os.geteuid() != 0:
        raise Unavailable("starting the SLURM daemons needs root")
    stop()
    write_config(state)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run(["mungekey", "--create"] if shutil.which("mungekey") else ["create-munge-key"])
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
    _run(["munged", "--force"])
    _run(["slurmctld", "-i"])
    _run(["slurmd"])
    deadline = time.time() + 60
    while time.time() < deadline:
        out = _run(["sinfo", "-h", "-o", "%t"], check=False).stdout.strip()
        if out in ("idle", "mix"):
            return
        time.sleep(0.5)
    log = (state / "log/slurmctld.log")
    raise Unavailable(f"the SLURM node did not become idle (sinfo: {out!r}); "
                      f"{log.read_text()[-800:] if log.exists() else ''}")


def stop() -> None:
    if shutil.which("scancel"):
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
    for daemon in ("slurmd", "slurmctld", "munged"):
        subprocess.run(["pkill", "-x", daemon], capture_output=True)
    time.sleep(0.5)
