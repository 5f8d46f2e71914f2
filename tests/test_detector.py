"""Parametric detector smearing: visibility, acceptance, thresholds, resolutions, config handling."""

import awkward as ak
import numpy as np
import pytest

from resonant.data import detector as det
from resonant.errors import ConfigError

MASSES = {211: 0.13957, 321: 0.49368, 2212: 0.93827, 2112: 0.93957, 130: 0.49761, 11: 0.000511, 13: 0.10566}


def make_particles(pid, pt, eta, phi):
    """Flat arrays px, py, pz, e of particles with the given ids and kinematics."""
    pid = np.asarray(pid)
    pt, eta, phi = (np.broadcast_to(np.asarray(x, dtype=np.float64), pid.shape).copy() for x in (pt, eta, phi))
    m = np.array([MASSES.get(abs(int(i)), 0.0) for i in pid])
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    return px, py, pz, e


def one_event(pid, pt, eta, phi, charge=None):
    px, py, pz, e = make_particles(pid, pt, eta, phi)
    fields = {"px": px, "py": py, "pz": pz, "e": e, "pid": np.asarray(pid)}
    if charge is not None:
        fields["charge"] = np.asarray(charge, dtype=np.float64)
    return ak.unflatten(ak.zip(fields), [len(px)])


def smear_single(pid, n, pt, eta, phi=0.3, config=None, seed=1):
    """n copies of one particle kind through the detector; returns (truth e, output pt, eta, phi)."""
    pid = np.full(n, pid)
    px, py, pz, e = make_particles(pid, pt, eta, phi)
    pt_m, eta_m, phi_m, counts = det.smear_flat(px, py, pz, e, pid, np.ones(n, dtype=np.int64),
                                                np.random.default_rng(seed), config)
    assert counts.max() <= 1
    return e[counts == 1], pt_m, eta_m, phi_m


# ---------------------------------------------------------------- config


def test_defaults_and_overrides_merge():
    cfg = det.detector_config({"pt_min": 1.0, "enabled": True})
    assert cfg["pt_min"] == 1.0
    assert cfg["eta_max"] == det.DEFAULT_DETECTOR["eta_max"]
    assert set(cfg) == set(det.DEFAULT_DETECTOR)
    assert det.detector_config(None) == det.DEFAULT_DETECTOR
    assert det.detector_config({}) is not det.DEFAULT_DETECTOR  # a copy, never the shared default
    assert set(det.DETECTOR_DOCS) == set(det.DEFAULT_DETECTOR)


def test_unknown_config_key_rejected():
    with pytest.raises(ConfigError, match="pt_mim") as exc:
        det.detector_config({"pt_mim": 1.0})
    assert "pt_min" in str(exc.value)  # names the valid keys


@pytest.mark.parametrize("overrides", [{"pt_min": -1.0}, {"eta_max": "2.5"}, {"enabled": "no"},
                                       {"hcal_constant": float("nan")}, {"eta_max": 0}, {"ecal_angle": True}])
def test_bad_config_values_rejected(overrides):
    key = next(iter(overrides))
    with pytest.raises(ConfigError, match=key):
        det.detector_config(overrides)


def test_smear_validates_config_too():
    px, py, pz, e = make_particles([211], 10.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="bogus"):
        det.smear_flat(px, py, pz, e, [211], [1], np.random.default_rng(0), {"bogus": 1})


# ---------------------------------------------------------------- visibility


@pytest.mark.parametrize("enabled", [True, False])
def test_invisible_particles_dropped(enabled):
    pid = [211, 12, 22, -14, 2112, 16, 9000001, -211, 1000022, 13]
    charge = [1, 0, 0, 0, 0, 0, 0, -1, 0, -1]
    eta = np.linspace(-1, 1, len(pid))
    ev = one_event(pid, 20.0, eta, np.linspace(-2, 2, len(pid)), charge)
    out = det.apply_detector(ev, np.random.default_rng(0), {"enabled": enabled})
    visible = [0, 2, 4, 7, 9]  # pi+, gamma, n, pi-, mu; no neutrino, neutralino or stable BSM neutral
    assert ak.num(out).tolist() == [len(visible)]
    # the visible ones keep their order (and, unsmeared, their direction)
    np.testing.assert_allclose(ak.to_numpy(out.eta[0]), eta[visible], atol=0.2 if enabled else 1e-9)
    if not enabled:
        np.testing.assert_allclose(ak.to_numpy(out.pt[0]), 20.0)


def test_visibility_rule():
    pid = np.array([12, -14, 16, 18, 22, 2112, 130, 211, -11, 13, 1000022, 9000001, 1000024, 3122])
    charge = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, -1, 0, 0, 1, 0])
    assert det.default_visible(pid, charge).tolist() == [
        False, False, False, False, True, True, True, True, True, True, False, False, True, True]


def test_builtin_charges_and_unknown_id():
    assert det.particle_charge([211, -211, 22, 2212, -2212, 11, -13, 2112]).tolist() == [1, -1, 0, 1, -1, -1, 1, 0]
    with pytest.raises(ValueError, match="9000001"):
        det.particle_charge([211, 9000001])


# ---------------------------------------------------------------- acceptance and threshold


def random_sample(n=60000, seed=3):
    rng = np.random.default_rng(seed)
    pid = rng.choice([211, -211, 321, 22, 2112, 130, 11, 13, 2212], n)
    pt = np.exp(rng.uniform(np.log(0.05), np.log(200.0), n))
    eta = rng.uniform(-6, 6, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    counts = np.full(n // 100, 100)
    return pid, pt, eta, phi, counts


@pytest.mark.parametrize("overrides", [{}, {"eta_max": 2.0, "pt_min": 5.0}, {"tracker_eta_max": 1.0}])
def test_acceptance_and_threshold_enforced(overrides):
    cfg = det.detector_config(overrides)
    pid, pt, eta, phi, counts = random_sample()
    px, py, pz, e = make_particles(pid, pt, eta, phi)
    pt_m, eta_m, phi_m, new_counts = det.smear_flat(px, py, pz, e, pid, counts, np.random.default_rng(1), cfg)
    assert new_counts.sum() == len(pt_m) and len(new_counts) == len(counts)
    assert np.all(pt_m >= cfg["pt_min"]) and np.all(np.abs(eta_m) < cfg["eta_max"])
    assert np.all(np.abs(phi_m) <= np.pi)
    # the cut is not trivially "drop everything": particles well inside are (almost) all kept
    inside = (pt > 3 * cfg["pt_min"] + 2.0) & (np.abs(eta) < cfg["eta_max"] - 0.3)
    assert len(pt_m) >= 0.97 * inside.sum()
    # and particles far outside are all gone
    outside = (np.abs(eta) > cfg["eta_max"] + 0.5) | (pt < 0.5 * cfg["pt_min"])
    assert len(pt_m) <= len(pt) - outside.sum()


# ---------------------------------------------------------------- resolutions

N_RES = 100_000


def rel_sigma(ratio):
    return np.std(ratio), np.mean(ratio)


def test_track_resolution_matches_config():
    cfg = det.detector_config({})
    pt0 = 100.0
    _, pt_m, eta_m, phi_m = smear_single(211, N_RES, pt0, 0.5, config=cfg)
    expect = np.hypot(cfg["track_resolution_const"], cfg["track_resolution_slope"] * pt0)
    sigma, mean = rel_sigma(pt_m / pt0)
    assert sigma == pytest.approx(expect, rel=0.03)
    assert mean == pytest.approx(1.0, abs=3 * expect / np.sqrt(N_RES) + 1e-4)
    # tracks keep their direction exactly
    assert np.allclose(eta_m, 0.5) and np.allclose(phi_m, 0.3)


def test_track_resolution_follows_override():
    _, pt_m, _, _ = smear_single(-211, N_RES, 500.0, -1.0,
                                 config={"track_resolution_const": 0.02, "track_resolution_slope": 2e-4})
    assert np.std(pt_m / 500.0) == pytest.approx(np.hypot(0.02, 0.1), rel=0.03)


@pytest.mark.parametrize("pid, e0, kind", [(22, 50.0, "ecal"), (11, 20.0, "ecal"), (2112, 30.0, "hcal"),
                                           (130, 80.0, "hcal"), (211, 40.0, "hcal_outside_tracker")])
def test_calorimeter_resolution_matches_config(pid, e0, kind):
    cfg = det.detector_config({})
    eta0 = 3.2 if kind == "hcal_outside_tracker" else 0.4
    pt0 = e0 / np.cosh(eta0)  # ~energy e0 (masses are small)
    e_true, pt_m, eta_m, phi_m = smear_single(pid, N_RES, pt0, eta0, config=cfg)
    e_meas = pt_m * np.cosh(eta_m)  # massless: E = pT cosh(eta)
    calo = "ecal" if kind == "ecal" else "hcal"
    expect = np.sqrt(cfg[f"{calo}_stochastic"] ** 2 / e_true.mean() + cfg[f"{calo}_constant"] ** 2)
    sigma, mean = rel_sigma(e_meas / e_true)
    assert len(pt_m) >= 0.999 * N_RES  # far above threshold: nothing lost
    assert sigma == pytest.approx(expect, rel=0.03)
    assert mean == pytest.approx(1.0, abs=4 * expect / np.sqrt(N_RES) + 1e-4)
    ang = {"ecal": cfg["ecal_angle"], "hcal": cfg["hcal_angle"]}[calo]
    if pid == 11:  # electrons inside the tracker keep the track direction
        assert np.allclose(eta_m, eta0) and np.allclose(phi_m, 0.3)
    else:
        assert np.std(eta_m - eta0) == pytest.approx(ang, rel=0.03)
        assert np.std(phi_m - 0.3) == pytest.approx(ang, rel=0.03)


def test_calorimeter_resolution_follows_override():
    cfg = {"hcal_stochastic": 0.5, "hcal_constant": 0.1, "hcal_angle": 0.0}
    e_true, pt_m, eta_m, _ = smear_single(2112, N_RES, 40.0, 0.0, config=cfg)
    assert np.std(pt_m * np.cosh(eta_m) / e_true) == pytest.approx(np.sqrt(0.25 / e_true.mean() + 0.01), rel=0.03)
    assert np.all(eta_m == 0.0)


# ---------------------------------------------------------------- disabled mode and determinism


def test_disabled_keeps_visible_particles_unchanged():
    pid, pt, eta, phi, counts = random_sample(n=20000)
    pid = pid.copy()
    pid[::7] = 12  # some neutrinos
    px, py, pz, e = make_particles(pid, pt, eta, phi)
    pt_m, eta_m, phi_m, new_counts = det.smear_flat(px, py, pz, e, pid, counts, None, {"enabled": False})
    vis = pid != 12
    assert len(pt_m) == vis.sum()
    np.testing.assert_allclose(pt_m, pt[vis], rtol=1e-12)
    np.testing.assert_allclose(eta_m, eta[vis], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(phi_m, phi[vis], rtol=1e-12, atol=1e-12)
    event = np.repeat(np.arange(len(counts)), counts)
    assert new_counts.tolist() == np.bincount(event[vis], minlength=len(counts)).tolist()


def test_zero_pt_particles_dropped_even_when_disabled():
    px, py, pz, e = np.array([0.0, 1.0]), np.array([0.0, 0.0]), np.array([100.0, 1.0]), np.array([100.0, 2.0])
    pt_m, eta_m, _, counts = det.smear_flat(px, py, pz, e, [22, 22], [2], None, {"enabled": False})
    assert counts.tolist() == [1] and np.isfinite(eta_m).all()


def test_enabled_needs_generator():
    px, py, pz, e = make_particles([211], 10.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="Generator"):
        det.smear_flat(px, py, pz, e, [211], [1], None)


def test_deterministic_and_independent_of_batching():
    pid, pt, eta, phi, counts = random_sample(n=10000)
    px, py, pz, e = make_particles(pid, pt, eta, phi)

    def run(seed, split=None):
        rng = np.random.default_rng(seed)
        if split is None:
            return det.smear_flat(px, py, pz, e, pid, counts, rng)
        cut = counts[:split].sum()
        a = det.smear_flat(px[:cut], py[:cut], pz[:cut], e[:cut], pid[:cut], counts[:split], rng)
        b = det.smear_flat(px[cut:], py[cut:], pz[cut:], e[cut:], pid[cut:], counts[split:], rng)
        return tuple(np.concatenate([x, y]) for x, y in zip(a, b))

    one, again, split, other = run(5), run(5), run(5, split=37), run(6)
    for x, y, z in zip(one, again, split):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    assert not np.array_equal(one[0][: len(other[0])], other[0][: len(one[0])])


def test_apply_detector_awkward_roundtrip():
    ev = one_event([211, 22, 12], [10.0, 20.0, 30.0], [0.1, -0.2, 0.3], [0.0, 1.0, 2.0])
    ev = ak.concatenate([ev, ev[:, :0], ev])  # includes an event without particles
    out = det.apply_detector(ev, np.random.default_rng(2))
    assert ak.num(out).tolist() == [2, 0, 2]
    assert out.fields == ["pt", "eta", "phi"]
    with pytest.raises(ValueError, match="pid"):
        det.apply_detector(ak.unflatten(ak.zip({"px": [1.0], "py": [1.0], "pz": [1.0], "e": [2.0]}), [1]),
                           np.random.default_rng(0))
