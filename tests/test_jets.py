"""Jet clustering, selection and features (resonant.data.jets) on synthetic events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest

from resonant.data import jets
from resonant.data.schema import JETS_SCHEMA, particles_from_table, raw_table, validate_jets
from resonant.errors import InputError
from conftest import assert_same_jets

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# synthetic events


def spray(rng, pt, eta, phi, n, spread):
    """``n`` massless particles sharing ``pt``, gaussian (eta, phi) around the given direction."""
    frac = rng.dirichlet(np.ones(n))
    return pt * frac, eta + rng.normal(0, spread, n), phi + rng.normal(0, spread, n)


def wrapped(phi):
    return np.mod(np.asarray(phi) + np.pi, 2 * np.pi) - np.pi


def to_awkward(events):
    """events: list of (pt, eta, phi) array triples -> awkward particle lists (float32, like raw data)."""
    counts = [len(e[0]) for e in events]
    flat = {f: np.concatenate([np.asarray(e[i], dtype=np.float64) for e in events] + [np.zeros(0)])
            for i, f in enumerate(("pt", "eta", "phi"))}
    flat["phi"] = wrapped(flat["phi"])
    flat = {f: v.astype(np.float32) for f, v in flat.items()}
    return ak.unflatten(ak.zip(flat), np.asarray(counts, dtype=np.int64))


def single(*jets_):
    """An event of single-particle jets (pt, eta, phi): each jet is exactly that particle."""
    a = np.array(jets_, dtype=np.float64).reshape(-1, 3)
    return a[:, 0], a[:, 1], a[:, 2]


def cat(*parts):
    return tuple(np.concatenate([np.atleast_1d(p[i]) for p in parts]) for i in range(3))


def dijet_event(rng, pt1=1500.0, pt2=1400.0, n=40, spread=0.08, soft=0):
    """Two isolated back-to-back jets (+ ``soft`` uniform soft particles in |eta| < 4)."""
    e1 = spray(rng, pt1, rng.uniform(-1, 1), rng.uniform(-np.pi, np.pi), n, spread)
    e2 = spray(rng, pt2, rng.uniform(-1, 1), e1[2].mean() + np.pi, n, spread)
    parts = [e1, e2]
    if soft:
        parts.append((rng.exponential(1.0, soft) + 0.3, rng.uniform(-4, 4, soft), rng.uniform(-np.pi, np.pi, soft)))
    return cat(*parts)


def p4(pt, eta, phi, m=0.0):
    pt, eta, phi, m = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi, m))
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta),
                     np.sqrt((pt * np.cosh(eta)) ** 2 + m ** 2)], axis=-1)


# ---------------------------------------------------------------------------
# brute-force N-subjettiness (independent of the module: plain O(N^3) exclusive kt)


def _rap_phi(v):
    px, py, pz, e = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    return 0.5 * np.log((e + pz) / (e - pz)), np.arctan2(py, px)


def _dist2(y1, p1, y2, p2):
    dp = np.abs(p1 - p2)
    dp = np.where(dp > np.pi, 2 * np.pi - dp, dp)
    return (y1 - y2) ** 2 + dp ** 2


def brute_kt_axes(vecs: np.ndarray, n: int) -> np.ndarray:
    """Exclusive kt jets (E scheme, no beam: R -> infinity) down to ``n``: merge the pair of
    smallest min(kt_i^2, kt_j^2) dR_ij^2 until ``n`` pseudojets remain."""
    jets_ = [v.copy() for v in vecs]
    while len(jets_) > n:
        a = np.array(jets_)
        kt2 = a[:, 0] ** 2 + a[:, 1] ** 2
        y, p = _rap_phi(a)
        d = np.minimum.outer(kt2, kt2) * _dist2(y[:, None], p[:, None], y[None, :], p[None, :])
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        merged = jets_[i] + jets_[j]
        jets_ = [v for k, v in enumerate(jets_) if k not in (i, j)] + [merged]
    return np.array(jets_)


def brute_tau(pt, eta, phi, n, r0=1.0) -> float:
    vecs = p4(pt, eta, phi)
    if len(pt) <= n:
        return 0.0
    axes = brute_kt_axes(vecs, n)
    ay, ap = _rap_phi(axes)
    d2 = _dist2(np.asarray(eta)[:, None], np.asarray(phi)[:, None], ay[None, :], ap[None, :])
    return float(np.sum(pt * np.sqrt(d2.min(axis=1))) / (np.sum(pt) * r0))


def nsub_of(groups, r0=1.0):
    """jets.nsubjettiness on jets given as (pt, eta, phi) particle groups (massless)."""
    counts = [len(g[0]) for g in groups]
    pt, eta, phi = (np.concatenate([np.asarray(g[i], dtype=np.float64) for g in groups]) for i in range(3))
    phi = wrapped(phi)
    v = p4(pt, eta, phi)
    return jets.nsubjettiness(jets._offsets(counts), pt, eta, phi, v[:, 0], v[:, 1], v[:, 2], v[:, 3], radius=r0)


# ---------------------------------------------------------------------------
# kinematics


def test_dijet_mass_equals_explicit_four_vector_sum():
    rng = np.random.default_rng(1)
    n = 1000
    a = (rng.uniform(100, 3000, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(0, 600, n))
    b = (rng.uniform(100, 3000, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(0, 600, n))
    s = p4(*a) + p4(*b)
    explicit = np.sqrt(s[:, 3] ** 2 - s[:, 0] ** 2 - s[:, 1] ** 2 - s[:, 2] ** 2)
    np.testing.assert_allclose(jets.dijet_mass(*a, *b), explicit, rtol=1e-10)
    # four_vectors with and without mass agree with the textbook formula
    np.testing.assert_allclose(np.stack(jets.four_vectors(*a), axis=-1), p4(*a), rtol=1e-12)
    np.testing.assert_allclose(np.stack(jets.four_vectors(*a[:3]), axis=-1), p4(*a[:3]), rtol=1e-12)
    # and kinematics inverts four_vectors
    pt, eta, phi, m = jets.kinematics(*jets.four_vectors(*a))
    np.testing.assert_allclose(pt, a[0], rtol=1e-12)
    np.testing.assert_allclose(eta, a[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(phi, a[2], rtol=1e-12)
    np.testing.assert_allclose(m, a[3], rtol=1e-6, atol=1e-6)


def test_mjj_of_clustered_events_is_the_dijet_four_vector_mass():
    rng = np.random.default_rng(2)
    events = [dijet_event(rng, soft=50) for _ in range(30)]
    out, mask = jets.cluster(to_awkward(events))
    assert mask.all()
    j1, j2 = out.j1, out.j2
    s = p4(j1.pt, j1.eta, j1.phi, j1.m) + p4(j2.pt, j2.eta, j2.phi, j2.m)
    explicit = np.sqrt(s[:, 3] ** 2 - s[:, 0] ** 2 - s[:, 1] ** 2 - s[:, 2] ** 2)
    np.testing.assert_allclose(ak.to_numpy(out.mjj), explicit, rtol=1e-9)
    np.testing.assert_allclose(ak.to_numpy(out.mjj), jets.dijet_mass(j1.pt, j1.eta, j1.phi, j1.m,
                                                                     j2.pt, j2.eta, j2.phi, j2.m), rtol=1e-9)
    # the dijet of two ~1.4 TeV back-to-back jets: m_jj >= pT1 + pT2
    assert np.all(ak.to_numpy(out.mjj) >= ak.to_numpy(j1.pt + j2.pt) * 0.99)


def test_masses_are_non_negative_and_finite():
    # one massless particle per jet: m^2 is zero up to rounding, which may be negative
    rng = np.random.default_rng(3)
    events = [single((rng.uniform(1250, 3000), rng.uniform(-2, 2), 0.3),
                     (rng.uniform(800, 1200), rng.uniform(-2, 2), 0.3 + np.pi)) for _ in range(200)]
    out, mask = jets.cluster(to_awkward(events))
    assert mask.all()
    for j in ("j1", "j2"):
        m = ak.to_numpy(out[j].m)
        assert np.all(np.isfinite(m)) and np.all(m >= 0)
        assert np.all(m < 1e-3 * ak.to_numpy(out[j].pt))
    assert jets.invariant_mass(np.float64(1.0), 0.0, 0.0, 1.0 - 1e-15) == 0.0


# ---------------------------------------------------------------------------
# constituents


def test_dphi_wraps_for_a_jet_at_phi_pi():
    rng = np.random.default_rng(4)
    phi0 = np.pi - 0.02
    offsets = np.linspace(-0.3, 0.3, 25)  # half of the particles cross +pi and are stored near -pi
    pts = rng.uniform(5, 100, 25)
    pts[12] = 1200.0  # the hard core, at phi0
    jet_a = (pts, rng.normal(0, 0.05, 25), phi0 + offsets)
    jet_b = spray(rng, 1300.0, 0.2, 0.1, 20, 0.05)
    out, mask = jets.cluster(to_awkward([cat(jet_a, jet_b)]), max_constituents=100)
    assert mask.all()
    ja = out.j1 if abs(abs(out.j1.phi[0]) - np.pi) < 0.5 else out.j2
    assert abs(abs(ja.phi[0]) - np.pi) < 0.1
    stored_phi = wrapped(phi0 + offsets)
    assert (stored_phi < 0).sum() >= 5 and (stored_phi > 0).sum() >= 5
    dphi = np.sort(ak.to_numpy(ja.constituents.dphi[0]))
    assert np.all(np.abs(dphi) <= np.pi)
    # the jet axis sits at phi0 + delta: each constituent's dphi is its offset minus delta
    delta = wrapped(ja.phi[0] - phi0)
    np.testing.assert_allclose(dphi, np.sort(offsets - delta), atol=1e-5)
    assert dphi.min() < -0.25 and dphi.max() > 0.25


def test_constituents_sorted_capped_and_n_is_the_true_count():
    rng = np.random.default_rng(5)
    events = []
    for _ in range(10):
        a = spray(rng, 1600.0, 0.0, 0.0, 40, 0.1)
        b = spray(rng, 1300.0, 0.5, np.pi, 25, 0.1)
        events.append(cat(a, b))
    for cap in (10, 100):
        out, mask = jets.cluster(to_awkward(events), max_constituents=cap)
        assert mask.all()
        assert np.all(ak.to_numpy(out.j1.n) == 40) and np.all(ak.to_numpy(out.j2.n) == 25)
        for j, n in (("j1", 40), ("j2", 25)):
            const = out[j].constituents
            assert np.all(ak.to_numpy(ak.num(const)) == min(n, cap))
            pt_rel = const.pt_rel
            assert ak.all(pt_rel[:, 1:] <= pt_rel[:, :-1])  # descending
            assert ak.all((pt_rel > 0) & (pt_rel <= 1))
            if cap >= n:  # all constituents: the scalar pT sum is at least the jet pT
                assert np.all(ak.to_numpy(ak.sum(pt_rel, axis=1)) >= 1 - 1e-6)
    # the hardest constituent of j1 is the hardest particle of the event's first jet
    hard = np.array([e[0][:40].max() for e in events]) / ak.to_numpy(out.j1.pt)
    np.testing.assert_allclose(ak.to_numpy(out.j1.constituents.pt_rel[:, 0]), hard, rtol=1e-6)


def test_deta_relative_to_the_jet():
    rng = np.random.default_rng(6)
    a = spray(rng, 1600.0, 1.5, 0.0, 30, 0.1)
    b = spray(rng, 1300.0, -0.5, np.pi, 30, 0.1)
    out, _ = jets.cluster(to_awkward([cat(a, b)]), max_constituents=100)
    order = np.argsort(-a[0].astype(np.float32), kind="stable")
    expected = a[1].astype(np.float32).astype(np.float64)[order] - out.j1.eta[0]
    np.testing.assert_allclose(ak.to_numpy(out.j1.constituents.deta[0]), expected, atol=1e-5)


# ---------------------------------------------------------------------------
# N-subjettiness


def test_two_prong_jets_have_small_tau21():
    rng = np.random.default_rng(7)
    events = []
    for _ in range(20):
        # two-prong: two hard partons dR = 0.4 apart; one-prong: one parton; both with a soft spray
        two = cat(spray(rng, 700.0, 0.2, 0.0, 12, 0.02), spray(rng, 700.0, -0.2, 0.0, 12, 0.02),
                  (rng.uniform(0.5, 3, 30), rng.normal(0, 0.35, 30), rng.normal(0, 0.35, 30)))
        one = cat(spray(rng, 1250.0, 0.0, np.pi, 24, 0.02),
                  (rng.uniform(0.5, 3, 30), rng.normal(0, 0.35, 30), rng.normal(np.pi, 0.35, 30)))
        events.append(cat(two, one))
    out, mask = jets.cluster(to_awkward(events))
    assert mask.all()
    two_j, one_j = out.j1, out.j2  # 1400 GeV vs 1250 GeV
    assert np.all(ak.to_numpy(two_j.m) > 250) and np.all(ak.to_numpy(one_j.m) < 200)
    tau21_two = ak.to_numpy(two_j.tau2 / two_j.tau1)
    tau21_one = ak.to_numpy(one_j.tau2 / one_j.tau1)
    assert np.median(tau21_two) < 0.3
    assert np.median(tau21_one) > 0.5
    assert np.all(tau21_two < tau21_one)
    for j in (two_j, one_j):  # (kT axes are not minimised: tau3 > tau2 is possible, so no ordering here)
        for f in ("tau1", "tau2", "tau3"):
            assert np.all((ak.to_numpy(j[f]) > 0) & (ak.to_numpy(j[f]) < 1))


def test_nsubjettiness_matches_brute_force_kt_axes():
    rng = np.random.default_rng(8)
    groups = []
    for n in (1, 2, 3, 4, 7, 15, 30, 45):
        prongs = rng.integers(1, 4)
        parts = [spray(rng, rng.uniform(100, 800), rng.normal(0, 0.3), rng.normal(0, 0.3), max(1, n // prongs), 0.05)
                 for _ in range(prongs)]
        g = cat(*parts)
        groups.append(tuple(x[:n] for x in g))
    # a jet across phi = pi
    groups.append((rng.uniform(1, 50, 20), rng.normal(0.5, 0.2, 20), np.pi + rng.normal(0, 0.3, 20)))
    taus = nsub_of(groups)
    for g, t in zip(groups, taus):
        phi = wrapped(g[2])
        ref = [brute_tau(g[0], g[1], phi, n) for n in (1, 2, 3)]
        np.testing.assert_allclose(t, ref, rtol=1e-9, atol=1e-12)
    # tau_N = 0 when the jet has at most N constituents
    assert taus[0].tolist() == [0.0, 0.0, 0.0] and taus[1][1:].tolist() == [0.0, 0.0] and taus[2][2] == 0.0
    # R0 normalisation: tau scales as 1 / R0
    np.testing.assert_allclose(nsub_of(groups, r0=0.8), taus / 0.8, rtol=1e-12)


def test_nsubjettiness_matches_fjcontrib():
    """FastJet's binding of fjcontrib's Nsubjettiness(KT_Axes, NormalizedMeasure(1, R0)) is the reference."""
    import fastjet

    rng = np.random.default_rng(9)
    groups = []
    for _ in range(200):
        n = int(rng.integers(1, 120))
        prongs = [spray(rng, rng.uniform(50, 600), rng.normal(0, 0.3), rng.normal(0, 0.3), n, 0.08)
                  for _ in range(int(rng.integers(1, 4)))]
        soft = (rng.uniform(0.5, 5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n))
        groups.append(cat(*prongs, soft))
    taus = nsub_of(groups)
    counts = [len(g[0]) for g in groups]
    pt, eta, phi = (np.concatenate([g[i] for g in groups]) for i in range(3))
    v = p4(pt, eta, wrapped(phi))
    arr = jets._momentum_array(jets._offsets(counts), v[:, 0], v[:, 1], v[:, 2], v[:, 3])
    cs = fastjet.ClusterSequence(arr, fastjet.JetDefinition(fastjet.kt_algorithm, 1000.0))
    ref = np.asarray(cs.njettiness(measure_definition="NormalizedMeasure", axes_definition="KT_Axes",
                                   njets=[1, 2, 3], beta=1.0, R0=1.0)).reshape(-1, 3)
    np.testing.assert_allclose(taus, ref, rtol=1e-9, atol=1e-13)


def test_clustered_taus_match_brute_force_on_isolated_jets():
    rng = np.random.default_rng(10)
    events, truth = [], []
    for _ in range(4):
        a = cat(spray(rng, 800.0, 0.1, 0.0, 10, 0.03), spray(rng, 700.0, -0.25, 0.1, 10, 0.03))
        b = spray(rng, 1300.0, 0.0, np.pi, 20, 0.1)
        events.append(cat(a, b))
        truth.append((a, b))
    out, mask = jets.cluster(to_awkward(events))
    assert mask.all()
    for k, (a, b) in enumerate(truth):
        for j, g in (("j1", a), ("j2", b)):
            g32 = tuple(np.asarray(x, dtype=np.float32).astype(np.float64) for x in (g[0], g[1], wrapped(g[2])))
            ref = [brute_tau(*g32, n) for n in (1, 2, 3)]
            got = [float(out[j][f"tau{n}"][k]) for n in (1, 2, 3)]
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# selection


def test_selection_leading_pt_and_eta():
    events = [
        single((1300, 0.0, 0.0), (1000, 3.0, np.pi)),  # second jet forward: one central jet
        single((1100, 0.0, 0.0), (1000, 0.5, np.pi)),  # leading pT below the cut
        single((1300, 0.0, 0.0), (1250, 2.8, np.pi), (500, -1.0, np.pi / 2)),  # j2 = the central 500
        single((1400, 2.6, 0.0), (1250, 0.0, np.pi), (900, -1.0, 1.0)),  # j1 = 1250 (1400 is forward)
        single((1150, 0.0, 0.0), (1300, 3.2, np.pi), (1000, 1.0, 1.5)),  # leading central jet 1150
        single((1300, 0.0, 0.0), (1200, 1.0, np.pi)),
        single((1300, 0.0, 0.0), (1200, -2.4, np.pi)),
    ]
    out, mask = jets.cluster(to_awkward(events))
    assert mask.tolist() == [False, False, True, True, False, True, True]
    np.testing.assert_allclose(ak.to_numpy(out.j1.pt), [1300, 1250, 1300, 1300], rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(out.j2.pt), [500, 900, 1200, 1200], rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(out.j2.eta), [-1.0, -1.0, 1.0, -2.4], atol=1e-6)
    # the cuts are parameters
    _, mask = jets.cluster(to_awkward(events), jet_eta_max=3.1, lead_pt_min=1000.0)
    assert mask.tolist() == [True, True, True, True, True, True, True]
    _, mask = jets.cluster(to_awkward(events), jet_eta_max=2.0)
    assert mask.tolist() == [False, False, True, True, False, True, False]


def test_empty_and_tiny_events_fail_selection_without_crashing():
    rng = np.random.default_rng(11)
    empty = (np.zeros(0), np.zeros(0), np.zeros(0))
    events = [empty, single((1500, 0.0, 0.0)), single((1500, 0.0, 0.0), (1400, 0.1, 0.1)),  # one jet
              single((0.0, 0.0, 0.0), (0.0, 1.0, 1.0)), dijet_event(rng), empty]
    out, mask = jets.cluster(to_awkward(events))
    assert mask.tolist() == [False, False, False, False, True, False]
    assert len(out) == 1
    out, mask = jets.cluster(to_awkward([empty, empty]))
    assert len(out) == 0 and mask.tolist() == [False, False]
    out, mask = jets.cluster(to_awkward([]))
    assert len(out) == 0 and len(mask) == 0
    table, stats = jets.jets_table(raw_table(np.zeros(0, np.int64), "qcd", 0, to_awkward([])))
    assert table.schema.equals(JETS_SCHEMA) and table.num_rows == 0 and stats["n_in"] == 0


def test_zero_pt_padding_is_ignored():
    rng = np.random.default_rng(12)
    ev = dijet_event(rng)
    padded = cat(ev, (np.zeros(50), np.zeros(50), np.zeros(50)))
    a, _ = jets.cluster(to_awkward([ev]))
    b, _ = jets.cluster(to_awkward([padded]))
    assert ak.to_list(a) == ak.to_list(b)


# ---------------------------------------------------------------------------
# constituents: geometric fast path vs FastJet's constituent indices


def test_fast_constituents_equal_fastjet_constituents():
    rng = np.random.default_rng(13)
    events = []
    for k in range(150):
        # hard dijets, some with a nearby third jet, in a soft underlying event that forms chains
        parts = [dijet_event(rng, n=30, spread=0.15, soft=250)]
        if k % 3 == 0:
            parts.append(spray(rng, rng.uniform(100, 600), rng.uniform(-1, 1), rng.uniform(-np.pi, np.pi), 15, 0.1))
        events.append(cat(*parts))
    flat = jets._flat_particles(to_awkward(events))
    fast = jets.cluster_flat(*flat, max_constituents=500)
    slow = jets.cluster_flat(*flat, max_constituents=500, constituents_from="fastjet")
    assert fast.n_selected > 100
    assert 0 < fast.stats["n_fallback"] < fast.n_selected  # both paths were exercised
    assert_same_jets(fast, slow)


# ---------------------------------------------------------------------------
# tables and the CLI


def raw_events(rng, n=40):
    events, labels, procs = [], [], []
    for k in range(n):
        if k % 4 == 3:
            events.append(dijet_event(rng, pt1=900.0, pt2=800.0, soft=30))  # fails lead_pt_min
        else:
            events.append(dijet_event(rng, soft=30))
        labels.append(k % 2)
        procs.append("sig" if k % 2 else "qcd")
    return raw_table(1000 + np.arange(n) * 3, np.array(procs, dtype=object), np.array(labels), to_awkward(events))


def test_jets_table_schema_order_and_chunking():
    raw = raw_events(np.random.default_rng(14))
    table, stats = jets.jets_table(raw, max_constituents=16, chunk_size=7)
    assert table.schema.equals(JETS_SCHEMA)
    validate_jets(table, "mem", need_constituents=True)
    keep = np.arange(40) % 4 != 3
    assert table.column("event_id").to_pylist() == (1000 + np.arange(40) * 3)[keep].tolist()
    assert table.column("label").to_pylist() == (np.arange(40) % 2)[keep].tolist()
    assert stats["n_in"] == 40 and stats["n_selected"] == 30
    assert stats["n_in_by_process"] == {"qcd": 20, "sig": 20}
    assert stats["n_selected_by_process"] == {"qcd": 20, "sig": 10}  # every 4th event (odd: sig) fails
    assert max(len(c) for c in table.column("j1_constituents").to_pylist()) == 16
    assert np.all(table.column("j1_pt").to_numpy() >= table.column("j2_pt").to_numpy())
    whole, _ = jets.jets_table(raw, max_constituents=16, chunk_size=1000)
    assert whole.equals(table)
    # the awkward entry point gives the same jets
    out, mask = jets.cluster(particles_from_table(raw), max_constituents=16)
    np.testing.assert_array_equal(mask, keep)
    np.testing.assert_allclose(ak.to_numpy(out.mjj), table.column("mjj").to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ak.to_numpy(out.j2.n), table.column("j2_n").to_numpy())


def test_cli_writes_jets_and_stats(tmp_path):
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    try:
        import cluster as cli_cluster
    finally:
        sys.path.pop(0)
    from resonant import io

    raw = raw_events(np.random.default_rng(15))
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    io.write_table(raw.slice(0, 20), a)
    io.write_table(raw.slice(20), b)
    out, stats = tmp_path / "jets.parquet", tmp_path / "stats.json"
    cli_cluster.main(["--input", str(a), str(b), "--output", str(out), "--stats", str(stats),
                      "--params", json.dumps({"jet_radius": 1.0, "lead_pt_min": 1200.0, "jet_eta_max": 2.5,
                                              "max_constituents": 8})])
    table = io.read_table(out)
    validate_jets(table, out, need_constituents=True)
    assert table.num_rows == 30
    s = json.loads(stats.read_text())
    assert s["n_in"] == 40 and s["n_selected"] == 30 and s["n_in_by_process"] == {"qcd": 20, "sig": 20}
    assert s["selection"]["max_constituents"] == 8
    # an option overrides --params; nothing passes -> InputError naming the inputs, nothing written
    none = tmp_path / "none.parquet"
    with pytest.raises(InputError, match="no event of 40 passes") as err:
        cli_cluster.main(["--input", str(a), str(b), "--output", str(none), "--params",
                          json.dumps({"lead_pt_min": 1200.0}), "--lead-pt-min", "9000"])
    assert str(a) in str(err.value) and "9000" in str(err.value) and err.value.fix
    assert not none.exists() and not list(tmp_path.glob(".none*"))
    with pytest.raises(InputError, match="selection.jet_size"):
        cli_cluster.main(["--input", str(a), "--output", str(none), "--params", '{"jet_size": 1}'])


def test_cli_help():
    res = subprocess.run([sys.executable, str(ROOT / "workflow/scripts/cluster.py"), "--help"],
                         capture_output=True, text=True, check=True)
    assert "--lead-pt-min" in res.stdout and "--input" in res.stdout


def test_bad_arguments():
    with pytest.raises(ValueError):
        jets.cluster_flat(np.array([0]), np.zeros(0), np.zeros(0), np.zeros(0), radius=0)
    with pytest.raises(ValueError):
        jets.cluster_flat(np.array([0]), np.zeros(0), np.zeros(0), np.zeros(0), max_constituents=0)
    with pytest.raises(KeyError):
        jets.selection_kwargs({"jet_size": 1.0})
    assert jets.selection_kwargs({"jet_radius": 0.8, "max_constituents": 5}) == {"radius": 0.8,
                                                                                 "max_constituents": 5}


def test_arrow_and_awkward_inputs_agree():
    raw = raw_events(np.random.default_rng(16), n=12)
    a = jets.cluster_flat(*jets.flat_particles_from_arrow(raw.column("particles")))
    b = jets.cluster_flat(*jets._flat_particles(particles_from_table(raw)))
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name])
    # a sliced (offset) Arrow array
    sl = raw.slice(5, 4)
    c = jets.cluster_flat(*jets.flat_particles_from_arrow(sl.column("particles")))
    d = jets.cluster_flat(*jets._flat_particles(particles_from_table(sl)))
    np.testing.assert_array_equal(c.columns["mjj"], d.columns["mjj"])
    assert pa.chunked_array([sl.column("particles").chunks[0]]).length() == 4
