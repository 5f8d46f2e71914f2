"""The point-cloud classifier of the full-phase-space branches: symmetries, learning, fidelity AUC, I/O, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from resonant import pc_classify as P
from resonant.errors import InputError
from resonant.models.pc_classifier import PCTransformer
from resonant.pointcloud import PointCloud, mask_from_counts

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 12
SMALL = dict(dim=16, heads=2, blocks=1, dropout=0.0, lr=3e-3, batch_size=128, epochs=4, patience=4, n_ensemble=2)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def events(n, rng, signal=False, slots=SLOTS, heavy=False):
    """Synthetic dijet point clouds.

    Background: light jets (m ~ 60 GeV) whose constituents form one core around
    the axis. Signal (``signal``): heavy jets (400 and 100 GeV) with two hard
    prongs at +-0.3 in eta. ``heavy`` only shifts the jet masses (a bad generator).
    """
    mjj = rng.normal(3500, 100, n)
    pt = np.stack([mjj / 2 * rng.uniform(0.9, 1.0, n), mjj / 2 * rng.uniform(0.8, 0.9, n)], 1)
    eta = rng.normal(0, 1, (n, 2))
    phi = np.stack([rng.uniform(-np.pi, np.pi, n)] * 2, 1)
    phi[:, 1] = np.mod(phi[:, 1], 2 * np.pi) - np.pi  # back to back
    if signal:
        m = np.stack([rng.normal(400, 20, n), rng.normal(100, 10, n)], 1)
    else:
        m = np.abs(rng.normal(60 + 40 * heavy, 20, (n, 2)))
    counts = rng.integers(4, slots + 6, (n, 2))
    mask = mask_from_counts(np.minimum(counts, slots), slots)
    pt_rel = np.sort(rng.dirichlet(np.ones(slots), (n, 2)), axis=-1)[..., ::-1]
    deta, dphi = rng.normal(0, 0.05, (2, n, 2, slots))
    if signal:  # two prongs: the odd and even constituents on either side
        deta += np.where(np.arange(slots) % 2, 0.3, -0.3)
    particles = np.where(mask[..., None], np.stack([pt_rel, deta, dphi], -1), 0.0)
    jets = np.stack([pt, eta, phi, m, counts], -1)
    return PointCloud(jets.astype(np.float32), particles.astype(np.float32), mask, mjj.astype(np.float32),
                      label=np.full(n, int(signal)))


def mixture(n, signal_fraction, rng):
    n_sig = int(round(signal_fraction * n))
    cloud = PointCloud.concatenate([events(n - n_sig, rng), events(n_sig, rng, signal=True)])
    return cloud.take(rng.permutation(n))


def swap_jets(c: PointCloud) -> PointCloud:
    return PointCloud(c.jets[:, ::-1].copy(), c.particles[:, ::-1].copy(), c.mask[:, ::-1].copy(), c.mjj)


@pytest.fixture(scope="module")
def trained():
    """A classifier of SR-like data (10% signal) against background, and an independent test set."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    positive, negative = mixture(2000, 0.1, rng), events(2000, rng)
    test = PointCloud.concatenate([events(500, rng), events(500, rng, signal=True)])
    model, history = P.train_classifier(positive, negative, SMALL, seed=1)
    return model, history, test


# --------------------------------------------------------------------------------------------- symmetries

def random_inputs(rng, n=6, slots=9):
    counts = rng.integers(0, slots + 1, (n, 2))
    counts[0] = slots  # one event with all slots filled
    mask = torch.as_tensor(mask_from_counts(counts, slots))
    particles = torch.randn(n, 2, slots, 5, generator=torch.Generator().manual_seed(1)) * mask[..., None]
    jets = torch.randn(n, 2, 5, generator=torch.Generator().manual_seed(2))
    return jets, particles, mask


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return PCTransformer(5, 5, dim=16, heads=2, blocks=2, dropout=0.1).eval()


@torch.no_grad()
def test_network_invariant_under_jet_swap(net):
    jets, particles, mask = random_inputs(np.random.default_rng(0))
    out = net(jets, particles, mask)
    assert out.shape == (len(jets),) and torch.isfinite(out).all()
    torch.testing.assert_close(net(jets.flip(1), particles.flip(1), mask.flip(1)), out, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_network_invariant_under_particle_permutation_and_padding(net):
    rng = np.random.default_rng(1)
    jets, particles, mask = random_inputs(rng)
    out = net(jets, particles, mask)
    # a different permutation of the slots (real and padded mixed) in every jet
    perm = torch.as_tensor(np.stack([[rng.permutation(mask.shape[2]) for _ in range(2)] for _ in range(len(jets))]))
    p_perm = torch.gather(particles, 2, perm[..., None].expand_as(particles))
    m_perm = torch.gather(mask, 2, perm)
    torch.testing.assert_close(net(jets, p_perm, m_perm), out, rtol=1e-5, atol=1e-5)
    # five more padded slots, and garbage in every padded slot: nothing changes
    m_pad = torch.cat([mask, torch.zeros(*mask.shape[:2], 5, dtype=torch.bool)], 2)
    p_pad = torch.cat([particles, torch.zeros(*mask.shape[:2], 5, 5)], 2).masked_fill(~m_pad[..., None], 100.0)
    torch.testing.assert_close(net(jets, p_pad, m_pad), out, rtol=1e-5, atol=1e-5)


def test_network_is_batch_independent(net):
    """An event's output does not depend on the other events of the batch (slot trimming included)."""
    jets, particles, mask = random_inputs(np.random.default_rng(2))
    with torch.no_grad():
        out = net(jets, particles, mask)
        one = torch.cat([net(jets[i:i + 1], particles[i:i + 1], mask[i:i + 1]) for i in range(len(jets))])
    torch.testing.assert_close(one, out, rtol=1e-5, atol=1e-5)


def test_trained_classifier_symmetries(trained):
    """The full chain (input transforms included): jet swap, constituent order and padding leave the scores."""
    model, _, test = trained
    cloud = test.take(np.arange(0, 1000, 50))
    n, slots = len(cloud), cloud.max_particles
    scores = model.predict(cloud)
    np.testing.assert_allclose(model.predict(swap_jets(cloud)), scores, rtol=1e-5, atol=1e-6)
    perm = np.random.default_rng(0).permuted(np.broadcast_to(np.arange(slots), (n, 2, slots)), axis=-1)
    shuffled = PointCloud(cloud.jets, np.take_along_axis(cloud.particles, perm[..., None], 2),
                          np.take_along_axis(cloud.mask, perm, 2), cloud.mjj)
    np.testing.assert_allclose(model.predict(shuffled), scores, rtol=1e-5, atol=1e-6)
    wider = PointCloud(cloud.jets, np.concatenate([cloud.particles, np.full((n, 2, 4, 3), 0.5, np.float32)], 2),
                       np.concatenate([cloud.mask, np.zeros((n, 2, 4), bool)], 2), cloud.mjj)
    np.testing.assert_allclose(model.predict(wider), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(cloud, batch_size=3), scores, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- learning

def test_weakly_supervised_training_finds_the_signal(trained):
    model, history, test = trained
    scores = model.predict(test)
    assert scores.shape == (len(test),) and np.all((scores >= 0) & (scores <= 1))
    auc = roc_auc_score(test.label, scores)
    assert auc > 0.8, auc
    assert history["n_train"] == {"positive": 1600, "negative": 1600}
    assert history["n_val"] == {"positive": 400, "negative": 400}
    assert history["best_epoch"] == int(np.argmin(history["val_loss"]))
    assert len(history["train_loss"]) == len(history["val_loss"]) <= SMALL["epochs"]


def test_same_seed_same_predictions():
    rng = np.random.default_rng(3)
    positive, negative, test = mixture(300, 0.2, rng), events(300, rng), events(50, rng)
    settings = dict(SMALL, epochs=2)
    a = P.train_classifier(positive, negative, settings, seed=5)[0].predict(test)
    b = P.train_classifier(positive, negative, settings, seed=5)[0].predict(test)
    c = P.train_classifier(positive, negative, settings, seed=6)[0].predict(test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_ensemble():
    rng = np.random.default_rng(4)
    positive, negative, test = mixture(200, 0.2, rng), events(200, rng), events(40, rng)
    members = P.train_ensemble(positive, negative, dict(SMALL, epochs=1), seed=7)
    assert len(members) == SMALL["n_ensemble"]
    assert [h["seed"] for _, h in members] == P.member_seeds(7, 2)
    assert len(set(P.member_seeds(7, 10))) == 10 and P.member_seeds(7, 3) != P.member_seeds(8, 3)
    scores = P.ensemble_scores(members, test)
    assert scores.shape == (40, 2)
    np.testing.assert_array_equal(scores[:, 1], members[1][0].predict(test))
    np.testing.assert_array_equal(P.ensemble_scores([m for m, _ in members], test), scores)
    assert not np.allclose(scores[:, 0], scores[:, 1])


def test_fidelity_auc():
    """Same distribution: AUC ~ 0.5; a generator with too heavy jets is caught."""
    rng = np.random.default_rng(5)
    same = P.fidelity_auc(events(1000, rng), events(1000, rng), dict(SMALL, n_ensemble=1), seed=0)
    assert abs(same["auc"] - 0.5) < 0.1, same
    assert same["n_train"] == 1000 and same["n_test"] == 1000 and same["n_ensemble"] == 1
    bad = P.fidelity_auc(events(600, rng, heavy=True), events(600, rng), SMALL, seed=0)
    assert bad["auc"] > 0.7 and bad["n_ensemble"] == 2, bad


# --------------------------------------------------------------------------------------------- I/O

def test_save_load_round_trip(trained, tmp_path):
    model, history, test = trained
    path = tmp_path / "pc" / "classifier.pt"
    model.save(path)
    loaded = P.PCClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    assert loaded.settings == model.settings and loaded.history["val_loss"] == history["val_loss"]
    meta = P.io.read_json(path.with_suffix(".json"))
    assert meta["settings"] == P.settings_with_defaults(SMALL)
    assert meta["particle_features"] == list(P.ClassifierInputs.PARTICLE_FEATURES)
    assert meta["history"]["best_epoch"] == history["best_epoch"]
    with pytest.raises(InputError, match="does not exist"):
        P.PCClassifier.load(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------- settings and errors

def test_defaults_are_the_published_values_and_match_the_config_schema():
    assert P.DEFAULTS == dict(dim=64, heads=2, blocks=4, dropout=0.1, lr=1e-4, batch_size=64, epochs=100,
                              patience=20, val_fraction=0.2, n_ensemble=10)
    schema = yaml.safe_load((ROOT / "config.schema.yaml").read_text())
    props = schema["$defs"]["pc_classifier"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == P.DEFAULTS


@pytest.mark.parametrize("settings, match", [
    ({"width": 3}, "width"), ({"dim": 15, "heads": 2}, "multiple of heads"), ({"epochs": 0}, "epochs"),
    ({"val_fraction": 1.0}, "val_fraction"), ({"lr": 0}, "lr"), ({"dropout": 1.0}, "dropout"),
    ({"blocks": 2.5}, "blocks"),
])
def test_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        P.settings_with_defaults(settings)


def test_bad_inputs():
    rng = np.random.default_rng(6)
    good = events(20, rng)
    with pytest.raises(InputError, match=r"positive \(SR data\).*no events"):
        P.train_classifier(good.take(np.arange(0)), good, SMALL)
    with pytest.raises(InputError, match=r"negative \(background\).*at least 2"):
        P.train_classifier(good, good.take(np.arange(1)), SMALL)
    with pytest.raises(ValueError, match="12 constituent slots.*7"):
        P.train_classifier(good, events(20, rng, slots=7), SMALL)
    bad = good.take(np.arange(20))
    bad.particles[3, 1, 0, 2] = np.nan
    with pytest.raises(InputError, match=r"negative \(background\).*particles.*1 event"):
        P.train_classifier(good, bad, SMALL)
    bad.particles[3, 1, 0, 2] = 0.0
    bad.mjj[0] = np.inf
    with pytest.raises(InputError, match=r"generated.*mjj"):
        P.fidelity_auc(bad, good, SMALL)
    with pytest.raises(InputError, match=r"true.*at least 4"):
        P.fidelity_auc(good, good.take(np.arange(3)), SMALL)
    flat = PointCloud(good.jets, good.particles[..., :2], good.mask, good.mjj)
    with pytest.raises(InputError, match=r"particles.*expected \(20, 2, 12, 3\)"):
        P.train_classifier(flat, good, SMALL)
    bad.mjj[0] = 3500.0
    bad.jets[4, 1, 0] = 0.0
    with pytest.raises(InputError, match=r"negative \(background\).*1 value\(s\) of jets \(pt\) are not positive"):
        P.train_classifier(good, bad, SMALL)
    with pytest.raises(TypeError, match="PointCloud"):
        P.train_classifier(good.jets, good, SMALL)
    with pytest.raises(ValueError, match="no ensemble members"):
        P.ensemble_scores([], good)


def test_predict_checks_its_input(trained):
    model, _, test = trained
    assert model.predict(test.take(np.arange(0))).shape == (0,)
    bad = test.take(np.arange(5))
    bad.jets[2, 0, 3] = np.nan
    with pytest.raises(InputError, match="input.*jets"):
        model.predict(bad)
