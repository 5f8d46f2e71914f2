"""The flow-matching branch: EPiC and MLP velocities, loss, EMA, training, resumption, DDP, sampling, generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import lightning as L
import numpy as np
import pytest
import torch

from resonant import flow_matching as FM
from resonant import pointcloud
from resonant.errors import InputError
from resonant.models.epic import EPiCLayer, EPiCVelocity, MLPVelocity, time_embedding
from resonant.pointcloud import PointCloud, sampling_chunks

from conftest import ROOT, toy_events
from generator_checks import check_generate_writes_a_valid_file, check_killed_training_resumes

torch.set_num_threads(1)

ONE_CPU = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}  # also inside a SLURM job
TINY_JETS = {"hidden": 16, "layers": 2, "batch_size": 64, "epochs": 2, "patience": 5, "ema_decay": 0.9}
TINY_PARTICLES = {"hidden": 16, "global_dim": 16, "layers": 2, "batch_size": 64, "epochs": 2, "patience": 5,
                  "ema_decay": 0.9}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny jet model and particle model trained for two epochs on toy events."""
    work = tmp_path_factory.mktemp("fm")
    train, val = toy_events(256), toy_events(64, seed=1)
    jet_flow, jet_hist = FM.train_jet_model(train, val, TINY_JETS, 3, work / "jets", ONE_CPU)
    particle_flow, part_hist = FM.train_particle_model(train, val, TINY_PARTICLES, 3, work / "particles", ONE_CPU)
    return {"jets": jet_flow, "particles": particle_flow, "jet_history": jet_hist, "particle_history": part_hist,
            "train": train, "val": val, "work": work}


# ------------------------------------------------------------------------------------------ settings

def test_defaults_are_the_published_settings():
    assert FM.DEFAULTS["jet_model"] == {"hidden": 128, "layers": 3, "lr": 1e-3, "weight_decay": 0.0,
                                        "batch_size": 1024, "epochs": 100, "patience": 10, "warmup_epochs": 1,
                                        "ema_decay": 0.999, "grad_clip": 0.5, "sigma": 1e-4}
    assert FM.DEFAULTS["particle_model"] == {"hidden": 150, "global_dim": 256, "layers": 8, "lr": 1e-3,
                                             "weight_decay": 5e-5, "batch_size": 1024, "epochs": 100, "patience": 10,
                                             "warmup_epochs": 1, "ema_decay": 0.999, "grad_clip": 0.5, "sigma": 1e-4,
                                             "pt_rel": "log1m"}
    assert FM.DEFAULTS["sampling"] == {"steps": 250, "batch_size": 4096}
    assert FM.settings_with_defaults("jet_model", {"hidden": 8})["hidden"] == 8
    assert FM.settings_with_defaults("sampling", None) == FM.DEFAULTS["sampling"]


@pytest.mark.parametrize("kind, settings, match", [
    ("jet_model", {"global_dim": 4}, "global_dim"),
    ("particle_model", {"hiden": 4}, "hiden"),
    ("sampling", {"step": 4}, "step"),
    ("jet_model", {"layers": 0}, "layers=0"),
    ("particle_model", {"ema_decay": 1.0}, "ema_decay"),
    ("jet_model", {"sigma": -1.0}, "sigma"),
    ("jet_model", {"pt_rel": "log"}, "pt_rel"),  # a setting of the particle model only
    ("particle_model", {"pt_rel": "sqrt"}, r"pt_rel='sqrt' \(must be one of log1m, log\)"),
    ("jet_model", {"lr": "1e-3"}, r"lr='1e-3' \(must be a number > 0\)"),  # YAML 1.1 reads 1e-3 as a string
    ("sampling", {"batch_size": 10.5}, "batch_size"),
    ("flow", {}, "kind 'flow'"),
])
def test_bad_settings_are_named(kind, settings, match):
    with pytest.raises(ValueError, match=match):
        FM.settings_with_defaults(kind, settings)


# ------------------------------------------------------------------------------------------ networks

def _cloud_batch(b=4, p=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, p, 3, generator=g)
    mask = torch.arange(p) < torch.tensor([7, 3, 1, 5])[:b, None]
    return x, torch.rand(b, generator=g), torch.randn(b, 5, generator=g), mask


@pytest.mark.parametrize("pt_rel", ["log1m", "log"])
def test_particle_preprocessing_inverts_and_round_trips_through_its_dict(pt_rel):
    cloud = toy_events(200, p=12, seed=3)
    t = pointcloud.ParticleTransform(pt_rel).fit(cloud.particles, cloud.mask)
    x = t.transform(cloud.particles, cloud.mask)
    real = x[cloud.mask]
    np.testing.assert_allclose(real.mean(0), 0.0, atol=1e-5)  # standardised over real particles
    np.testing.assert_allclose(real.std(0), 1.0, atol=1e-4)
    assert np.all(x[~cloud.mask] == 0)
    back = pointcloud.ParticleTransform.from_dict(json.loads(json.dumps(t.to_dict()))).inverse(x, cloud.mask)
    np.testing.assert_allclose(back, cloud.particles, rtol=1e-4, atol=1e-5)
    # log pT_rel resolves the soft end: the softest tenth of the particles spans more of the standardised axis
    soft = cloud.particles[cloud.mask][:, 0] < np.quantile(cloud.particles[cloud.mask][:, 0], 0.1)
    spread = np.ptp(real[soft, 0])
    assert (spread > 0.5) if pt_rel == "log" else (spread < 0.5)


def test_particle_preprocessing_of_old_files_and_bad_choice():
    old = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # written before the choice existed
    assert pointcloud.ParticleTransform.from_dict(old).pt_rel == "log1m"
    with pytest.raises(ValueError, match="log1m"):
        pointcloud.ParticleTransform("sqrt")


def test_epic_velocity_is_permutation_equivariant():
    torch.manual_seed(0)
    net = EPiCVelocity(3, 5, hidden=16, global_dim=8, layers=3).eval()
    x, t, cond, mask = _cloud_batch()
    out = net(x, t, cond, mask)
    perm = torch.randperm(x.shape[1])
    out_perm = net(x[:, perm], t, cond, mask[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-5, atol=1e-6)


def test_epic_padded_particles_do_not_matter_and_are_zero():
    torch.manual_seed(0)
    net = EPiCVelocity(3, 5, hidden=16, global_dim=8, layers=3).eval()
    x, t, cond, mask = _cloud_batch()
    out = net(x, t, cond, mask)
    assert torch.all(out[~mask] == 0)
    x2 = torch.where(mask.unsqueeze(-1), x, 100 * torch.randn_like(x))
    torch.testing.assert_close(net(x2, t, cond, mask)[mask], out[mask], rtol=0, atol=0)
    # extra padded slots leave the real outputs unchanged too
    wide = torch.cat([x, torch.randn(x.shape[0], 5, 3)], dim=1)
    wide_mask = torch.cat([mask, torch.zeros(x.shape[0], 5, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(net(wide, t, cond, wide_mask)[:, :x.shape[1]], out, rtol=1e-5, atol=1e-6)
    # each cloud is independent of the others in the batch
    torch.testing.assert_close(net(x[1:2], t[1:2], cond[1:2], mask[1:2])[0], out[1], rtol=1e-5, atol=1e-6)


def test_epic_layer_shapes_and_masking():
    layer = EPiCLayer(hidden=6, global_dim=4, context_dim=3)
    x, _, _, mask = _cloud_batch(p=7)
    h = torch.randn(4, 7, 6) * mask.unsqueeze(-1)
    x_new, g = layer(h, torch.randn(4, 4), torch.randn(4, 3), mask)
    assert x_new.shape == (4, 7, 6) and g.shape == (4, 4)
    assert torch.all(x_new[~mask] == 0)


def test_velocity_shapes_and_input_checks():
    net = MLPVelocity(10, 1, hidden=8, layers=2)
    assert net(torch.randn(6, 10), torch.rand(6), torch.randn(6, 1)).shape == (6, 10)
    assert net(torch.randn(6, 10), torch.tensor(0.3), torch.randn(6, 1)).shape == (6, 10)  # scalar t (ODE)
    with pytest.raises(ValueError, match="mask must be None"):
        net(torch.randn(6, 10), torch.rand(6), torch.randn(6, 1), torch.ones(6, 10, dtype=torch.bool))
    epic = EPiCVelocity(3, 5, hidden=8, global_dim=8, layers=1)
    x, t, cond, mask = _cloud_batch()
    assert epic(x, torch.tensor(0.5), cond, mask).shape == x.shape
    with pytest.raises(ValueError, match="mask"):
        epic(x, t, cond, None)
    with pytest.raises(ValueError, match=r"\(B, P, 3\)"):
        epic(x[..., :2], t, cond, mask)
    emb = time_embedding(torch.tensor([0.0, 1.0]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_make_net_sizes():
    jet = FM.make_net("jet_model", FM.DEFAULTS["jet_model"])
    part = FM.make_net("particle_model", FM.DEFAULTS["particle_model"])
    assert isinstance(jet, MLPVelocity) and isinstance(part, EPiCVelocity)
    assert len(part.layers) == 8
    assert sum(p.numel() for p in part.parameters()) > 1e6  # the published EPiC size, ~1.6M


# ------------------------------------------------------------------------------------------ loss, ODE, EMA

def _exact_velocity(c, sigma):
    """The exact marginal velocity of the OT path towards the point mass ``c``."""
    def v(x, t, cond=None, mask=None):
        tb = torch.as_tensor(t).reshape(-1, *([1] * (x.dim() - 1))) if torch.as_tensor(t).dim() else t
        return c - (1 - sigma) * (x - tb * c) / (1 - (1 - sigma) * tb)
    return v


def test_loss_vanishes_for_the_exact_velocity_and_counts_real_particles_only():
    sigma = 0.05
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([1.0, -2.0, 0.5])
    x0 = torch.randn(64, 5, 3, generator=g)
    x1 = c.expand(64, 5, 3)
    t = torch.rand(64, generator=g)
    exact = _exact_velocity(c, sigma)
    assert FM.flow_matching_loss(exact, x0, x1, t, None, None, sigma) < 1e-10
    # a constant error delta gives delta^2
    shifted = lambda x, t, cond, mask: exact(x, t) + 0.3  # noqa: E731
    torch.testing.assert_close(FM.flow_matching_loss(shifted, x0, x1, t, None, None, sigma), torch.tensor(0.09))
    # errors at padded particles do not count; the mean runs over the real ones
    mask = torch.rand(64, 5, generator=g) < 0.5
    noisy = lambda x, t, cond, mask: torch.where(mask.unsqueeze(-1), exact(x, t), exact(x, t) + 7.0)  # noqa: E731
    assert FM.flow_matching_loss(noisy, x0, x1, t, None, mask, sigma) < 1e-10
    half = lambda x, t, cond, mask: exact(x, t) + 2.0 * torch.tensor([1.0, 0.0, 0.0])  # noqa: E731
    torch.testing.assert_close(FM.flow_matching_loss(half, x0, x1, t, None, mask, sigma), torch.tensor(4 / 3))


def test_integrate_goes_from_noise_to_data():
    """The exact velocity carries x0 to c + sigma x0 at t = 1 (250 midpoint steps, 500 evaluations)."""
    sigma = 0.01
    c = torch.tensor([3.0, -1.0])
    x0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    calls = []

    def v(t, x):
        calls.append(float(t))
        return _exact_velocity(c, sigma)(x, t)

    x1 = FM.integrate(v, x0, 250)
    torch.testing.assert_close(x1, c + sigma * x0, rtol=0, atol=1e-3)
    assert len(calls) == 500 and min(calls) == 0.0 and max(calls) < 1.0
    with pytest.raises(ValueError, match="at least one step"):
        FM.integrate(v, x0, 0)


def test_ema_is_bias_corrected():
    decay = 0.9
    update = FM.ema_multi_avg_fn(decay)
    values = [3.0, 5.0, -1.0, 2.0]
    avg = [torch.tensor([values[0]])]  # AveragedModel copies the weights at the first update
    for k, v in enumerate(values[1:], start=1):
        update(avg, [torch.tensor([v])], torch.tensor(k))
    w = decay ** np.arange(len(values))[::-1]
    assert float(avg[0]) == pytest.approx(np.dot(w, values) / w.sum(), rel=1e-6)


def test_keyed_batches_split_the_global_batch_and_change_every_epoch():
    ranks = [FM.KeyedBatches(103, 20, seed=4, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == 5
    epoch0 = [list(r) for r in ranks]
    for (k0, i0), (k1, i1) in zip(*epoch0):
        assert k0 != k1 and len(i0) == len(i1) == 10 and not set(i0) & set(i1)
    seen = np.concatenate([i for r in epoch0 for _, i in r])
    assert len(np.unique(seen)) == 100
    assert [k for k, _ in epoch0[0]] == [k for k, _ in FM.KeyedBatches(103, 20, 4, 0, 2)]  # deterministic
    ranks[0].set_epoch(1)
    assert not np.array_equal(next(iter(ranks[0]))[1], epoch0[0][0][1])
    val = [list(FM.KeyedBatches(103, 20, 4, r, 2, train=False)) for r in (0, 1)]
    assert sorted(np.concatenate([i for r in val for _, i in r]).tolist()) == list(range(103))
    with pytest.raises(ValueError, match="cannot be shared"):
        FM.KeyedBatches(1, 20, 4, 0, 2)


# ------------------------------------------------------------------------------------------ training

def _toy_mixture(n, seed):
    """x | c: x0 ~ N(2c, 0.5), x1 ~ N(c - 1, 0.3) or N(c + 1, 0.3) with equal odds; c ~ U(-1, 1)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, n)
    x0 = 2 * c + 0.5 * rng.normal(size=n)
    x1 = c + rng.choice([-1.0, 1.0], n) + 0.3 * rng.normal(size=n)
    return np.stack([x0, x1], 1).astype(np.float32), c[:, None].astype(np.float32)


def test_conditional_flow_recovers_a_gaussian_mixture(tmp_path):
    """320 steps of an MLP flow: conditional means within 0.15, stds within 15% at c = -0.5 and 0.5."""
    settings = FM.settings_with_defaults("jet_model", {"hidden": 64, "layers": 3, "batch_size": 256, "epochs": 20,
                                                       "lr": 3e-3, "patience": 100, "ema_decay": 0.99})
    L.seed_everything(0, verbose=False)
    net, history = FM.fit_velocity(MLPVelocity(2, 1, 64, 3), FM.ArrayData(*_toy_mixture(4096, 0)),
                                   FM.ArrayData(*_toy_mixture(1024, 1)), settings, 0, tmp_path, ONE_CPU)
    assert history["steps_per_epoch"] * history["epochs_run"] == 320
    assert history["val_loss"][-1] < history["val_loss"][0]
    for c in (-0.5, 0.5):
        cond = torch.full((4000, 1), c)
        x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            x = FM.integrate(lambda t, x: net(x, t, cond), x0, 50).numpy()
        np.testing.assert_allclose(x.mean(0), [2 * c, c], atol=0.15)
        np.testing.assert_allclose(x.std(0), [0.5, np.sqrt(1 + 0.3**2)], rtol=0.15)


def test_trained_models_and_histories(trained):
    for key, n_epochs in (("jet_history", 2), ("particle_history", 2)):
        h = trained[key]
        assert h["epoch"] == list(range(n_epochs)) and h["epochs_run"] == n_epochs
        assert all(np.isfinite(h["train_loss"])) and all(np.isfinite(h["val_loss"]))
        assert h["best_epoch"] in h["epoch"] and h["world_size"] == 1
    assert trained["particle_history"]["steps_per_epoch"] == 2 * 256 // 64  # two clouds per event
    assert not trained["jets"].net.training and next(trained["jets"].net.parameters()).device.type == "cpu"
    assert (trained["work"] / "jets" / "checkpoints" / "last.ckpt").exists()


def _validation_loss(net, data, settings, seed):
    """The validation loss of ``net`` on the batches and noise that training used."""
    total = weight = 0.0
    with torch.no_grad():
        for item in FM.KeyedBatches(len(data), settings["batch_size"], seed, train=False):
            b = data[item]
            loss = FM.flow_matching_loss(net, b["x0"], b["x1"], b["t"], b["cond"], b.get("mask"), settings["sigma"])
            w = float(b["mask"].sum()) if "mask" in b else len(b["x1"])
            total, weight = total + float(loss) * w, weight + w
    return total / weight


def test_returned_weights_are_the_ema_of_the_best_epoch(trained):
    """Validation ran with the EMA weights, and those of the best epoch are the model's."""
    jf, pf, val = trained["jets"], trained["particles"], trained["val"]
    for flow, data, h in ((jf, FM.JetData(val, jf.transform), trained["jet_history"]),
                          (pf, FM.ParticleData(val, pf.jet_transform, pf.particle_transform),
                           trained["particle_history"])):
        best = h["epoch"].index(h["best_epoch"])
        assert h["val_loss"][best] == min(h["val_loss"])
        assert _validation_loss(flow.net, data, flow.settings, 3) == pytest.approx(h["val_loss"][best], rel=1e-5)


def test_jet_multiplicity_is_dequantised(trained):
    jf, train = trained["jets"], trained["train"]
    data = FM.JetData(train, jf.transform)
    x1, cond, mask = data.examples(np.arange(100), np.random.default_rng(0))
    raw_n = x1.reshape(100, 2, 5)[..., 4] * jf.transform.std[4] + jf.transform.mean[4]
    offset = raw_n - train.jets[:100, :, 4]
    assert mask is None and cond.shape == (100, 1)
    assert np.abs(offset).max() <= 0.5 and offset.std() > 0.2  # U(-0.5, 0.5) has std 0.29


def test_early_stopping_keeps_the_best_epoch_and_is_not_rerun(tmp_path):
    """With a learning rate of ~0 the validation loss never improves: training stops after patience epochs."""
    train, val = toy_events(128), toy_events(64, seed=1)
    settings = {**TINY_JETS, "epochs": 10, "patience": 2, "lr": 1e-30}
    _, h = FM.train_jet_model(train, val, settings, 0, tmp_path, ONE_CPU)
    assert h["epoch"] == [0, 1, 2] and h["best_epoch"] == 0
    _, h2 = FM.train_jet_model(train, val, settings, 0, tmp_path, {**ONE_CPU, "callbacks": [InterruptAt(0)]})
    assert h2["epoch"] == [0, 1, 2] and h2["resumed_at"] == []


def test_particle_samples_follow_n(trained):
    val = trained["val"]
    jets = trained["jets"].sample(val.mjj, steps=4, seed=1, batch_size=25)
    assert jets.shape == (64, 2, 5) and np.isfinite(jets).all()
    assert (jets[:, 0, 0] >= jets[:, 1, 0]).all()  # the leading jet first
    assert np.array_equal(jets[..., 4], np.rint(jets[..., 4])) and (jets[..., 4] >= 1).all()
    jets[:3, :, 4] = [[1, 30], [12, 5], [7, 7]]  # n above max_particles is cut to it
    particles, mask = trained["particles"].sample(jets, val.mjj, steps=4, seed=2, batch_size=16)
    assert particles.shape == (64, 2, 12, 3) and mask.shape == (64, 2, 12)
    np.testing.assert_array_equal(mask.sum(-1), pointcloud.n_valid(jets, 12))
    np.testing.assert_array_equal(mask, pointcloud.mask_from_counts(mask.sum(-1), 12))  # the first n slots
    assert np.all(particles[~mask] == 0) and np.isfinite(particles).all()
    pt = np.where(mask, particles[..., 0], -1.0)
    assert np.all(np.diff(pt, axis=-1)[mask[..., 1:]] <= 0)  # leading constituents first
    # a larger max_particles than in training works too
    _, wide = trained["particles"].sample(jets[:3], val.mjj[:3], max_particles=40, steps=2, seed=2)
    np.testing.assert_array_equal(wide.sum(-1), [[1, 30], [12, 5], [7, 7]])


def test_sampling_chunks_bound_the_particle_slots():
    counts = np.sort(np.random.default_rng(0).integers(1, 280, 1000))
    chunks = list(sampling_chunks(counts, 4096))
    assert chunks[0][0] == 0 and chunks[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all((stop - start) * counts[stop - 1] <= 4096 for start, stop in chunks)
    assert all(stop == 1000 or (stop - start + 1) * counts[stop] > 4096 for start, stop in chunks)  # greedy
    assert list(sampling_chunks(np.array([5, 9000]), 4096)) == [(0, 1), (1, 2)]  # a cloud above the budget alone


def test_same_seed_same_samples_and_save_load_round_trip(trained, tmp_path):
    jf, pf, val = trained["jets"], trained["particles"], trained["val"]
    jets = jf.sample(val.mjj, steps=5, seed=7, batch_size=30)
    np.testing.assert_array_equal(jets, jf.sample(val.mjj, steps=5, seed=7, batch_size=30))
    assert not np.array_equal(jets, jf.sample(val.mjj, steps=5, seed=8, batch_size=30))
    parts = pf.sample(jets, val.mjj, steps=5, seed=7)
    jf.save(tmp_path / "jets.pt")
    pf.save(tmp_path / "particles.pt")
    meta = json.loads((tmp_path / "particles.json").read_text())
    assert meta["settings"]["global_dim"] == 16 and meta["history"]["epoch"] == [0, 1]
    jf2, pf2 = FM.JetFlow.load(tmp_path / "jets.pt"), FM.load(tmp_path / "particles.pt")
    assert isinstance(pf2, FM.ParticleFlow) and pf2.max_particles == 12 and jf2.settings == jf.settings
    assert jf2.history["epoch"] == [0, 1]
    np.testing.assert_array_equal(jf2.sample(val.mjj, steps=5, seed=7, batch_size=30), jets)
    for a, b in zip(pf2.sample(jets, val.mjj, steps=5, seed=7), parts):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="not a jet_model"):
        FM.JetFlow.load(tmp_path / "particles.pt")
    with pytest.raises(InputError, match="does not exist"):
        FM.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(InputError, match="not a readable"):
        FM.load(tmp_path / "junk.pt")


def test_bad_inputs_are_rejected(trained, tmp_path):
    train = trained["train"]
    bad = train.take(np.arange(10))
    bad.jets = bad.jets.copy()
    bad.jets[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        FM.train_jet_model(bad, train, TINY_JETS, 0, tmp_path)
    with pytest.raises(ValueError, match="finite and positive"):
        trained["jets"].sample([3000.0, -1.0], steps=2)
    with pytest.raises(ValueError, match="jets must have shape"):
        trained["particles"].sample(train.jets[:3], train.mjj[:4], steps=2)


class Interrupt(Exception):
    """Stands for a job killed by the batch system."""


class InterruptAt(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise Interrupt(f"stopped at epoch {self.epoch}")


def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    history = check_killed_training_resumes(FM, TINY_JETS, tmp_path, "last.ckpt", trainer_kwargs=ONE_CPU)
    assert len(history["val_loss"]) == 4


def test_interrupted_training_resumes_from_last_checkpoint(tmp_path):
    train, val = toy_events(256), toy_events(64, seed=1)
    settings = {**TINY_JETS, "epochs": 4}
    with pytest.raises(Interrupt):
        FM.train_jet_model(train, val, settings, 5, tmp_path / "a", {**ONE_CPU, "callbacks": [InterruptAt(2)]})
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").exists()
    resumed, history = FM.train_jet_model(train, val, settings, 5, tmp_path / "a", ONE_CPU)
    assert history["epoch"] == [0, 1, 2, 3] and history["resumed_at"] == [2] and history["epochs_run"] == 4
    # the same as an uninterrupted run
    straight, h2 = FM.train_jet_model(train, val, settings, 5, tmp_path / "b", ONE_CPU)
    np.testing.assert_array_equal(history["val_loss"], h2["val_loss"])
    np.testing.assert_array_equal(history["train_loss"], h2["train_loss"])
    for a, b in zip(resumed.net.state_dict().values(), straight.net.state_dict().values()):
        assert torch.equal(a, b)
    # a finished training is not run again ...
    again, h3 = FM.train_jet_model(train, val, settings, 5, tmp_path / "a", {**ONE_CPU, "callbacks": [InterruptAt(0)]})
    assert h3["epoch"] == [0, 1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), resumed.net.state_dict().values()))
    # ... but other settings start afresh
    _, h4 = FM.train_jet_model(train, val, {**settings, "epochs": 1}, 5, tmp_path / "a", ONE_CPU)
    assert h4["epoch"] == [0] and h4["resumed_at"] == []


# ------------------------------------------------------------------------------------------ generate

def test_generate_writes_a_valid_file(trained, tmp_path, caplog):
    info = check_generate_writes_a_valid_file(FM, trained, tmp_path, caplog)



# ------------------------------------------------------------------------------------------ DDP

DDP_SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import lightning as L
    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from resonant import flow_matching as FM
    from test_flow_matching import TINY_PARTICLES, toy_events


    class Record(L.Callback):
        """Each rank's raw weights at the end of training and the batches it saw."""

        def __init__(self, out):
            self.out = out

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            with open(self.out / f"batches-rank{trainer.global_rank}.txt", "a") as f:
                f.write(f"{trainer.current_epoch} {batch['x1'].shape[0]} {float(batch['x1'].sum()):.6f}\\n")

        def on_train_epoch_end(self, trainer, module):
            state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
            torch.save(state, self.out / f"raw-rank{trainer.global_rank}.pt")


    def main():
        out = Path(sys.argv[1])
        train, val = toy_events(96), toy_events(32, seed=1)
        flow, history = FM.train_particle_model(
            train, val, {**TINY_PARTICLES, "batch_size": 32}, 4, out / "work",
            trainer_kwargs=dict(accelerator="cpu", devices=2, strategy="ddp", num_nodes=1, callbacks=[Record(out)]))
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        torch.save(flow.net.state_dict(), out / f"ema-rank{rank}.pt")
        (out / f"history-rank{rank}.json").write_text(json.dumps(history))


    if __name__ == "__main__":
        main()
''')


def test_ddp_replicas_stay_identical(tmp_path):
    """Two CPU processes (gloo) share every batch of the particle model; raw and EMA weights stay identical."""
    script = tmp_path / "ddp_fm.py"
    script.write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "LOCAL_RANK", "WORLD_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(ROOT / "tests")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for tag in ("raw", "ema"):
        a, b = (torch.load(tmp_path / f"{tag}-rank{r}.pt", weights_only=True) for r in (0, 1))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), tag
    raw, ema = (torch.load(tmp_path / f"{tag}-rank0.pt", weights_only=True) for tag in ("raw", "ema"))
    assert not all(torch.equal(raw[k], ema[k]) for k in raw)  # the returned model is the EMA
    history = json.loads((tmp_path / "history-rank0.json").read_text())
    assert history["world_size"] == 2 and history["epoch"] == [0, 1] and history["steps_per_epoch"] == 6
    # 192 clouds in global batches of 32: 6 steps per epoch, 16 clouds per rank, different ones
    lines = [(tmp_path / f"batches-rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)]
    assert len(lines[0]) == len(lines[1]) == 12
    assert all(line.split()[1] == "16" for line in lines[0] + lines[1])
    assert all(a.split()[2] != b.split()[2] for a, b in zip(*lines))
