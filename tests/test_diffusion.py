"""The diffusion branch: score networks, schedule, keyed noise, DDIM sampler, training, resumption, engines."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from resonant.models import diffusion as md

md.configure(threads=1)  # before any TensorFlow op

import tensorflow as tf  # noqa: E402

from resonant import diffusion as D  # noqa: E402
from resonant import io, pointcloud  # noqa: E402
from resonant.errors import InputError  # noqa: E402
from resonant.pointcloud import PointCloud  # noqa: E402
from resonant.train import keras_distributed as KD  # noqa: E402

from conftest import ROOT, toy_events  # noqa: E402
from generator_checks import check_generate_writes_a_valid_file, check_killed_training_resumes  # noqa: E402

TINY = {"width": 16, "blocks": 1, "heads": 2, "fourier_dim": 8, "batch_size": 32, "epochs": 2, "patience": 5,
        "ema_decay": 0.9}


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny jet model and particle model trained for two epochs on toy events (with their log and raw weights)."""
    work = tmp_path_factory.mktemp("diffusion")
    train, val = toy_events(256), toy_events(64, seed=1)
    records, raw = Records(), []
    logger = logging.getLogger("resonant.diffusion")
    logger.addHandler(records)
    level, logger.level = logger.level, logging.INFO
    try:
        jets, jet_hist = D.train_jet_model(train, val, TINY, 3, work / "jets",
                                           epoch_callback=lambda e, h, net: raw.append(_weights(net)))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    particles, part_hist = D.train_particle_model(train, val, TINY, 3, work / "particles")
    return {"jets": jets, "particles": particles, "jet_history": jet_hist, "particle_history": part_hist,
            "train": train, "val": val, "work": work, "jet_log": records.messages, "jet_raw_weights": raw}


def _weights(net) -> list:
    return [np.array(w) for w in net.weights]


# ------------------------------------------------------------------------------------------ settings

def test_defaults_are_the_published_settings():
    published = {"width": 128, "blocks": 6, "heads": 2, "fourier_dim": 64, "lr": 3e-4, "batch_size": 128,
                 "epochs": 300, "patience": 20, "ema_decay": 0.999, "grad_clip": 1.0}
    assert D.DEFAULTS == {"jet_model": published, "particle_model": {**published, "pt_rel": "log1m"},
                          "sampling": {"steps": 512, "batch_size": 4096}}
    assert D.settings_with_defaults("jet_model", {"width": 8})["width"] == 8
    assert D.settings_with_defaults("sampling", None) == D.DEFAULTS["sampling"]
    assert KD.ENGINES == ("tf", "horovod") and KD.DEFAULT_ENGINE == "tf"


@pytest.mark.parametrize("kind, settings, match", [
    ("jet_model", {"hidden": 4}, "hidden"),
    ("particle_model", {"widht": 4}, "widht"),
    ("sampling", {"step": 4}, "step"),
    ("jet_model", {"blocks": 0}, "blocks=0"),
    ("particle_model", {"ema_decay": 1.0}, "ema_decay"),
    ("jet_model", {"fourier_dim": 7}, "fourier_dim=7"),
    ("jet_model", {"lr": "3e-4"}, r"lr='3e-4' \(must be a number > 0\)"),  # YAML 1.1 reads 3e-4 as a string
    ("sampling", {"batch_size": 10.5}, "batch_size"),
    ("flow", {}, "kind 'flow'"),
])
def test_bad_settings_are_named(kind, settings, match):
    with pytest.raises(ValueError, match=match):
        D.settings_with_defaults(kind, settings)


# ------------------------------------------------------------------------------------------ networks

def _net(kind="particle_model", **kw):
    md.seed_all(0)
    return D.make_net(kind, D.settings_with_defaults(kind, {**TINY, "blocks": 2, **kw}))


def _cloud_batch(b=4, p=7, seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(p) < np.array([7, 3, 1, 5])[:b, None]).astype(np.float32)
    x = rng.normal(size=(b, p, 3)).astype(np.float32) * mask[..., None]
    return x, rng.random(b).astype(np.float32), rng.normal(size=(b, D.N_PARTICLE_CONDITION)).astype(np.float32), mask


def test_particle_score_is_permutation_equivariant_and_ignores_padding():
    net = _net()
    x, t, cond, mask = _cloud_batch()
    out = np.asarray(net((x, t, cond, mask)))
    assert out.shape == x.shape and np.all(out[mask == 0] == 0)
    perm = np.random.default_rng(1).permutation(x.shape[1])
    out_perm = np.asarray(net((x[:, perm], t, cond, mask[:, perm])))
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-5, atol=1e-6)
    # padded slots: their values and their number do not change the real particles' outputs
    junk = np.where(mask[..., None] > 0, x, 100 * np.random.default_rng(2).normal(size=x.shape)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(net((junk, t, cond, mask)))[mask > 0], out[mask > 0], rtol=1e-6, atol=1e-6)
    wide = np.concatenate([x, np.ones((4, 5, 3), np.float32)], axis=1)
    wide_mask = np.concatenate([mask, np.zeros((4, 5), np.float32)], axis=1)
    np.testing.assert_allclose(np.asarray(net((wide, t, cond, wide_mask)))[:, :7], out, rtol=1e-5, atol=1e-6)


def test_jet_score_is_equivariant_under_swapping_the_jets():
    net = _net("jet_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 5)).astype(np.float32)
    t, cond, mask = rng.random(6).astype(np.float32), rng.normal(size=(6, 1)).astype(np.float32), np.ones((6, 2))
    out = np.asarray(net((x, t, cond, mask)))
    np.testing.assert_allclose(np.asarray(net((x[:, ::-1], t, cond, mask))), out[:, ::-1], rtol=1e-5, atol=1e-6)
    # time and condition matter
    assert not np.allclose(np.asarray(net((x, 1 - t, cond, mask))), out)
    assert not np.allclose(np.asarray(net((x, t, cond + 1, mask))), out)


def test_network_sizes_and_fourier_features():
    net = _net(width=16, blocks=2)
    assert net.width == 16 and len(net.block_layers) == 2 and net.fourier.dim == 8
    big = D.make_net("particle_model", D.DEFAULTS["particle_model"])
    assert 1.0e6 < md.n_parameters(big) < 1.5e6  # the published size: 6 blocks of width 128
    # the random Fourier frequencies follow the seed and are not trained
    assert not any("frequencies" in v.path for v in net.trainable_weights)
    again = D.make_net("particle_model", D.settings_with_defaults("particle_model", {**TINY, "blocks": 2}))
    np.testing.assert_array_equal(np.asarray(net.fourier.freq), np.asarray(again.fourier.freq))
    with pytest.raises(ValueError, match="fourier_dim"):
        md.FourierTime(5)


# ------------------------------------------------------------------------------------------ schedule and noise

def test_cosine_schedule():
    t = np.linspace(0, 1, 101)
    a, s = (np.asarray(v, np.float64) for v in D.alpha_sigma(t))
    np.testing.assert_allclose(a**2 + s**2, 1, atol=1e-6)
    assert np.all(np.diff(a) < 0) and np.all(np.diff(s) > 0)
    lsnr = np.asarray(D.logsnr([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(lsnr, [20.0, 0.0, -20.0], atol=1e-2)  # float32 tan near pi / 2
    assert D.evaluations(512) == 1024 and D.evaluations(512, second_order=False) == 512


def test_keyed_noise_depends_only_on_the_example():
    keys = D.example_keys(7, 1, 3, index=np.arange(2000))
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == 2000
    z = D.keyed_normal(keys, 50)
    assert z.dtype == np.float32 and abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 0.01
    u = D.keyed_uniform(keys, 3)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    # an example's draws do not depend on the batch it is in
    sub = D.example_keys(7, 1, 3, index=np.array([5, 1999]))
    np.testing.assert_array_equal(D.keyed_normal(sub, 50), z[[5, 1999]])
    np.testing.assert_array_equal(D.keyed_normal(sub, 33), z[[5, 1999], :33])  # nor on the batch's width
    np.testing.assert_array_equal(D.keyed_normal(sub, 20, offset=30), z[[5, 1999], 30:])
    assert not np.array_equal(D.example_keys(7, 1, 4, index=[5]), keys[[5]])  # another epoch
    assert not np.array_equal(D.example_keys(8, 1, 3, index=[5]), keys[[5]])  # another seed


def test_epoch_batches_share_global_batches():
    batches = D.epoch_batches(103, 8, 3, seed=1, epoch=0)
    assert len(batches) == 103 // 24 and all(len(r) == 8 for b in batches for r in b)
    flat = np.concatenate([r for b in batches for r in b])
    assert len(np.unique(flat)) == len(flat)
    assert not np.array_equal(flat, np.concatenate([r for b in D.epoch_batches(103, 8, 3, 1, 1) for r in b]))
    val = D.epoch_batches(10, 2, 3, seed=1, epoch=5, train=False)
    np.testing.assert_array_equal(np.concatenate([r for b in val for r in b]), np.arange(10))
    assert [len(r) for r in val[-1]] == [2, 1, 1]


def test_training_batches_mask_the_noise():
    cloud = toy_events(8)
    jt, pt = pointcloud.JetTransform().fit(cloud.jets, cloud.mjj), pointcloud.ParticleTransform()
    data = D.ParticleData(cloud, jt, pt.fit(cloud.particles, cloud.mask))
    keys = D.example_keys(0, 1, 0, index=np.arange(6))
    b = data.batch(np.arange(6), keys)
    assert b["x"].shape == b["eps"].shape and b["x"].shape[1] == data.mask[:6].sum(1).max()
    assert np.all(b["eps"][b["mask"] == 0] == 0) and b["cond"].shape == (6, D.N_PARTICLE_CONDITION)
    jets = D.JetData(cloud, jt).batch(np.arange(6), keys)
    n = jt.inverse(jets["x"], cloud.mjj[:6])[..., 4]
    raw = jets["x"][..., 4] * jt.std[4] + jt.mean[4]
    assert np.all(np.abs(raw - cloud.jets[:6, :, 4]) <= 0.5) and not np.allclose(raw, cloud.jets[:6, :, 4])
    np.testing.assert_array_equal(n, np.maximum(cloud.jets[:6, :, 4], 1))  # dequantised, rounds back


# ------------------------------------------------------------------------------------------ sampler

W_MIX = np.array([0.3, 0.7])
MU_MIX = np.array([[-2.0, 1.0], [1.5, -0.5]])
COV_MIX = np.array([[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.05], [-0.05, 0.4]]])


def mixture_v(z, t):
    """The exact v-prediction of the 2-d gaussian mixture (W_MIX, MU_MIX, COV_MIX) under the diffusion."""
    a, s = (tf.cast(v, tf.float64) for v in D.alpha_sigma(t))
    z = tf.cast(z, tf.float64)
    logits, means = [], []
    for w, mu, cov in zip(W_MIX, MU_MIX, COV_MIX):
        cov_t = a**2 * cov + s**2 * np.eye(2)
        prec = tf.linalg.inv(cov_t)
        d = z - a * mu
        logits.append(np.log(w) - 0.5 * tf.einsum("ni,ij,nj->n", d, prec, d) - 0.5 * tf.math.log(tf.linalg.det(cov_t)))
        means.append(mu + a * tf.einsum("ni,ij,jk->nk", d, prec, cov))
    r = tf.nn.softmax(tf.stack(logits, axis=-1), axis=-1)
    x_hat = tf.einsum("nk,kni->ni", r, tf.stack(means))
    return tf.cast((a * z - x_hat) / s, tf.float32)


def _component_moments(x):
    """Per component of the true mixture (each point to its most probable one): fraction, mean, covariance."""
    logp = np.stack([np.log(w) - 0.5 * np.einsum("ni,ij,nj->n", x - mu, np.linalg.inv(c), x - mu)
                     - 0.5 * np.log(np.linalg.det(c)) for w, mu, c in zip(W_MIX, MU_MIX, COV_MIX)], axis=-1)
    k = logp.argmax(-1)
    return [(np.mean(k == i), x[k == i].mean(0), np.cov(x[k == i].T)) for i in range(2)]


def test_ddim_recovers_a_gaussian_mixture_and_the_correction_helps():
    """With the exact v of a known mixture: 32 second-order steps reproduce its components' fractions, means and
    covariances within 0.02 / 0.05 / 0.05 of exact samples; at 16 steps the second-order step is at least 4x
    closer to the exact ODE solution than plain DDIM."""
    n = 20000
    sample = tf.function(lambda z, steps, second: D.ddim_sample(mixture_v, z, steps, second),
                         reduce_retracing=True)
    z = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    x = np.asarray(sample(z, 32, True), np.float64)
    rng = np.random.default_rng(1)
    comp = rng.choice(2, n, p=W_MIX)
    exact = np.stack([rng.multivariate_normal(MU_MIX[k], COV_MIX[k]) for k in comp])
    for (f, m, c), (f0, m0, c0) in zip(_component_moments(x), _component_moments(exact)):
        assert abs(f - f0) < 0.02
        np.testing.assert_allclose(m, m0, atol=0.05)
        np.testing.assert_allclose(c, c0, atol=0.05)
    z = z[:2000]
    reference = np.asarray(sample(z, 1024, True))
    err = {order: float(np.abs(np.asarray(sample(z, 16, order)) - reference).mean()) for order in (False, True)}
    assert err[True] < err[False] / 4, err


# ------------------------------------------------------------------------------------------ training

def test_trained_models_and_histories(trained):
    for kind in ("jet", "particle"):
        h = trained[f"{kind}_history"]
        assert h["epoch"] == [0, 1] and h["epochs_run"] == 2 and h["resumed_at"] == []
        assert h["world_size"] == 1 and h["rank"] == 0 and h["engine"] == "tf"
        assert all(np.isfinite(h["train_loss"])) and all(np.isfinite(h["val_loss"]))
        assert h["lr"][0] == pytest.approx(TINY.get("lr", 3e-4)) and h["lr"][1] < h["lr"][0]  # cosine decay
        assert h["best_epoch"] == int(np.argmin(h["val_loss"]))
        json.dumps(h)  # plain numbers
    assert trained["jet_history"]["steps_per_epoch"] == 256 // 32
    assert trained["particle_history"]["steps_per_epoch"] == 512 // 32  # two clouds per event


def test_one_log_line_per_epoch_and_the_best_ema_weights_are_returned(trained):
    lines = [m for m in trained["jet_log"] if " epoch " in m]
    assert len(lines) == 2 and lines[0].startswith("jet model epoch 0/1: train")
    model, h = trained["jets"], trained["jet_history"]
    arrays, attrs = io.read_h5(trained["work"] / "jets" / "checkpoints" / "last.h5")
    for a, b in zip(_weights(model.net), D._stored(arrays, "best")):
        np.testing.assert_array_equal(a.reshape(-1), b.reshape(-1))
    assert attrs["state"]["best_epoch"] == h["best_epoch"] and attrs["state"]["finished"]
    # the returned weights are an average, not the raw weights of any epoch
    raw = trained["jet_raw_weights"]
    assert len(raw) == 2 and not any(all(np.array_equal(a, b) for a, b in zip(_weights(model.net), r)) for r in raw)


class Interrupt(Exception):
    pass


def _interrupt_at(epoch):
    def callback(e, history, net):
        if e == epoch:
            raise Interrupt(f"stopped after epoch {e}")
    return callback


def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    history = check_killed_training_resumes(D, TINY, tmp_path, "last.h5")
    assert len(history["val_loss"]) == 4


def test_interrupted_training_resumes_from_last_checkpoint_and_early_stopping(tmp_path, caplog):
    train, val = toy_events(128), toy_events(32, seed=1)
    settings = {**TINY, "epochs": 3}
    with pytest.raises(Interrupt):
        D.train_jet_model(train, val, settings, 5, tmp_path / "a", epoch_callback=_interrupt_at(1))
    assert (tmp_path / "a" / "checkpoints" / "last.h5").exists()
    resumed, history = D.train_jet_model(train, val, settings, 5, tmp_path / "a")
    assert history["epoch"] == [0, 1, 2] and history["resumed_at"] == [2] and history["epochs_run"] == 3
    # the same as an uninterrupted run
    straight, h2 = D.train_jet_model(train, val, settings, 5, tmp_path / "b")
    assert history["train_loss"] == h2["train_loss"] and history["val_loss"] == h2["val_loss"]
    for a, b in zip(_weights(resumed.net), _weights(straight.net)):
        np.testing.assert_array_equal(a, b)
    # a finished training is not run again ...
    again, h3 = D.train_jet_model(train, val, settings, 5, tmp_path / "a", epoch_callback=_interrupt_at(0))
    assert h3["epoch"] == [0, 1, 2]
    assert all(np.array_equal(a, b) for a, b in zip(_weights(again.net), _weights(resumed.net)))
    # ... but other settings start afresh; early stopping: with a vanishing learning rate the validation
    # loss never improves after epoch 0, so patience 1 stops after epoch 1
    with caplog.at_level(logging.INFO, logger="resonant.diffusion"):
        _, h4 = D.train_jet_model(train, val, {**settings, "epochs": 6, "patience": 1, "lr": 1e-30,
                                               "ema_decay": 0.0}, 5, tmp_path / "a")
    assert h4["resumed_at"] == [] and h4["epochs_run"] == 2 and h4["best_epoch"] == 0
    assert h4["val_loss"][1] == h4["val_loss"][0]
    assert any("early stop after epoch 1" in r.getMessage() for r in caplog.records)
    assert any("training afresh" in r.getMessage() for r in caplog.records)


def test_training_input_errors(tmp_path):
    train, val = toy_events(16), toy_events(8, seed=1)
    with pytest.raises(ValueError, match="lower batch_size"):
        D.train_jet_model(train, val, {**TINY, "batch_size": 64}, 0, tmp_path)
    with pytest.raises(ValueError, match="unknown diffusion.jet_model setting"):
        D.train_jet_model(train, val, {"hidden": 3}, 0, tmp_path)
    with pytest.raises(ValueError, match="particle slots"):
        D.train_particle_model(train, toy_events(8, p=6), TINY, 0, tmp_path)
    with pytest.raises(ValueError, match="unknown training engine 'jax'"):
        D.train_jet_model(train, val, {**TINY, "batch_size": 8}, 0, tmp_path, engine="jax")


# ------------------------------------------------------------------------------------------ sampling

def test_jet_and_particle_samples(trained):
    mjj = np.random.default_rng(2).uniform(3300, 3700, 30)
    jets = trained["jets"].sample(mjj, steps=4, seed=1, batch_size=16)
    assert jets.shape == (30, 2, 5) and np.all(jets[:, 0, 0] >= jets[:, 1, 0])
    assert np.all(jets[..., 4] >= 1) and np.all(jets[..., 4] == np.rint(jets[..., 4])) and np.all(jets[..., 3] >= 0)
    particles, mask = trained["particles"].sample(jets, mjj, 12, steps=4, seed=1, batch_size=4)
    assert particles.shape == (30, 2, 12, 3) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(-1), pointcloud.n_valid(jets, 12))
    assert np.all(particles[~mask] == 0)
    pt = np.where(mask, particles[..., 0], -1.0)
    assert np.all(np.diff(pt, axis=-1)[mask[..., 1:]] <= 0)  # leading constituents first
    np.testing.assert_array_equal(trained["jets"].sample(mjj, steps=4, seed=1, batch_size=16), jets)
    assert not np.array_equal(trained["jets"].sample(mjj, steps=4, seed=2, batch_size=16), jets)
    first = trained["jets"].sample(mjj, steps=4, seed=1, batch_size=16, second_order=False)
    assert first.shape == jets.shape and not np.array_equal(first, jets)


def test_save_load_round_trip_and_bad_files(trained, tmp_path):
    mjj = np.full(5, 3500.0)
    for kind in ("jets", "particles"):
        trained[kind].save(tmp_path / f"{kind}.h5")
        side = json.loads((tmp_path / f"{kind}.json").read_text())
        assert side["kind"] == trained[kind].kind and side["history"]["epoch"] == [0, 1]
    jets2 = D.JetDiffusion.load(tmp_path / "jets.h5")
    parts2 = D.load(tmp_path / "particles.h5")
    assert isinstance(parts2, D.ParticleDiffusion) and parts2.max_particles == 12
    jets = trained["jets"].sample(mjj, steps=3, seed=4)
    np.testing.assert_array_equal(jets2.sample(mjj, steps=3, seed=4), jets)
    for a, b in zip(trained["particles"].sample(jets, mjj, steps=3, seed=4), parts2.sample(jets, mjj, steps=3, seed=4)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="holds a particle_model"):
        D.JetDiffusion.load(tmp_path / "particles.h5")
    with pytest.raises(InputError, match="does not exist"):
        D.load(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable diffusion model"):
        D.load(tmp_path / "junk.h5")
    with pytest.raises(ValueError, match="finite and positive"):
        trained["jets"].sample([3500.0, -1.0], steps=2)
    with pytest.raises(ValueError, match="shape"):
        trained["particles"].sample(jets[:, :1], mjj, steps=2)


def test_generate_writes_a_valid_file(trained, tmp_path, caplog):
    info = check_generate_writes_a_valid_file(D, trained, tmp_path, caplog)
    assert info["evaluations"] == 6  # 3 second-order steps



# ------------------------------------------------------------------------------------------ engines

def test_cluster_from_env():
    assert KD.cluster_from_env({}) == {"source": "single", "num_workers": 1, "task_id": 0}
    assert KD.cluster_from_env({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "8"})["source"] == "single"
    assert KD.cluster_from_env({"SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "5"}) == {
        "source": "slurm", "num_workers": 16, "task_id": 5}
    cfg = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}})
    assert KD.cluster_from_env({"TF_CONFIG": cfg, "SLURM_STEP_NUM_TASKS": "4"}) == {
        "source": "tf_config", "num_workers": 2, "task_id": 1}
    with pytest.raises(ValueError, match="TF_CONFIG"):
        KD.cluster_from_env({"TF_CONFIG": "{nonsense"})
    ports = {KD.slurm_port_base({"SLURM_JOB_ID": str(j), "SLURM_STEP_ID": "0"}) for j in range(100, 110)}
    assert len(ports) == 10 and all(KD.SLURM_PORT_RANGE[0] <= p < KD.SLURM_PORT_RANGE[1] for p in ports)
    assert KD.slurm_port_base({"RESONANT_TF_PORT_BASE": "31000"}) == 31000


def test_horovod_env_from_slurm():
    """srun's variables become what horovodrun --gloo gives each process (no Horovod needed)."""
    step = {"SLURM_STEP_NUM_TASKS": "5", "SLURM_STEP_NODELIST": "gpu[01-02],cpu7", "SLURM_STEP_TASKS_PER_NODE": "2,2,1",
            "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "3"}
    port = str(KD.slurm_port_base(step))
    common = {"HOROVOD_SIZE": "5", "HOROVOD_GLOO_RENDEZVOUS_ADDR": "gpu01", "HOROVOD_GLOO_RENDEZVOUS_PORT": port,
              "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"}
    # cyclic distribution: rank 3 is the second task on the second node (SLURMD_NODENAME names the node)
    env = {**step, "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURMD_NODENAME": "gpu02", "SLURM_NODEID": "9"}
    assert KD.horovod_env_from_slurm(env) == {
        **common, "HOROVOD_RANK": "3", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2",
        "HOROVOD_CROSS_RANK": "1", "HOROVOD_CROSS_SIZE": "2", "HOROVOD_HOSTNAME": "gpu02"}
    # the single task of the third node: third of the three local-rank-0 tasks (SLURM_NODEID without SLURMD_NODENAME)
    env = {**step, "SLURM_PROCID": "4", "SLURM_LOCALID": "0", "SLURM_NODEID": "2"}
    assert KD.horovod_env_from_slurm(env) == {
        **common, "HOROVOD_RANK": "4", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "1",
        "HOROVOD_CROSS_RANK": "2", "HOROVOD_CROSS_SIZE": "3", "HOROVOD_HOSTNAME": "cpu7"}
    layout = KD.slurm_step_layout(env)
    assert layout["nodes"] == ["gpu01", "gpu02", "cpu7"] and layout["tasks_per_node"] == [2, 2, 1]
    # one node: the tasks per node may be missing; RESONANT_TF_PORT_BASE sets the port
    one = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "localhost", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
           "RESONANT_TF_PORT_BASE": "31000"}
    assert KD.horovod_env_from_slurm(one) == {
        "HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2",
        "HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "1", "HOROVOD_HOSTNAME": "localhost",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": "localhost", "HOROVOD_GLOO_RENDEZVOUS_PORT": "31000",
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"}
    # nothing to map: one process, one task, no node list (not srun), or a launcher already placed the process
    for env in ({}, {**one, "SLURM_STEP_NUM_TASKS": "1"}, {"SLURM_STEP_NUM_TASKS": "2"},
                {**one, "HOROVOD_RANK": "0"}, {**one, "HOROVOD_GLOO_RENDEZVOUS_ADDR": "host"}):
        assert KD.horovod_env_from_slurm(env) == {}
    for bad in ({**step, "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}, {**step, "SLURM_STEP_TASKS_PER_NODE": ""},
                {**step, "SLURMD_NODENAME": "cpu7", "SLURM_LOCALID": "1"}):
        with pytest.raises(ValueError, match="SLURM job step"):
            KD.horovod_env_from_slurm(bad)


def test_slurm_cluster_resolver_without_gpus(monkeypatch):
    """4 tasks on 2 CPU nodes: no nvidia-smi, no CUDA_VISIBLE_DEVICES, a worker per task, no accelerators."""
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "node[1-2]",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    resolver = KD.slurm_cluster_resolver()
    spec = resolver.cluster_spec().as_dict()
    base = KD.slurm_port_base(env)
    assert spec == {"worker": [f"node1:{base}", f"node1:{base + 1}", f"node2:{base}", f"node2:{base + 1}"]}
    assert resolver.get_task_info() == ("worker", 3) and resolver.num_accelerators() == {}
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_engine_is_one_per_process_and_horovod_is_optional():
    eng = KD.get_engine("tf")
    assert KD.get_engine() is eng and KD.get_engine(eng) is eng
    assert eng.num_replicas == 1 and eng.is_chief and eng.local_replicas == [0]
    with pytest.raises(ValueError, match="already runs the 'tf' engine"):
        KD.get_engine("horovod")
    with pytest.raises(ValueError, match="unknown training engine"):
        KD.get_engine("torch")
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="needs Horovod"):
            KD.HorovodEngine()


def fake_horovod(monkeypatch, size=1):
    """A stand-in for ``horovod.tensorflow`` with ``size`` processes and this one rank 0; records the calls."""
    calls = []
    hvd = types.ModuleType("horovod.tensorflow")
    hvd.Sum, hvd.Average = "Sum", "Average"
    hvd.init = lambda: calls.append("init")
    hvd.size, hvd.rank, hvd.local_rank = (lambda: size), (lambda: 0), (lambda: 0)

    def allreduce(t, op=None, name=None):
        calls.append(("allreduce", op))
        return t

    def grouped_allreduce(ts, op=None, name=None):
        calls.append(("grouped_allreduce", op, len(ts)))
        return list(ts)

    def broadcast(t, root_rank, name=None):
        calls.append(("broadcast", root_rank))
        return t

    hvd.allreduce, hvd.grouped_allreduce, hvd.broadcast = allreduce, grouped_allreduce, broadcast
    parent = types.ModuleType("horovod")
    parent.tensorflow = hvd
    monkeypatch.setitem(sys.modules, "horovod", parent)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", hvd)
    return calls


def test_horovod_engine_with_one_process_is_the_single_process_training(trained, tmp_path, monkeypatch):
    """The horovod engine's step (through a stand-in Horovod of one process) trains exactly as the tf engine."""
    calls = fake_horovod(monkeypatch)
    eng = KD.HorovodEngine(env={})
    assert eng.num_replicas == 1 and eng.is_chief and eng.name == "horovod"
    model, h = D.train_jet_model(trained["train"], trained["val"], TINY, 3, tmp_path, engine=eng)
    assert h["engine"] == "horovod"
    assert h["train_loss"] == trained["jet_history"]["train_loss"]
    assert h["val_loss"] == trained["jet_history"]["val_loss"]
    for a, b in zip(_weights(model.net), _weights(trained["jets"].net)):
        np.testing.assert_array_equal(a, b)
    n_weights, n_trainable = len(model.net.weights), len(model.net.trainable_weights)
    assert calls.count(("broadcast", 0)) == n_weights  # the initial weights, explicitly
    assert ("grouped_allreduce", "Average", n_trainable) in calls  # the gradients
    assert ("grouped_allreduce", "Sum", 1) in calls and ("allreduce", "Sum") in calls  # counts and step sums
    with pytest.raises(RuntimeError, match="independent single-process jobs"):
        KD.HorovodEngine(env={"SLURM_STEP_NUM_TASKS": "2"})


WORKER_SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from test_diffusion import DIST, D, KD, toy_events  # configures TensorFlow (1 thread) first

    out, engine = Path(sys.argv[1]), sys.argv[3]
    eng = KD.get_engine(engine)
    train, val = toy_events(64), toy_events(25, seed=1)

    def record(epoch, history, net):
        np.savez(out / f"raw-{eng.rank}.npz", *[np.asarray(w) for w in net.weights])

    model, history = D.train_particle_model(train, val, DIST, 4, out / f"work-{eng.rank}", engine=eng,
                                            epoch_callback=record)
    np.savez(out / f"ema-{eng.rank}.npz", *[np.asarray(w) for w in model.net.weights])
    (out / f"history-{eng.rank}.json").write_text(json.dumps(history))
''')
#: per replica: 8 clouds a step (128 clouds, 2 replicas: 8 steps an epoch)
DIST = {**TINY, "batch_size": 8, "lr": 1e-3}


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TF_CONFIG", "HOROVOD_", "OMPI_", "PMI_", "PMIX_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _check_two_replicas(out, single_process):
    """Replicas identical; the same as one process on the global batch (16 clouds a step, lr x 2)."""
    raw = [np.load(out / f"raw-{r}.npz") for r in (0, 1)]
    ema = [np.load(out / f"ema-{r}.npz") for r in (0, 1)]
    for a, b in ((raw[0], raw[1]), (ema[0], ema[1])):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    history = json.loads((out / "history-0.json").read_text())
    assert history["world_size"] == 2 and history["steps_per_epoch"] == 8 and history["epoch"] == [0, 1]
    model, h1 = single_process
    assert h1["steps_per_epoch"] == 8
    np.testing.assert_allclose(history["train_loss"], h1["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(history["val_loss"], h1["val_loss"], rtol=1e-6)
    # every weight within float rounding, except the attention key biases: their gradient is zero up to
    # rounding (softmax ignores a shift common to all keys), which Adamax turns into steps of +-lr
    for i, w in enumerate(model.net.weights):
        if "key/bias" not in w.path:
            np.testing.assert_allclose(ema[0][f"arr_{i}"], np.asarray(w), atol=1e-6, err_msg=w.path)
    # ... which do not change the function
    theirs = D.make_net("particle_model", model.settings)
    for i, w in enumerate(theirs.weights):
        w.assign(ema[0][f"arr_{i}"])
    batch = _cloud_batch()
    np.testing.assert_allclose(np.asarray(theirs(batch)), np.asarray(model.net(batch)), atol=1e-5)


@pytest.fixture(scope="module")
def single_process_on_the_global_batch(tmp_path_factory):
    train, val = toy_events(64), toy_events(25, seed=1)  # the last validation batch: 2 clouds
    return D.train_particle_model(train, val, {**DIST, "batch_size": 16, "lr": 2e-3}, 4,
                                  tmp_path_factory.mktemp("single"))


def test_tf_engine_two_workers_match_one_process(tmp_path, single_process_on_the_global_batch):
    """MultiWorkerMirroredStrategy, 2 CPU processes on localhost (TF_CONFIG)."""
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    envs = [{"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}
            for i in range(2)]
    _run_workers(tmp_path, "tf", envs, timeout=240)
    _check_two_replicas(tmp_path, single_process_on_the_global_batch)


def _run_workers(tmp_path, engine: str, envs: list[dict], timeout: int) -> None:
    """Start the worker script once per environment in ``envs`` (in that order), all of them at once; each must
    succeed."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    procs = []
    for extra in envs:
        env = {**_clean_env(), **extra}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), str(ROOT / "tests"), engine],
                                      env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)


def _has_horovod() -> bool:
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_horovod(), reason="Horovod is not installed (the Makefile's Horovod target builds it)")
def test_horovod_engine_two_processes_match_one_process(tmp_path, single_process_on_the_global_batch):
    """Horovod (hvd.allreduce + explicit broadcast), 2 CPU processes through horovodrun (gloo)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    proc = subprocess.run([horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, str(script),
                           str(tmp_path), str(ROOT / "tests"), "horovod"], env=_clean_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    _check_two_replicas(tmp_path, single_process_on_the_global_batch)


@pytest.mark.skipif(not _has_horovod(), reason="Horovod is not installed (the Makefile's Horovod target builds it)")
def test_horovod_engine_under_plain_srun_matches_one_process(tmp_path, single_process_on_the_global_batch):
    """Horovod started as by plain ``srun`` (two tasks on one node, SLURM's variables, no horovodrun): the engine
    maps them onto the gloo rendezvous, the first task serves it."""
    port = _free_ports(1)[0]
    envs = [dict(SLURM_STEP_NUM_TASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_NODEID="0",
                 SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2", SLURM_JOB_ID="4242",
                 SLURM_STEP_ID="0", RESONANT_TF_PORT_BASE=str(port))
            for i in (1, 0)]  # the task that serves the rendezvous starts last
    _run_workers(tmp_path, "horovod", envs, timeout=300)
    _check_two_replicas(tmp_path, single_process_on_the_global_batch)
