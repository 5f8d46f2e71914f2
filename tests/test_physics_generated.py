"""Physics of the jets stage on events from the project's Pythia generator (slow: ~30 s on one core).

Signal: W'(3.5 TeV) -> X(500 GeV) Y(100 GeV), X, Y -> q q (the LHC Olympics R&D
analogue); background: QCD dijets with pTHat > 1100 GeV. Both through the
default parametric detector, clustered with the workflow's selection.
"""

from __future__ import annotations

import numpy as np
import pytest

from resonant.data import jets
from conftest import assert_same_jets

pytestmark = pytest.mark.slow

N_SIGNAL = 300
N_QCD = 300
M_RES, M_X, M_Y = 3500.0, 500.0, 100.0


def _generate(model, params, n, seed, process, label):
    from resonant.data.generate import generate_chunk

    return generate_chunk(model, params, n, seed, process, label, 0, progress=False)


@pytest.fixture(scope="module")
def samples():
    sig_raw = _generate("wprime_xy", {"m_res": M_RES, "m_x": M_X, "m_y": M_Y}, N_SIGNAL, 20251, "wprime_xy", 1)
    qcd_raw = _generate("qcd_dijet", {"pthat_min": 1100.0}, N_QCD, 20252, "qcd", 0)
    out = {}
    for name, raw in (("signal", sig_raw), ("qcd", qcd_raw)):
        table, stats = jets.jets_table(raw, progress=False)
        out[name] = {"raw": raw, "table": table, "stats": stats,
                     "cols": {c: table.column(c).to_numpy() for c in table.schema.names
                              if not c.endswith("_constituents") and c not in ("process",)}}
    return out


def _by_mass(c):
    heavy_is_1 = c["j1_m"] >= c["j2_m"]
    m_heavy = np.where(heavy_is_1, c["j1_m"], c["j2_m"])
    m_light = np.where(heavy_is_1, c["j2_m"], c["j1_m"])
    return m_heavy, m_light


def _tau21(c, j):
    return c[f"{j}_tau2"] / (c[f"{j}_tau1"] + 1e-5)  # the CATHODE convention


def _mode(x, lo, hi, width):
    hist, edges = np.histogram(x, bins=np.arange(lo, hi + width, width))
    return edges[np.argmax(hist)] + width / 2


def test_selection_efficiencies(samples):
    # Signal: two ~1.7 TeV jets from a 3.5 TeV resonance almost always pass pT > 1.2 TeV, |eta| < 2.5.
    assert samples["signal"]["stats"]["n_selected"] / N_SIGNAL > 0.75
    # QCD at pTHat > 1.1 TeV: ~68% pass the leading-jet cut (reference measurement; the jet pT
    # smears around pTHat with ISR/FSR and out-of-cone losses).
    assert 0.5 < samples["qcd"]["stats"]["n_selected"] / N_QCD < 0.85


def test_heavier_jet_mass_peaks_at_m_x(samples):
    m_heavy, _ = _by_mass(samples["signal"]["cols"])
    # The X jet: 500 GeV plus the underlying event and ISR caught in the R = 1.0 cone (a few
    # GeV of soft pT at dR ~ 0.5 from a 1.7 TeV jet adds ~(10-30 GeV)^2 x 10 to m^2), minus
    # FSR out of the cone; both are a few per cent of 500 GeV: median and mode within 10%.
    assert 450.0 < np.median(m_heavy) < 550.0
    assert 450.0 < _mode(m_heavy, 0.0, 1000.0, 25.0) < 575.0


def test_lighter_jet_mass_peaks_near_m_y(samples):
    _, m_light = _by_mass(samples["signal"]["cols"])
    # The Y jet: 100 GeV, but a soft-radiation shift that is negligible for the X jet matters
    # here: a 1.7 TeV jet of mass m that collects soft pT p_s at angle dR gets
    # m^2 -> m^2 + ~pT p_s dR^2, i.e. +30..70% at p_s ~ 10-20 GeV, dR ~ 0.5 (MPI, ISR); with MPI
    # the lighter R = 1.0 jet's median is ~115-145 GeV (reference measurements: 117 with this
    # detector, ~145 at truth level). The lighter jet is also sometimes a QCD-like jet of the
    # heavier resonance's FSR ordering. So: the mode within 20% of m_Y, the median above m_Y
    # and within 65% of it, and clearly separated from the X peak.
    mode = _mode(m_light, 0.0, 600.0, 20.0)
    assert 80.0 < mode < 130.0
    assert 95.0 < np.median(m_light) < 165.0
    assert np.percentile(m_light, 75) < 300.0


def test_mjj_peaks_at_the_resonance(samples):
    mjj = samples["signal"]["cols"]["mjj"]
    # The dijet carries the W' mass up to FSR/ISR and cone losses: median and mode within
    # the signal region used by the studies (3.3-3.7 TeV).
    assert 3300.0 < np.median(mjj) < 3700.0
    assert 3300.0 < _mode(mjj, 2000.0, 5000.0, 100.0) < 3700.0
    assert np.mean(np.abs(mjj - M_RES) < 300.0) > 0.6
    # QCD has no peak there: its m_jj is a falling spectrum starting near 2 pT_min
    qcd = samples["qcd"]["cols"]["mjj"]
    assert np.median(qcd) < 3300.0


def test_qcd_jets_are_less_two_prong_than_signal(samples):
    s, q = samples["signal"]["cols"], samples["qcd"]["cols"]
    sig_t21 = np.concatenate([_tau21(s, "j1"), _tau21(s, "j2")])
    qcd_t21 = np.concatenate([_tau21(q, "j1"), _tau21(q, "j2")])
    assert np.median(qcd_t21) > np.median(sig_t21) + 0.15
    # the heavier (X -> qq) jet is the most two-prong-like
    heavy_is_1 = s["j1_m"] >= s["j2_m"]
    heavy_t21 = np.where(heavy_is_1, _tau21(s, "j1"), _tau21(s, "j2"))
    assert np.median(heavy_t21) < np.median(qcd_t21) - 0.2


def test_features_are_well_formed(samples):
    for name, sample in samples.items():
        c = sample["cols"]
        assert np.all(c["j1_pt"] >= c["j2_pt"]) and np.all(c["j1_pt"] > 1200.0)
        assert np.all(np.abs(c["j1_eta"]) < 2.5) and np.all(np.abs(c["j2_eta"]) < 2.5)
        for j in ("j1", "j2"):
            assert np.all(c[f"{j}_m"] >= 0) and np.all(c[f"{j}_n"] >= 1)
            for t in ("tau1", "tau2", "tau3"):
                assert np.all(np.isfinite(c[f"{j}_{t}"])) and np.all(c[f"{j}_{t}"] >= 0)
        # jets of ~1.5 TeV at detector level have tens of constituents
        assert 20 < np.median(c["j1_n"]) < 200, name


def test_fast_constituents_are_fastjets_on_generated_events(samples):
    """The verified geometric constituent assignment reproduces FastJet's on Pythia events."""
    raw = samples["qcd"]["raw"]
    flat = jets.flat_particles_from_arrow(raw.column("particles"))
    fast = jets.cluster_flat(*flat, max_constituents=1000)
    slow = jets.cluster_flat(*flat, max_constituents=1000, constituents_from="fastjet")
    assert fast.stats["n_fallback"] < 0.2 * fast.n_selected
    assert_same_jets(fast, slow)


def test_contrastive_latent_does_not_learn_mjj(samples, tmp_path):
    """The contrastive encoder's tokens carry no absolute kinematics, so its latent cannot encode m_jj.

    Trained briefly on the QCD and W' events (2 groups), the latent separates them, yet on QCD events
    a cross-validated regressor predicts m_jj from the latent no better than a constant.
    """
    import torch
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from resonant import contrastive as C

    torch.set_num_threads(1)
    k = 16
    (tq, mq), (ts, ms) = (C.event_tokens(samples[name]["table"], k) for name in ("qcd", "signal"))
    tokens, mask = np.concatenate([tq, ts]), np.concatenate([mq, ms])
    groups = np.r_[np.zeros(len(tq)), np.ones(len(ts))].astype(int)
    idx = np.random.default_rng(0).permutation(len(groups))
    tr, va = idx[: int(0.75 * len(idx))], idx[int(0.75 * len(idx)):]
    scaler = C.TokenScaler().fit(tokens[tr], mask[tr])
    settings = dict(n_constituents=k, dim=32, heads=2, particle_blocks=1, class_blocks=1, proj_dim=16,
                    batch_size=64, epochs=10, patience=5)
    model, _ = C.train_encoder((scaler.transform(tokens[tr], mask[tr]), mask[tr], groups[tr]),
                               (scaler.transform(tokens[va], mask[va]), mask[va], groups[va]), settings, seed=1,
                               workdir=tmp_path,
                               trainer_kwargs={"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"})
    z = C.encode(model, scaler, tokens, mask)
    cv = KFold(5, shuffle=True, random_state=0)
    # the latent is alive: it separates W' from QCD (measured cross-validated AUC 0.96)
    score = cross_val_predict(LogisticRegression(), z, groups, cv=cv, method="decision_function")
    assert roc_auc_score(groups, score) > 0.8

    z_qcd = z[: len(tq)]
    qcd = samples["qcd"]["cols"]
    mjj = qcd["mjj"].astype(np.float64)
    regressors = {"knn": make_pipeline(StandardScaler(), KNeighborsRegressor(20)),
                  "linear": make_pipeline(StandardScaler(), LinearRegression())}

    def r2(X, reg):
        return r2_score(mjj, cross_val_predict(reg, X, mjj, cv=cv))

    # Measured on these ~200 QCD events: R^2 from the latent -0.01 to -0.14 (kNN) and -0.05 to -0.09
    # (linear) over encoder seeds 1-4; the statistical spread of a cross-validated R^2 of an
    # uninformative input at this sample size is a few 0.01. A threshold of 0.05 is thus beyond the
    # noise, and far below what real m_jj information gives: the same regressors on the jets' pT and
    # rapidity gap reach R^2 0.84-0.89 (the positive control below).
    for name, reg in regressors.items():
        assert r2(z_qcd, reg) < 0.05, name
    control = np.c_[qcd["j1_pt"], qcd["j2_pt"], np.abs(qcd["j1_eta"] - qcd["j2_eta"])]
    for name, reg in regressors.items():
        assert r2(control, reg) > 0.5, name
