"""Data-parallel training of Keras 3 models on TensorFlow: one train step, two engines.

Keras' ``fit`` does not run multi-worker on TensorFlow (keras-team/keras#20585), so the
models that train data-parallel (the diffusion branch) use their own train step, written
once against the small :class:`Engine` interface and run unchanged by every engine:

* ``tf`` (default): ``tf.distribute.MultiWorkerMirroredStrategy``. The step runs with
  ``strategy.run`` and its outputs are summed with ``strategy.reduce``. Workers come
  from ``TF_CONFIG`` if it is set, else from SLURM when ``srun`` started a job step of
  several tasks (``SLURM_STEP_NUM_TASKS > 1``) through ``SlurmClusterResolver`` with
  an explicit ``gpus_per_node`` and ``auto_set_gpu=False`` (without them the resolver
  calls nvidia-smi, or fails when each task sees one GPU); otherwise one process with
  the default strategy -- the same code with one replica.
* ``horovod``: one process per replica (``horovodrun``/``mpirun``, or plain ``srun``: when
  SLURM started a job step of several tasks and no launcher set Horovod's own variables,
  :func:`horovod_env_from_slurm` maps SLURM's onto Horovod's gloo rendezvous, and the first
  task of the step's first node starts Horovod's rendezvous server, before ``hvd.init()``);
  gradients are averaged with ``hvd.allreduce`` and the
  initial weights broadcast from rank 0 with ``hvd.broadcast``. Horovod's Keras
  wrappers are not used: with Keras 3 its ``DistributedOptimizer`` silently skips the
  averaging, and its tape and broadcast callback fail on Keras variables. Horovod is
  imported only when this engine is chosen.

Inside the step (replica context) the engine offers :meth:`Engine.all_mean` (the mean
over replicas of a list of tensors, e.g. gradients), :meth:`Engine.all_sum` and
:meth:`Engine.apply_gradients` (which knows whether the Keras optimizer aggregates
across replicas itself: under a ``tf.distribute`` strategy it sums the gradients of the
replicas, so the engine hands it the already averaged gradient divided by the number of
replicas -- the usual "loss divided by the number of replicas"). Averaging first lets
the step clip the global gradient, so a run on R replicas is, up to float rounding, the
run of one process on the global batch. Outside, :meth:`Engine.run`
runs the step on every local replica and sums the replicas' outputs, and
:meth:`Engine.distribute` gives each replica its own shard of a batch.

A process creates its engine once (:func:`get_engine`), before any other TensorFlow
operation: ``MultiWorkerMirroredStrategy`` configures the runtime's collective ops,
which is impossible once the runtime has started (call
:func:`resonant.models.vae.configure` for the thread pools first).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

ENGINES = ("tf", "horovod")
DEFAULT_ENGINE = "tf"
#: the first port of the workers of a SLURM job step (offset per job, step and task on a node)
SLURM_PORT_RANGE = (20000, 40000)

_ENGINE = None  # the process's engine (a strategy can be created once per process)
#: variables by which a launcher (horovodrun, mpirun) already placed a Horovod process: then SLURM's are not mapped
HOROVOD_LAUNCH_VARS = ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_GLOO_RENDEZVOUS_ADDR")
#: variables of an MPI launch (mpirun, srun --mpi=pmi2/pmix): an MPI build of Horovod then initialises through MPI
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
#: how long the other tasks of a SLURM step wait for the rendezvous server of the first one (seconds)
RENDEZVOUS_WAIT = 300.0


def _int(env: Mapping, key: str, default: int) -> int:
    try:
        return int(env.get(key, default))
    except (TypeError, ValueError):
        return default


def cluster_from_env(env: Mapping | None = None) -> dict:
    """How the ``tf`` engine finds its workers: {"source", "num_workers", "task_id"}.

    ``source`` is "tf_config" (``TF_CONFIG`` set: the explicit cluster wins), "slurm"
    (a SLURM job step of several tasks) or "single" (one process).
    """
    env = os.environ if env is None else env
    if env.get("TF_CONFIG"):
        try:
            cfg = json.loads(env["TF_CONFIG"])
            cluster, task = cfg["cluster"], cfg["task"]
            workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
            task_id = int(task["index"]) + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"TF_CONFIG is not a valid cluster description ({e}): {env['TF_CONFIG'][:200]}") from e
        return {"source": "tf_config", "num_workers": workers, "task_id": task_id}
    ntasks = _int(env, "SLURM_STEP_NUM_TASKS", 1)
    if ntasks > 1:
        return {"source": "slurm", "num_workers": ntasks, "task_id": _int(env, "SLURM_PROCID", 0)}
    return {"source": "single", "num_workers": 1, "task_id": 0}


def slurm_port_base(env: Mapping | None = None) -> int:
    """The first worker port of this SLURM job step: ``RESONANT_TF_PORT_BASE`` or one derived from the job and
    step ids (two job steps on one node must not both take TensorFlow's default 8888)."""
    env = os.environ if env is None else env
    if env.get("RESONANT_TF_PORT_BASE"):
        return int(env["RESONANT_TF_PORT_BASE"])
    lo, hi = SLURM_PORT_RANGE
    slot = (_int(env, "SLURM_JOB_ID", 0) * 31 + _int(env, "SLURM_STEP_ID", 0)) % ((hi - lo) // 64)
    return lo + 64 * slot


def slurm_cluster_resolver(env: Mapping | None = None):
    """A ``SlurmClusterResolver`` for this job step, without nvidia-smi and without touching CUDA_VISIBLE_DEVICES.

    Each task uses the GPUs it sees (SLURM binds one per task with ``--gpus-per-task=1``);
    a task that sees several GPUs while the node runs several tasks takes the one of its
    ``SLURM_LOCALID`` only. ``gpus_per_node`` is passed explicitly (tasks per node x GPUs per
    task), and the number of accelerators the strategy uses is the number this task
    really sees (0 on CPU nodes: the resolver's own arithmetic needs a positive number).
    """
    import tensorflow as tf
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (SlurmClusterResolver,
                                                                                        expand_tasks_per_node)

    env = os.environ if env is None else env
    tasks_here = max(expand_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", "1")) or [1])
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1 and tasks_here > 1:
        gpus = [gpus[_int(env, "SLURM_LOCALID", 0) % len(gpus)]]
        tf.config.set_visible_devices(gpus, "GPU")
    n_gpus = len(gpus)

    class _Resolver(SlurmClusterResolver):
        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {"GPU": n_gpus} if n_gpus else {}

    per_task = max(n_gpus, 1)
    return _Resolver(port_base=slurm_port_base(env), gpus_per_node=tasks_here * per_task, gpus_per_task=per_task,
                     auto_set_gpu=False)


def slurm_step_layout(env: Mapping | None = None) -> dict | None:
    """Where the tasks of this SLURM job step run, or None outside a step of several tasks.

    {"nodes": the step's node names, "tasks_per_node": tasks on each, "node": this task's node index,
    "rank", "local_rank", "size"}, from ``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_NODELIST``,
    ``SLURM_STEP_TASKS_PER_NODE``, ``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURMD_NODENAME``
    (else ``SLURM_NODEID``). A step without a node list (not started by srun) gives None.
    """
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (expand_hostlist,
                                                                                        expand_tasks_per_node)

    env = os.environ if env is None else env
    size = _int(env, "SLURM_STEP_NUM_TASKS", 1)
    if size <= 1 or not env.get("SLURM_STEP_NODELIST"):
        return None
    nodes = expand_hostlist(env["SLURM_STEP_NODELIST"])
    if env.get("SLURM_STEP_TASKS_PER_NODE"):
        per_node = expand_tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])
    elif len(nodes) == 1:
        per_node = [size]
    else:
        raise ValueError(f"SLURM job step on {len(nodes)} nodes without SLURM_STEP_TASKS_PER_NODE")
    if len(per_node) != len(nodes) or sum(per_node) != size:
        raise ValueError(f"inconsistent SLURM job step: {size} tasks, nodes {nodes}, tasks per node {per_node}")
    name = env.get("SLURMD_NODENAME")
    node = nodes.index(name) if name in nodes else _int(env, "SLURM_NODEID", 0)
    rank, local_rank = _int(env, "SLURM_PROCID", 0), _int(env, "SLURM_LOCALID", 0)
    if not (0 <= node < len(nodes) and 0 <= local_rank < per_node[node] and 0 <= rank < size):
        raise ValueError(f"task {rank} (local {local_rank}) on node index {node} does not fit the SLURM job step: "
                         f"nodes {nodes}, tasks per node {per_node}")
    return {"nodes": nodes, "tasks_per_node": per_node, "node": node, "rank": rank, "local_rank": local_rank,
            "size": size}


def horovod_env_from_slurm(env: Mapping | None = None) -> dict:
    """Horovod's variables for a process of a SLURM job step started by plain ``srun`` ({} when none are needed).

    What ``horovodrun --gloo`` gives each process it starts: rank, size, local and cross rank and size
    (a process's cross group: the tasks of the same local rank on the other nodes), its host name,
    the gloo controller and CPU operations, and the rendezvous server -- on the step's first node,
    at :func:`slurm_port_base` (from the job and step ids, or ``RESONANT_TF_PORT_BASE``). Empty
    outside a step of several tasks and when a launcher already set Horovod's variables.
    """
    env = os.environ if env is None else env
    if any(env.get(k) for k in HOROVOD_LAUNCH_VARS):
        return {}
    layout = slurm_step_layout(env)
    if layout is None:
        return {}
    per_node, node, local_rank = layout["tasks_per_node"], layout["node"], layout["local_rank"]
    cross = [n for n, tasks in enumerate(per_node) if tasks > local_rank]  # nodes with a task of this local rank
    return {
        "HOROVOD_RANK": str(layout["rank"]),
        "HOROVOD_SIZE": str(layout["size"]),
        "HOROVOD_LOCAL_RANK": str(local_rank),
        "HOROVOD_LOCAL_SIZE": str(per_node[node]),
        "HOROVOD_CROSS_RANK": str(cross.index(node)),
        "HOROVOD_CROSS_SIZE": str(len(cross)),
        "HOROVOD_HOSTNAME": layout["nodes"][node],
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": layout["nodes"][0],
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(slurm_port_base(env)),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
    }


def start_rendezvous_server(port: int, nodes: list, tasks_per_node: list):
    """Horovod's gloo rendezvous server (what ``horovodrun --gloo`` starts) on ``port`` of this host, in a
    background thread, for ``tasks_per_node[i]`` tasks on ``nodes[i]``; returns the server."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer
    from horovod.runner.util.threads import in_thread

    size = sum(tasks_per_node)
    plan, rank = [], 0  # the server needs the sizes of the global, local and cross groups (not the ranks)
    for i, (host, tasks) in enumerate(zip(nodes, tasks_per_node)):
        for local in range(tasks):
            plan.append(SlotInfo(hostname=host, rank=rank, local_rank=local, size=size, local_size=tasks,
                                 cross_rank=sum(t > local for t in tasks_per_node[:i]),
                                 cross_size=sum(t > local for t in tasks_per_node)))
            rank += 1
    try:
        httpd = RendezvousHTTPServer(("", int(port)), RendezvousHandler, 0)
    except OSError as e:
        raise RuntimeError(f"cannot start Horovod's rendezvous server on port {port} ({e}); set "
                           "RESONANT_TF_PORT_BASE to a free port for this job step") from e
    httpd.init(plan)
    in_thread(target=httpd.serve_forever)
    return httpd


def wait_for_port(host: str, port: int, timeout: float = RENDEZVOUS_WAIT) -> None:
    """Wait until ``host:port`` accepts connections (Horovod's own client gives up after 1.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Horovod's rendezvous server at {host}:{port} (started by the first task of "
                                   f"the SLURM job step) did not answer within {timeout:.0f} s ({e})") from e
            time.sleep(0.5)


class Engine:
    """What the train step needs from a data-parallel engine (this base class: one process, one replica)."""

    name = "single"

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.strategy = tf.distribute.get_strategy()
        self.num_replicas = 1
        self.rank = 0  # the (first) global replica id of this process
        self.local_replicas = [0]
        #: whether variables created in :meth:`scope` are distributed ones (not plain variables)
        self.distributed_variables = False

    @property
    def is_chief(self) -> bool:
        """Whether this process writes outputs (checkpoints, logs, models)."""
        return self.rank == 0

    def scope(self):
        """The context in which models and optimizers create their variables."""
        return self.strategy.scope()

    def distribute(self, shard):
        """The per-replica input of :meth:`run`: ``shard(replica_id)`` for each local replica."""
        return shard(self.rank)

    def run(self, fn, inputs):
        """``fn(inputs)`` on every replica (call inside a ``tf.function``); the sum of the outputs over replicas."""
        return fn(inputs)

    def all_sum(self, values: list) -> list:
        """In the step: the sum of each tensor of ``values`` over the replicas."""
        return list(values)

    def all_mean(self, values: list) -> list:
        """In the step: the mean of each tensor of ``values`` over the replicas."""
        return list(values)

    def apply_gradients(self, optimizer, grads: list, variables: list) -> None:
        """In the step: apply gradients that are already the same on every replica."""
        optimizer.apply(grads, variables)

    def broadcast_variables(self, variables: list) -> None:
        """Give every replica rank 0's values of ``variables`` (after they are created)."""

    def describe(self) -> str:
        return f"{self.name} engine, {self.num_replicas} replica(s)"


class TFEngine(Engine):
    """``tf.distribute``: ``MultiWorkerMirroredStrategy`` for several workers, else the default strategy."""

    name = "tf"

    def __init__(self, env: Mapping | None = None):
        super().__init__()
        tf = self.tf
        cluster = cluster_from_env(env)
        self.source = cluster["source"]
        if cluster["source"] == "single":
            self.strategy = tf.distribute.get_strategy()
        else:
            comm = tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
            resolver = slurm_cluster_resolver(env) if cluster["source"] == "slurm" else None
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                                      communication_options=comm)
        self.num_replicas = int(self.strategy.num_replicas_in_sync)
        n_local = len(self.strategy.extended.worker_devices) if cluster["source"] != "single" else 1
        self.rank = int(cluster["task_id"]) * n_local
        self.local_replicas = list(range(self.rank, self.rank + n_local))
        self.distributed_variables = cluster["source"] != "single"

    def distribute(self, shard):
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: shard(int(ctx.replica_id_in_sync_group)))

    def run(self, fn, inputs):
        out = self.strategy.run(fn, args=(inputs,))
        return self.strategy.reduce(self.tf.distribute.ReduceOp.SUM, out, axis=None)

    def all_sum(self, values):
        ctx = self.tf.distribute.get_replica_context()
        return list(ctx.all_reduce(self.tf.distribute.ReduceOp.SUM, list(values)))

    def all_mean(self, values):
        ctx = self.tf.distribute.get_replica_context()
        return list(ctx.all_reduce(self.tf.distribute.ReduceOp.MEAN, list(values)))

    def apply_gradients(self, optimizer, grads, variables):
        # the Keras optimizer sums the gradients of the replicas (a no-op with one replica)
        n = float(self.num_replicas)
        optimizer.apply([g / n for g in grads] if self.num_replicas > 1 else list(grads), variables)

    def describe(self):
        return f"tf engine ({self.source}), {self.num_replicas} replica(s), first local replica {self.rank}"


class HorovodEngine(Engine):
    """Horovod: ``hvd.allreduce`` of the gradients, an explicit ``hvd.broadcast`` of the initial weights."""

    name = "horovod"

    def __init__(self, env: Mapping | None = None):
        super().__init__()
        env = os.environ if env is None else env
        try:
            import horovod.tensorflow as hvd
        except ImportError as e:
            raise RuntimeError(
                "engine 'horovod' needs Horovod for TensorFlow (import horovod.tensorflow failed: "
                f"{e}); build it with the Makefile's Horovod target, or set the diffusion engine to 'tf'") from e
        self.rendezvous = None
        mapped = horovod_env_from_slurm(env)
        if mapped and not (hvd.mpi_built() and any(env.get(k) for k in MPI_RANK_VARS)):
            # plain srun: horovodrun's part (rendezvous server, per-process variables) done here
            os.environ.update(mapped)
            addr, port = mapped["HOROVOD_GLOO_RENDEZVOUS_ADDR"], int(mapped["HOROVOD_GLOO_RENDEZVOUS_PORT"])
            layout = slurm_step_layout(env)
            if layout["node"] == 0 and layout["local_rank"] == 0:
                self.rendezvous = start_rendezvous_server(port, layout["nodes"], layout["tasks_per_node"])
            wait_for_port(addr, port)
            log.info("SLURM job step mapped onto Horovod's gloo rendezvous at %s:%d (rank %s of %s)", addr, port,
                     mapped["HOROVOD_RANK"], mapped["HOROVOD_SIZE"])
        hvd.init()
        tf = self.tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
        expected = _int(env, "SLURM_STEP_NUM_TASKS", 1)
        if expected > 1 and hvd.size() != expected:
            raise RuntimeError(
                f"Horovod sees {hvd.size()} process(es) but the SLURM job step has {expected} tasks: srun started "
                "independent single-process jobs. Launch with horovodrun/mpirun, with plain srun (SLURM_STEP_NODELIST "
                "set and no HOROVOD_RANK: the engine then starts the gloo rendezvous), or with srun --mpi=pmix (or "
                "pmi2) and a Horovod built with MPI")
        self.hvd = hvd
        self.num_replicas = int(hvd.size())
        self.rank = int(hvd.rank())
        self.local_replicas = [self.rank]

    def run(self, fn, inputs):
        return self.hvd.allreduce(fn(inputs), op=self.hvd.Sum)

    def all_sum(self, values):
        return list(self.hvd.grouped_allreduce(list(values), op=self.hvd.Sum))

    def all_mean(self, values):
        return list(self.hvd.grouped_allreduce(list(values), op=self.hvd.Average))

    def broadcast_variables(self, variables):
        for i, v in enumerate(variables):
            v.assign(self.hvd.broadcast(self.tf.convert_to_tensor(v), root_rank=0, name=f"initial_{i}"))

    def describe(self):
        return f"horovod engine, {self.num_replicas} process(es), rank {self.rank}"


def get_engine(engine: str | Engine | None = None) -> Engine:
    """This process's engine: created by the first call (``engine`` in :data:`ENGINES`), the same object after.

    An :class:`Engine` instance is returned as it is. Asking for another engine once one
    exists raises ``ValueError``: a process can start only one.
    """
    global _ENGINE
    if isinstance(engine, Engine):
        return engine
    name = DEFAULT_ENGINE if engine is None else str(engine)
    if name not in ENGINES:
        raise ValueError(f"unknown training engine {name!r} (allowed: {', '.join(ENGINES)})")
    if _ENGINE is not None:
        if _ENGINE.name != name:
            raise ValueError(f"this process already runs the {_ENGINE.name!r} engine; it cannot start {name!r}")
        return _ENGINE
    _ENGINE = TFEngine() if name == "tf" else HorovodEngine()
    log.info("training with the %s", _ENGINE.describe())
    return _ENGINE
