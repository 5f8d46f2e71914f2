"""Parametric detector smearing: generator particles -> massless (pt, eta, phi).

A fast, Delphes-like stand-in with a few documented numbers (see
``docs/detector.md``). Per particle class:

* invisible particles (neutrinos, and any neutral particle that is neither a
  photon nor a hadron, e.g. stable BSM neutrals) are dropped;
* charged hadrons and muons inside the tracker (|eta| < ``tracker_eta_max``):
  pT measured by the tracker, sigma(pT)/pT = c (+) k pT, direction exact;
* electrons and photons: energy from the ECAL, sigma(E)/E = a/sqrt(E) (+) b;
  photons also get a gaussian (eta, phi) smearing of ``ecal_angle``
  (electrons inside the tracker keep the track direction);
* neutral hadrons, and charged hadrons/muons outside the tracker: energy from
  the HCAL, sigma(E)/E = a/sqrt(E) (+) b, (eta, phi) smeared by ``hcal_angle``;
* then |eta| < ``eta_max`` and pT >= ``pt_min`` on the measured values, and
  the massless representation pT = E / cosh(eta) for calorimeter objects.

``enabled: false`` keeps every visible final-state particle unchanged (no
smearing, no acceptance, no threshold); only particles with exactly zero pT,
whose pseudorapidity is undefined, are dropped in both modes.

All arithmetic is vectorised over the flat particle arrays of a whole batch.
The random numbers are three standard normals per *input* particle, drawn in
input order from the caller's ``numpy.random.Generator``: the result depends
only on the generator state and the particles, not on how the events are
split into batches.
"""

from __future__ import annotations

import copy
import math
import numbers

import awkward as ak
import numpy as np

from ..errors import ConfigError

DEFAULT_DETECTOR: dict = {
    # master switch: false = visible final-state particles, unsmeared, no cuts
    "enabled": True,
    # acceptance of the whole detector (calorimeters), on the measured |eta|
    "eta_max": 4.9,
    # tracker coverage: charged particles beyond it are measured in the calorimeters
    "tracker_eta_max": 2.5,
    # threshold on the measured pT of every particle, GeV
    "pt_min": 0.5,
    # tracker: sigma(pT)/pT = sqrt(const^2 + (slope * pT/GeV)^2)
    "track_resolution_const": 0.01,
    "track_resolution_slope": 1.0e-4,
    # ECAL (electrons, photons): sigma(E)/E = sqrt(stochastic^2 / (E/GeV) + constant^2)
    "ecal_stochastic": 0.03,
    "ecal_constant": 0.005,
    # HCAL (neutral hadrons; charged particles outside the tracker)
    "hcal_stochastic": 1.0,
    "hcal_constant": 0.05,
    # gaussian smearing (each of eta and phi) of calorimeter directions
    "ecal_angle": 0.005,
    "hcal_angle": 0.025,
}

DETECTOR_DOCS = {
    "enabled": "apply acceptance, threshold and smearing (false: visible particles only, unchanged)",
    "eta_max": "detector acceptance |eta| < eta_max on the measured direction",
    "tracker_eta_max": "tracker coverage; charged particles beyond it are measured in the calorimeters",
    "pt_min": "threshold on the measured pT, GeV",
    "track_resolution_const": "tracker sigma(pT)/pT constant term",
    "track_resolution_slope": "tracker sigma(pT)/pT term proportional to pT, per GeV",
    "ecal_stochastic": "ECAL stochastic term a in sigma(E)/E = a/sqrt(E/GeV) (+) b",
    "ecal_constant": "ECAL constant term b",
    "hcal_stochastic": "HCAL stochastic term a in sigma(E)/E = a/sqrt(E/GeV) (+) b",
    "hcal_constant": "HCAL constant term b",
    "ecal_angle": "gaussian sigma of eta and of phi for ECAL-measured directions (photons)",
    "hcal_angle": "gaussian sigma of eta and of phi for HCAL-measured directions",
}

# Charges (units of e) of the particles a generator leaves stable, for callers
# that do not pass charges themselves. Unknown ids raise.
_STABLE_CHARGE = {
    11: -1, 13: -1, 15: -1, 12: 0, 14: 0, 16: 0, 18: 0, 22: 0,
    111: 0, 211: 1, 130: 0, 310: 0, 311: 0, 321: 1,
    2212: 1, 2112: 0, 3122: 0, 3112: -1, 3212: 0, 3222: 1, 3312: -1, 3322: 0, 3334: -1,
    411: 1, 421: 0, 431: 1, 511: 0, 521: 1, 531: 0, 4122: 1,
    1000022: 0, 1000039: 0, 1000012: 0, 1000014: 0, 1000016: 0, 51: 0, 52: 0, 53: 0,
}


def detector_config(overrides: dict | None = None) -> dict:
    """``DEFAULT_DETECTOR`` updated with ``overrides``; unknown keys and bad values raise ``ConfigError``."""
    cfg = copy.deepcopy(DEFAULT_DETECTOR)
    if overrides is None:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError("detector", f"must be a mapping of settings, got {type(overrides).__name__}",
                          f"use keys among {', '.join(DEFAULT_DETECTOR)}")
    unknown = sorted(set(overrides) - set(DEFAULT_DETECTOR))
    if unknown:
        raise ConfigError(f"detector.{unknown[0]}", f"unknown detector setting(s) {', '.join(map(repr, unknown))}",
                          f"valid keys: {', '.join(DEFAULT_DETECTOR)}")
    for key, value in overrides.items():
        if key == "enabled":
            if not isinstance(value, bool):
                raise ConfigError("detector.enabled", f"must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"detector.{key}", f"must be a finite number >= 0, got {value!r}",
                              f"{DETECTOR_DOCS[key]} (default {DEFAULT_DETECTOR[key]})")
        cfg[key] = value if key == "enabled" else float(value)
    for key in ("eta_max", "tracker_eta_max"):
        if cfg[key] <= 0:
            raise ConfigError(f"detector.{key}", f"must be > 0, got {cfg[key]!r}", DETECTOR_DOCS[key])
    return cfg


def particle_charge(pid) -> np.ndarray:
    """Electric charge (units of e) of stable-particle ids from a small built-in table."""
    pid = np.asarray(pid, dtype=np.int64)
    uniq, inv = np.unique(np.abs(pid), return_inverse=True)
    missing = [int(u) for u in uniq if int(u) not in _STABLE_CHARGE]
    if missing:
        raise ValueError(f"no built-in charge for particle id(s) {missing[:10]}: pass 'charge' explicitly")
    q = np.array([_STABLE_CHARGE[int(u)] for u in uniq], dtype=np.float64)[inv]
    return q * np.sign(pid)


def default_visible(pid, charge) -> np.ndarray:
    """Visible = charged, or a photon, or a neutral SM hadron (PDG code 100 <= |id| < 1000000).

    Neutrinos and every other neutral (e.g. a stable BSM neutral) are invisible.
    """
    apid = np.abs(np.asarray(pid, dtype=np.int64))
    charge = np.asarray(charge)
    hadron = (apid >= 100) & (apid < 1_000_000)
    return (charge != 0) | (apid == 22) | hadron


def _resolution_calo(e, stochastic, constant):
    return np.sqrt(stochastic * stochastic / np.maximum(e, 1e-12) + constant * constant)


def smear_flat(px, py, pz, e, pid, counts, rng: np.random.Generator | None, config: dict | None = None,
               charge=None, visible=None):
    """Detector response on flat particle arrays of several events.

    ``px, py, pz, e, pid`` are flat arrays (GeV) of the final-state particles
    of ``len(counts)`` events, ``counts[i]`` particles for event ``i``.
    ``charge`` (units of e) defaults to :func:`particle_charge`, ``visible``
    to :func:`default_visible`. Returns flat ``pt, eta, phi`` (float64) of the
    measured particles and their per-event ``counts`` (int64).
    """
    cfg = detector_config(config)
    px, py, pz, e = (np.asarray(a, dtype=np.float64) for a in (px, py, pz, e))
    pid = np.asarray(pid, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    n = len(px)
    if not (len(py) == len(pz) == len(e) == len(pid) == n) or counts.sum() != n:
        raise ValueError("px, py, pz, e, pid must have the same length, equal to sum(counts)")
    charge = particle_charge(pid) if charge is None else np.asarray(charge, dtype=np.float64)
    vis = default_visible(pid, charge) if visible is None else np.asarray(visible, dtype=bool)

    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    keep = vis & (pt > 0)

    if cfg["enabled"]:
        if rng is None:
            raise ValueError("the detector smearing needs a numpy Generator (rng)")
        z = rng.standard_normal((n, 3))  # one triple per input particle, in input order
        apid = np.abs(pid)
        is_e = apid == 11
        is_gamma = apid == 22
        charged = charge != 0
        in_tracker = np.abs(np.where(keep, eta, 0.0)) < cfg["tracker_eta_max"]
        track = charged & ~is_e & in_tracker
        ecal = is_e | is_gamma
        hcal = ~track & ~ecal
        # Track pT measurement.
        s_trk = np.hypot(cfg["track_resolution_const"], cfg["track_resolution_slope"] * pt)
        pt_trk = pt * (1.0 + s_trk * z[:, 0])
        # Calorimeter energy measurement.
        s_cal = np.where(ecal, _resolution_calo(e, cfg["ecal_stochastic"], cfg["ecal_constant"]),
                         _resolution_calo(e, cfg["hcal_stochastic"], cfg["hcal_constant"]))
        e_cal = np.maximum(e * (1.0 + s_cal * z[:, 0]), 0.0)
        # Calorimeter directions: photons (ECAL), HCAL objects; electrons in the tracker keep the track's.
        s_ang = np.where(hcal, cfg["hcal_angle"], np.where(is_gamma | (is_e & ~in_tracker), cfg["ecal_angle"], 0.0))
        eta_m = np.where(keep, eta, 0.0) + s_ang * z[:, 1]
        phi_m = phi + s_ang * z[:, 2]
        phi_m = np.where(s_ang > 0, np.mod(phi_m + np.pi, 2 * np.pi) - np.pi, phi)
        pt_m = np.where(track, pt_trk, e_cal / np.cosh(eta_m))
        keep &= (np.abs(eta_m) < cfg["eta_max"]) & (pt_m >= cfg["pt_min"]) & (pt_m > 0)
        pt, eta, phi = pt_m, eta_m, phi_m

    event = np.repeat(np.arange(len(counts)), counts)
    new_counts = np.bincount(event[keep], minlength=len(counts)).astype(np.int64)
    return pt[keep], eta[keep], phi[keep], new_counts


def apply_detector(particles: ak.Array, rng: np.random.Generator | None, config: dict | None = None) -> ak.Array:
    """Detector response on an awkward array of events.

    ``particles``: one list per event of records with fields ``px, py, pz, e,
    pid`` and optionally ``charge`` (units of e) and ``visible`` (bool).
    Returns one list per event of records ``pt, eta, phi``.
    """
    counts = ak.to_numpy(ak.num(particles, axis=1))
    flat = ak.flatten(particles, axis=1)
    fields = set(flat.fields)
    missing = {"px", "py", "pz", "e", "pid"} - fields
    if missing:
        raise ValueError(f"particles lack field(s) {sorted(missing)}")
    get = lambda f: ak.to_numpy(flat[f]) if f in fields else None  # noqa: E731
    pt, eta, phi, new_counts = smear_flat(get("px"), get("py"), get("pz"), get("e"), get("pid"), counts, rng,
                                          config, charge=get("charge"), visible=get("visible"))
    return ak.unflatten(ak.zip({"pt": pt, "eta": eta, "phi": phi}), new_counts)
