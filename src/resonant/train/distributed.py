"""Distributed-training settings for Lightning, read from the launcher's environment.

On a laptop a training stage runs as one process. Under SLURM with several
tasks (``srun`` starts one process per task, e.g. one per GPU), Lightning's
SLURM environment finds each process's rank; the Trainer only needs the
number of nodes, the devices per node and the DDP strategy. On CPUs DDP uses
the gloo backend (Lightning's default there), on GPUs nccl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def _int(env: Mapping, key: str, default: int) -> int:
    try:
        return int(env.get(key, default))
    except ValueError:
        return default


def cluster_from_env(env: Mapping | None = None) -> dict:
    """Trainer keyword arguments: ``num_nodes``, ``devices``, ``strategy``, ``accelerator``.

    One process (``devices=1``, strategy "auto") unless started by ``srun`` as a job
    step of several tasks (``SLURM_STEP_NUM_TASKS > 1``): then ``num_nodes`` is the
    step's node count, ``devices`` its tasks per node and the strategy "ddp". The
    step's variables, not the job's: a job of many tasks whose command runs once
    (``srun -n 1``) must not wait for workers that never start. The accelerator is
    "gpu" when CUDA is available, else "cpu".
    """
    import torch

    real = env is None
    env = os.environ if env is None else env
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    ntasks = _int(env, "SLURM_STEP_NUM_TASKS", 1)
    if ntasks > 1:
        nodes = max(1, _int(env, "SLURM_STEP_NUM_NODES", 1))
        devices = max(1, ntasks // nodes)
        if real and "SLURM_NTASKS_PER_NODE" not in env:
            # Lightning's SLURM environment insists on it; jobs asking for tasks per GPU
            # (the profile's one task per GPU) do not get it from SLURM.
            os.environ["SLURM_NTASKS_PER_NODE"] = str(devices)
        return {"num_nodes": nodes, "devices": devices, "strategy": "ddp", "accelerator": accelerator}
    return {"num_nodes": 1, "devices": 1, "strategy": "auto", "accelerator": accelerator}


def is_global_zero(env: Mapping | None = None) -> bool:
    """Whether this process is the first worker (the one that writes outputs)."""
    env = os.environ if env is None else env
    if "RANK" in env:
        return _int(env, "RANK", 0) == 0
    if _int(env, "SLURM_STEP_NUM_TASKS", 1) > 1:
        return _int(env, "SLURM_PROCID", 0) == 0
    return True
