"""Checks that both point-cloud generators (flow matching, diffusion) must pass, written once.

Each generator's test file trains its small models (its ``trained`` fixture) and calls
these with its module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resonant import pointcloud

from conftest import toy_events


def check_generate_writes_a_valid_file(module, trained: dict, tmp_path, caplog) -> dict:
    """``module.generate`` streams a valid generated-background file, fixed by its seed; returns its info."""
    name = module.__name__.rsplit(".", 1)[-1]
    mjj = np.random.default_rng(3).uniform(3300, 3700, 50)
    paths = [tmp_path / "gen-a.h5", tmp_path / "gen-b.h5"]
    for path in paths:
        with pointcloud.GeneratedWriter(path, 12, attrs={"model": name}) as writer:
            with caplog.at_level("INFO", logger="resonant.generative"):
                info = module.generate(trained["jets"], trained["particles"], mjj, 12, steps=3, batch_size=20,
                                       seed=9, writer=writer)
    assert info["events"] == 50
    # 3 batches per file, 2 files: a progress line per batch
    assert sum("generated batch" in r.getMessage() and "events/s" in r.getMessage() for r in caplog.records) == 6
    cloud = pointcloud.read_generated(paths[0])
    assert len(cloud) == 50 and cloud.max_particles == 12
    np.testing.assert_allclose(cloud.mjj, mjj.astype(np.float32))
    np.testing.assert_array_equal(cloud.mask.sum(-1), pointcloud.n_valid(cloud.jets, 12))
    assert np.all(cloud.particles[~cloud.mask] == 0)
    assert pointcloud.generated_attrs(paths[0])["n_events"] == 50
    assert pointcloud.generated_attrs(paths[0])["model"] == name
    other = pointcloud.read_generated(paths[1])
    for field in ("jets", "particles", "mask"):  # the seed fixes the file
        np.testing.assert_array_equal(getattr(cloud, field), getattr(other, field))
    # batches get different noise: two batches with the same m_jj differ
    with pointcloud.GeneratedWriter(tmp_path / "c.h5", 12) as writer:
        module.generate(trained["jets"], trained["particles"], np.full(8, 3500.0), 12, steps=3, batch_size=4,
                        seed=9, writer=writer)
    jets = pointcloud.read_generated(tmp_path / "c.h5").jets
    assert not np.array_equal(jets[:4], jets[4:])
    with pointcloud.GeneratedWriter(tmp_path / "d.h5", 10) as writer, pytest.raises(ValueError, match="slots"):
        module.generate(trained["jets"], trained["particles"], mjj, 12, steps=3, writer=writer)
    with pytest.raises(ValueError, match="GeneratedWriter"):
        module.generate(trained["jets"], trained["particles"], mjj, 12, steps=3)
    return info


# A training process that SIGKILLs itself (no exception handler, no cleanup runs) when epoch 2 begins, after
# epoch 1's checkpoint is written: the batch system's kill, at a point a test can rely on.
_KILLED_TRAINING = '''
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from conftest import toy_events
from resonant.generative import backend

family, workdir, settings = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
module = backend(family, threads=1)
train, val = toy_events(128), toy_events(32, seed=1)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if family == "flow_matching":
    import lightning as L

    class Kill(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 2:
                die()

    trainer = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "callbacks": [Kill()]}
    module.train_jet_model(train, val, settings, 5, workdir, trainer)
else:
    module.train_jet_model(train, val, settings, 5, workdir, epoch_callback=lambda e, h, n: die() if e == 1 else None)
print("not killed")
'''


def check_killed_training_resumes(module, settings: dict, tmp_path, checkpoint: str, **options) -> dict:
    """A jet-model training killed (SIGKILL) after epoch 1 resumes from its checkpoint at epoch 2; returns the
    resumed history. ``options`` go to ``module.train_jet_model`` (e.g. the trainer of flow matching)."""
    family = module.__name__.rsplit(".", 1)[-1]
    settings = {**settings, "epochs": 4}
    workdir = tmp_path / "killed"
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_TRAINING, tests, family, str(workdir), json.dumps(settings)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-3000:]
    assert (workdir / "checkpoints" / checkpoint).exists()
    _, history = module.train_jet_model(toy_events(128), toy_events(32, seed=1), settings, 5, workdir, **options)
    assert history["resumed_at"] == [2] and history["epoch"] == [0, 1, 2, 3] and history["epochs_run"] == 4
    return history
