"""A private single-node SLURM cluster (Debian's slurmctld, slurmd, munge) for the tests.

Nothing of it is installed, configured or started system-wide:

- the binaries come from Debian's packages, downloaded (with the dependencies
  this machine lacks) into a cache directory and unpacked there with
  ``dpkg -x`` (``$RESONANT_SLURM_CACHE``, else ``~/.cache/resonant-slurm``),
  once;
- each cluster lives in its own directory: its slurm.conf (``SLURM_CONF``) and
  gres.conf, state, spool, logs and pid files, its own free ports, its own
  munge key, socket, pid, log and seed files (``AuthInfo=socket=...``), and a
  ``bin/`` of client commands (sbatch, squeue, srun ...) bound to it: wrappers
  that set the library path and its SLURM_CONF (the jobstep plugin drops
  SLURM_CONF before its inner srun), which the test puts on the PATH of its
  own processes only (and sbatch passes on to the jobs);
- it stops only the daemons it started, by pid (checked against the start
  time and the binary recorded at start), after cancelling the jobs of its
  own controller. A cluster whose test process died without stopping it is
  recorded in the cache, and the next ``start`` stops it the same way.

``start()`` refuses (``Unavailable``, with the reason, so that the tests skip)
where a SLURM it did not start is configured or running, or where this machine
cannot run one.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# the packages whose files the cluster runs: downloaded even where the system has them installed
OWN_PACKAGES = (*PACKAGES, "slurm-wlm-basic-plugins", "libmunge2")
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun", "salloc", "sacct", "sattach", "sbcast",
           "sstat")
PARTITION = "debug"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


class Unavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    if os.environ.get("RESONANT_SLURM_CACHE"):
        return Path(os.environ["RESONANT_SLURM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resonant-slurm"


def _run(cmd, timeout=600, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise Unavailable(f"{' '.join(map(str, cmd))} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc


# --- processes -------------------------------------------------------------------------------------------------

def _stat(pid: int, proc: Path = Path("/proc")) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, None when there is none."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def identity(pid: int) -> tuple[int, int]:
    """What identifies a process across pid reuse: its pid and start time."""
    st = _stat(pid)
    if st is None:
        raise ProcessLookupError(pid)
    return pid, st[1]


def _is(pid: int, start: int) -> bool:
    """The process recorded as (pid, start) is still there (and not a zombie)."""
    st = _stat(pid)
    return st is not None and st[1] == start and st[0] != "Z"


def slurm_processes(proc: Path = Path("/proc")) -> dict[int, str]:
    """pid -> daemon name for every SLURM or munge daemon running (Debian's `-wlm` names included)."""
    found = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            argv0 = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a finished one that its parent has yet to reap
        except (OSError, IndexError):
            continue
        for name in (comm, Path(argv0.split(":")[0].split(" ")[0]).name):  # slurmstepd: "slurmstepd: [1.0]"
            if name.removesuffix("-wlm") in DAEMONS:
                found[int(d.name)] = name.removesuffix("-wlm")
    return found


def foreign_slurm(etc: Path = Path("/etc"), environ=None, proc: Path = Path("/proc")) -> list[str]:
    """Why a SLURM that this module did not start may be here (nothing: an empty list)."""
    environ = os.environ if environ is None else environ
    reasons = [f"{conf} exists" for conf in (etc / "slurm/slurm.conf", etc / "slurm-llnl/slurm.conf")
               if conf.exists()]
    reasons += [f"{var} is set ({environ[var]})" for var in ("SLURM_CONF", "SLURM_JOB_ID") if environ.get(var)]
    running = slurm_processes(proc)
    if running:
        reasons.append("running: " + ", ".join(f"{name} (pid {pid})" for pid, name in sorted(running.items())))
    return reasons


# --- the private SLURM installation ------------------------------------------------------------------------------

def _lib_env(prefix: Path) -> dict:
    lib = str(prefix / "lib")
    old = os.environ.get("LD_LIBRARY_PATH")
    return {"LD_LIBRARY_PATH": f"{lib}{os.pathsep}{old}" if old else lib}


def daemon(prefix: Path, name: str) -> Path:
    """A daemon in the prefix, by its own name: Debian installs slurmctld-wlm etc. behind update-alternatives
    links, and SLURM's daemons go by their argv[0] (under another name slurmctld and slurmd drop the nodes'
    Gres from slurm.conf)."""
    path = prefix / "sbin" / name
    if not path.exists():
        raise Unavailable(f"no {name} in {prefix}")
    return path


def plugin_dir(prefix: Path) -> Path:
    found = sorted(prefix.glob("usr/lib/*/slurm*/auth_munge.so"))
    if not found:
        raise Unavailable(f"no SLURM plugins (auth_munge.so) in {prefix}")
    return found[0].parent


def _works(prefix: Path) -> bool:
    """Every binary the cluster runs finds its libraries (the clients cannot say -V without a config)."""
    try:
        env = {**os.environ, **_lib_env(prefix), "LD_TRACE_LOADED_OBJECTS": "1"}
        for b in [daemon(prefix, d) for d in DAEMONS] + [prefix / "usr/bin" / c for c in CLIENTS]:
            proc = _run([b], timeout=30, check=False, env=env)
            if proc.returncode != 0 or "not found" in proc.stdout:
                return False
        return True
    except (Unavailable, OSError, subprocess.SubprocessError):
        return False


def _apt(*args, lists: Path | None = None, cwd=None) -> subprocess.CompletedProcess:
    opts = ["-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=true"]
    if lists:
        opts += ["-o", f"Dir::State::Lists={lists}"]
    return _run(["apt-get", "-q", *opts, *args], cwd=cwd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _download(debs: Path, cache: Path) -> None:
    """The .debs of PACKAGES and of the dependencies this machine lacks, into ``debs`` (no system change:
    apt's own package lists are used, else fresh ones in the cache)."""
    args = ["install", "--download-only", "-y", "--no-install-recommends", "-o", f"Dir::Cache::archives={debs}",
            *PACKAGES]
    lists = None
    try:
        _apt(*args)
    except Unavailable:  # no or stale package lists: private ones
        lists = cache / "lists"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        _apt("update", lists=lists)
        _apt(*args, lists=lists)
    for pkg in OWN_PACKAGES:  # installed on the system, so not downloaded above
        if not list(debs.glob(f"{pkg}_*.deb")):
            _apt("download", pkg, lists=lists, cwd=debs)


def ensure_prefix(cache: Path | None = None) -> Path:
    """The private SLURM + munge installation in ``cache``, downloaded and unpacked when missing."""
    cache = (cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    prefix = cache.resolve() / "prefix"
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (prefix / ".complete").exists() and _works(prefix):
            return prefix
        if not (shutil.which("apt-get") and shutil.which("dpkg")):
            raise Unavailable(f"no SLURM in {cache} and no apt-get/dpkg to fetch Debian's packages")
        debs, new = cache / "debs", cache / "prefix.new"
        for d in (debs, new):
            shutil.rmtree(d, ignore_errors=True)
        (debs / "partial").mkdir(parents=True)
        _download(debs, cache)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", deb, new])
        # one library directory (no plugins in it), and the daemons under their own names
        (new / "lib").mkdir(exist_ok=True)  # (the packages have lib/systemd)
        for so in [*new.glob("usr/lib/*/lib*.so*"), *new.glob("usr/lib/*/slurm*/lib*.so*")]:
            (new / "lib" / so.name).symlink_to(Path("..") / so.relative_to(new))
        (new / "sbin").mkdir()
        for name in DAEMONS:
            real = next((f"usr/sbin/{n}" for n in (f"{name}-wlm", name) if (new / "usr/sbin" / n).exists()), None)
            if real:
                (new / "sbin" / name).symlink_to(Path("..") / real)
        shutil.rmtree(prefix, ignore_errors=True)
        new.rename(prefix)
        shutil.rmtree(debs, ignore_errors=True)
        if not _works(prefix):
            raise Unavailable(f"the SLURM unpacked in {prefix} does not run (missing libraries?)")
        (prefix / ".complete").write_text("\n".join(sorted(p.name for p in prefix.glob("usr/share/doc/*"))) + "\n")
    return prefix


# --- one cluster -------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _tail(path: Path, n=800) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class Cluster:
    root: Path        # its own directory: config, state, spool, logs, pid files, munge files
    prefix: Path      # the private SLURM installation
    record: Path      # the cache's record of it, for stopping it after a crash
    daemons: dict = field(default_factory=dict)  # name -> (pid, start time)
    owner: tuple = ()  # (pid, start time) of the process that started it
    # munged wants its socket's every parent directory open to all (the tests' tmp dirs are not): its own one
    socket_dir: Path | None = None
    _procs: dict = field(default_factory=dict, repr=False)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def munge_socket(self) -> Path:
        return self.socket_dir / "munge.socket.2"

    def env(self, path: str | None = None) -> dict:
        """What a process needs to use this cluster: its config, and its client commands first on the PATH."""
        path = os.environ.get("PATH", "") if path is None else path
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.bin}{os.pathsep}{path}"}

    def client(self, *args, timeout=30, check=False) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return _run(args, timeout=timeout, check=check, env={**env, **self.env()})

    # --- recording ---
    def save(self) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"root": str(self.root), "prefix": str(self.prefix), "owner": list(self.owner),
                                   "socket_dir": str(self.socket_dir) if self.socket_dir else None,
                                   "daemons": {k: list(v) for k, v in self.daemons.items()}}))
        tmp.replace(self.record)

    @classmethod
    def load(cls, record: Path) -> Cluster:
        d = json.loads(record.read_text())
        return cls(Path(d["root"]), Path(d["prefix"]), record, {k: tuple(v) for k, v in d["daemons"].items()},
                   tuple(d["owner"]), Path(d["socket_dir"]) if d.get("socket_dir") else None)

    # --- start ---
    def write_config(self) -> str:
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        r = self.root
        for d in ("ctld", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        self.conf.write_text(f"""ClusterName=resonant-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
PluginDir={plugin_dir(self.prefix)}
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
TmpFS={r}/spool
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
DefMemPerCPU=1000
GresTypes=gpu
SchedulerParameters=batch_sched_delay=0
NodeName={host} CPUs={cpus} RealMemory={mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        (r / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\n")
        self.bin.mkdir(exist_ok=True)
        for name in CLIENTS:
            w = self.bin / name
            w.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\n'
                         f'export LD_LIBRARY_PATH="{self.prefix}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
                         f'exec "{self.prefix}/usr/bin/{name}" "$@"\n')
            w.chmod(0o755)
        return host

    def _spawn(self, name: str, *args) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(self.env(), **_lib_env(self.prefix))
        with open(self.root / "log" / f"{name}.out", "ab") as out:
            p = subprocess.Popen([str(daemon(self.prefix, name)), *map(str, args)], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.root,
                                 start_new_session=True)
        self._procs[name] = p
        self.daemons[name] = identity(p.pid)
        self.save()

    def _check_alive(self) -> None:
        for name, p in self._procs.items():
            if p.poll() is not None:
                log = self.root / ("munge/munged.log" if name == "munged" else f"log/{name}.log")
                raise Unavailable(f"{name} exited ({p.returncode}): {_tail(self.root / 'log' / f'{name}.out')} "
                                  f"{_tail(log)}")

    def launch(self, timeout=60) -> None:
        self.socket_dir = Path(tempfile.mkdtemp(prefix="resonant-munge-"))
        self.socket_dir.chmod(0o755)
        self.save()
        if len(str(self.munge_socket)) > MAX_SOCKET_PATH:
            raise Unavailable(f"{self.munge_socket} is too long a path for a socket")
        self.write_config()
        m = self.root / "munge"
        key = m / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(1024))
        self._spawn("munged", "--foreground", "--key-file", key, "--socket", self.munge_socket,
                    "--pid-file", m / "munged.pid", "--log-file", m / "munged.log", "--seed-file", m / "munged.seed")
        deadline = time.time() + timeout
        while not self.munge_socket.exists():
            self._check_alive()
            if time.time() > deadline:
                raise Unavailable(f"munged did not open {self.munge_socket}: {_tail(m / 'munged.log')}")
            time.sleep(0.1)
        self._spawn("slurmctld", "-D", "-i", "-f", self.conf)
        self._spawn("slurmd", "-D", "-f", self.conf, "-d", daemon(self.prefix, "slurmstepd"))
        out = ""
        while time.time() < deadline:
            self._check_alive()
            out = self.client("sinfo", "-h", "-o", "%t").stdout.strip()
            if out in ("idle", "mix"):
                return
            time.sleep(0.5)
        raise Unavailable(f"the SLURM node did not become idle (sinfo: {out!r}); "
                          f"{_tail(self.root / 'log/slurmctld.log')}")

    # --- stop ---
    def _ours(self, pid: int, start: int) -> bool:
        """Still the process this cluster started: same start time, and its binary is in our prefix."""
        if not _is(pid, start):
            return False
        try:
            return Path(os.readlink(f"/proc/{pid}/exe")).is_relative_to(self.prefix)
        except OSError:
            return False

    def _cancel_jobs(self, timeout: float) -> None:
        ids = self.client("squeue", "-h", "-o", "%i").stdout.split()
        if not ids:
            return
        self.client("scancel", *ids)
        deadline = time.time() + timeout
        while time.time() < deadline:  # until no job is pending, running or completing
            q = self.client("squeue", "-h", "-o", "%i")
            if q.returncode != 0 or not q.stdout.strip():
                break
            time.sleep(0.5)

    def stop(self, timeout: float = 30) -> None:
        """Cancel this cluster's jobs, then end the daemons it started (by pid), and forget it."""
        ctld = self.daemons.get("slurmctld")
        if ctld and self._ours(*ctld) and self.conf.exists():
            try:
                self._cancel_jobs(timeout)
            except (OSError, subprocess.SubprocessError, Unavailable):
                pass
        for name in ("slurmd", "slurmctld", "munged", *[n for n in self.daemons if n not in DAEMONS]):
            if name not in self.daemons:
                continue
            pid, start = self.daemons[name]
            if self._ours(pid, start):
                os.kill(pid, signal.SIGTERM)
                deadline = time.time() + timeout
                while _is(pid, start) and time.time() < deadline:
                    time.sleep(0.1)
                if _is(pid, start):
                    os.kill(pid, signal.SIGKILL)
            if name in self._procs:
                try:
                    self._procs.pop(name).wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
        self.daemons.clear()
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.record.unlink(missing_ok=True)


def reap_orphans(cache: Path | None = None) -> list[Path]:
    """Stop the clusters recorded in ``cache`` whose starting process has gone (a test killed before its
    teardown); returns their directories."""
    reaped = []
    for record in sorted((cache or cache_dir()).glob("clusters/*.json")):
        try:
            c = Cluster.load(record)
        except (OSError, ValueError, KeyError):
            continue
        if c.owner and _is(*c.owner):
            continue  # its test is still running (another session): not ours to stop
        c.stop()
        reaped.append(c.root)
    return reaped


def start(root: Path, etc: Path = Path("/etc"), cache: Path | None = None, timeout: float = 60) -> Cluster:
    """A running private cluster in ``root``; ``Unavailable`` (nothing started) with the reason otherwise."""
    cache = cache or cache_dir()
    reap_orphans(cache)
    reasons = foreign_slurm(etc)
    if reasons:
        raise Unavailable("a SLURM that this test did not start is configured or running here: "
                          + "; ".join(reasons))
    if os.geteuid() != 0:
        raise Unavailable("the SLURM daemons (SlurmdUser) need root")
    prefix = ensure_prefix(cache)
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root.resolve(), prefix, cache / "clusters" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json",
                      owner=identity(os.getpid()))
    try:
        cluster.launch(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
