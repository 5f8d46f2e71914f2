"""Physics of the jets stage and of the methods on events from the project's Pythia generator.

Signal: W'(3.5 TeV) -> X(500 GeV) Y(100 GeV), X, Y -> q q (the LHC Olympics R&D
analogue); background: QCD dijets with pTHat > 1100 GeV. Both through the
default parametric detector, clustered with the workflow's selection (~30 s on
one core). The CATHODE tests add 3000 QCD events with pTHat > 1.3 TeV and a
small flow (~45 s), the contrastive IP test five small simulation samples and a
small encoder (~30 s).
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


# ------------------------------------------------------------------------------------------ CATHODE

SR, SB = (3300.0, 3700.0), (2300.0, 5000.0)  # the studies' regions
CATHODE_FEATURES = ["mj1", "dmj", "tau21_j1", "tau21_j2"]  # classic CATHODE, jets ordered by mass
N_QCD_CATHODE = 3000
CATHODE_FLOW = dict(kind="nsf", transforms=4, hidden=32, layers=2, lr=2e-3, batch_size=128, epochs=60, patience=8,
                    n_best=3)
CATHODE_BDT = dict(folds=5, n_ensemble=2, max_depth=3, learning_rate=0.1, n_estimators=300, early_stopping=20)
OVERSAMPLING = 4


def _in_sr(m):
    return (m > SR[0]) & (m < SR[1])


def _in_sb(m):
    return (m > SB[0]) & (m < SB[1]) & ~_in_sr(m)


@pytest.fixture(scope="module")
def cathode_qcd():
    """QCD for the CATHODE tests: 3000 events with pTHat > 1.3 TeV (~35 s).

    The generator cut sits above the selection's 1.2 TeV to put ~22% of the events in the SR (9% at
    1.1 TeV): it halves the generation time. It biases the m_jj spectrum (and the mix of jet pT and
    rapidity gap at a given m_jj) at every m_jj smoothly, sidebands and SR alike, which a flow
    conditioned on m_jj has to interpolate as it would any smooth m_jj dependence.
    """
    from resonant.features import high_level

    raw = _generate("qcd_dijet", {"pthat_min": 1300.0}, N_QCD_CATHODE, 20253, "qcd", 0)
    table, _ = jets.jets_table(raw, progress=False)
    return {"table": table, "X": high_level(table, CATHODE_FEATURES),
            "mjj": table.column("mjj").to_numpy().astype(np.float64)}


@pytest.fixture(scope="module")
def cathode_flow(cathode_qcd):
    """The CATHODE engine's flow p(x | m_jj), trained on the sidebands only (~2200 events, ~8 s)."""
    import torch

    from resonant.models.flow import ConditionalFlow

    torch.set_num_threads(1)
    X, m = cathode_qcd["X"], cathode_qcd["mjj"]
    sb = np.random.default_rng(1).permutation(np.flatnonzero(_in_sb(m)))
    tr, va = sb[: int(0.8 * len(sb))], sb[int(0.8 * len(sb)):]
    return ConditionalFlow.from_settings(len(CATHODE_FEATURES), CATHODE_FLOW, seed=1).fit(X[tr], m[tr], X[va], m[va])


def _sample_sr(flow, mjj_data, seed):
    """CATHODE's SR samples: m_jj from the KDE of the SR data (oversampled), features from the flow."""
    from resonant.regions import sample_mjj

    return flow.sample(sample_mjj(mjj_data, OVERSAMPLING * len(mjj_data), SR, 10.0, seed=seed), seed=seed + 1)


def test_cathode_background_model_matches_the_sr_background_without_signal(cathode_qcd, cathode_flow):
    """No signal: a classifier of the true SR background vs the flow's SR samples finds AUC 0.5 +- 4 SE.

    The tolerance is statistical: two samples of one distribution (n1 true, n0 generated) have a
    Mann-Whitney AUC with standard error SE = sqrt((n1 + n0 + 1) / (12 n1 n0)), here 0.013 for ~650 true
    and ~2600 generated events (measured: the out-of-fold AUC of these BDTs on 40 samples of identical
    distributions had mean 0.4945 and spread 0.0132). 4 SE = 0.05: a false failure at 6e-5 from
    statistics alone. Measured: 0.514 (641 true, 2564 generated: 1.1 SE); 0.500-0.525 over other flow and
    split seeds (a MAF flow of the same size: 0.525-0.549, 2-4 SE, hence the neural-spline flow here).
    """
    from resonant.cathode import fidelity_auc

    X, m = cathode_qcd["X"], cathode_qcd["mjj"]
    sr = _in_sr(m)
    true = X[sr]
    gen = _sample_sr(cathode_flow, m[sr], seed=3)
    auc = fidelity_auc(true, gen, CATHODE_BDT, seed=0, n_jobs=1)
    n1, n0 = len(true), len(gen)
    se = np.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0))
    assert n1 > 500, n1
    assert abs(auc - 0.5) < 4 * se, (auc, se, n1, n0)


def test_cathode_finds_a_strong_signal_close_to_the_idealised_detector(samples, cathode_qcd, cathode_flow):
    """A strong injection (S/B ~ 0.45 in the SR): CATHODE's max SIC is far above 1 and >= idealised / 2.

    SR QCD is split 40/30/30 into data, the idealised detector's true background and the test set; the
    SR signal half into data, half into the test set. Same k-fold BDTs for both. Thresholds: a score
    that knows nothing has max SIC ~1 (the all-pass point; measured 1.01 on average and at most 1.06 for
    200 random scores on this test set of 114 signal and 193 background events), so > 2 is a real
    signal; the cap at >= 10 passing background events is sqrt(193 / 10) = 4.4. The max SIC is read at
    >= 10 background test events: eps_B there has a Poisson error of ~30%, i.e. ~16% on each max SIC,
    and the training of each on ~370 data events adds a similar spread (idealised 2.9-3.6 over split
    seeds); the log of the ratio thus fluctuates by ~0.25, and a factor 2 (log 0.69) is ~3 sigma.
    Measured: CATHODE 4.0, idealised 3.55 (supervised 3.9); over other split and flow seeds CATHODE
    3.2-3.5, idealised 2.9-3.4.
    """
    from resonant.cathode import kfold_classify
    from resonant.features import high_level
    from resonant.metrics import evaluate

    Xq, mq = cathode_qcd["X"], cathode_qcd["mjj"]
    sig = samples["signal"]["table"]
    Xs, ms = high_level(sig, CATHODE_FEATURES), sig.column("mjj").to_numpy().astype(np.float64)
    rng = np.random.default_rng(2)
    srq = rng.permutation(np.flatnonzero(_in_sr(mq)))
    srs = rng.permutation(np.flatnonzero(_in_sr(ms)))
    dq, iq, tq = np.split(srq, [int(0.4 * len(srq)), int(0.7 * len(srq))])
    ds, ts = np.split(srs, [len(srs) // 2])
    data, m_data = np.r_[Xq[dq], Xs[ds]], np.r_[mq[dq], ms[ds]]
    test = np.r_[Xs[ts], Xq[tq]]
    y = np.r_[np.ones(len(ts)), np.zeros(len(tq))]
    gen = _sample_sr(cathode_flow, m_data, seed=4)

    def max_sic(X_bkg):
        scores = kfold_classify(data, X_bkg, {"test": test}, CATHODE_BDT, seed=1, n_jobs=1)["scores"]["test"]
        return evaluate(y, scores.mean(0))["max_sic"]

    cathode, ideal = max_sic(gen), max_sic(Xq[iq])
    assert len(ds) > 80 and len(tq) > 150, (len(ds), len(tq))
    assert cathode > 2.0, (cathode, ideal)
    assert cathode > ideal / 2, (cathode, ideal)


# ------------------------------------------------------------------------------------------ contrastive IP

IP_FAMILY = {"wprime_xy_400_70": (400.0, 70.0, 20261), "wprime_xy_600_130": (600.0, 130.0, 20262)}
IP_OTHERS = {"wprime_wz": ("wprime_wz", {"m_res": M_RES}, 20263),
             "zprime_ttbar": ("zprime_ttbar", {"m_res": M_RES}, 20264),
             "sm_vjet": ("sm_vjet", {"pthat_min": 1100.0}, 20265)}
N_IP = 250


@pytest.fixture(scope="module")
def ip_groups(cathode_qcd):
    """Simulation of an IP training (~20 s): groups {name: [jets tables]}; W' -> XY is one family of two
    mass points, (400, 70) and (600, 130) GeV, whose midpoint (500, 100) -- the module's signal -- is the
    held-out point: an interpolation in both m_X and m_Y."""
    out = {"qcd": [cathode_qcd["table"].slice(0, 400)], "wprime_xy": []}
    for name, (m_x, m_y, seed) in IP_FAMILY.items():
        raw = _generate("wprime_xy", {"m_res": M_RES, "m_x": m_x, "m_y": m_y}, N_IP, seed, name, 1)
        out["wprime_xy"].append(jets.jets_table(raw, progress=False)[0])
    for name, (model, params, seed) in IP_OTHERS.items():
        raw = _generate(model, params, N_IP, seed, name, int(model != "sm_vjet"))
        out[name] = [jets.jets_table(raw, progress=False)[0]]
    return out


def test_ip_held_out_mass_point_lands_next_to_its_family(samples, ip_groups, tmp_path):
    """IP: an encoder trained without W'(3.5 TeV) -> X(500) Y(100) maps those events next to their family.

    Groups: QCD, W' -> WZ, Z' -> tt, V+jets, and the W' -> XY family at (400, 70) and (600, 130) GeV
    (one group, as the workflow's process groups are models). Nearest-centroid check on the test split:
    the held-out events' latent centroid is nearer the family's than any other group's, by a factor 2.
    The centroids' statistical errors are ~ rms radius / sqrt(n) ~ 1.1-1.4 / sqrt(257) ~ 0.07-0.09.
    Measured (encoder seeds 1-3): family 0.12-0.25 (its mass points 0.26-0.57); nearest other group
    V+jets 1.5-1.9, then QCD 1.7-2.3, W' -> WZ 2.2-2.9, Z' -> tt 2.1-2.9.
    By contrast, with the family at (300, 300) and (600, 200) -- the simulation of the laptop config,
    where m_Y = 100 lies outside the family's range, an extrapolation -- the held-out point lands next to
    V+jets or QCD (1.0-1.2) rather than its family (1.4-2.6), as in the laptop IP encoder.
    """
    import torch

    from resonant import contrastive as C

    torch.set_num_threads(1)
    k = 16
    names = list(ip_groups)
    tokens, mask, group, member = [], [], [], []
    for g, name in enumerate(names):
        for i, table in enumerate(ip_groups[name]):
            t, mk = C.event_tokens(table, k)
            tokens.append(t)
            mask.append(mk)
            group.append(np.full(len(t), g))
            member.append(np.full(len(t), i))
    tokens, mask, group, member = (np.concatenate(a) for a in (tokens, mask, group, member))
    idx = np.random.default_rng(1).permutation(len(group))
    tr, va, te = np.split(idx, [int(0.6 * len(idx)), int(0.8 * len(idx))])
    scaler = C.TokenScaler().fit(tokens[tr], mask[tr])
    settings = dict(n_constituents=k, dim=32, heads=2, particle_blocks=1, class_blocks=1, proj_dim=16,
                    batch_size=100, epochs=15, patience=4, warmup_epochs=1, lr=1e-3, temperature=0.1)
    model, _ = C.train_encoder((scaler.transform(tokens[tr], mask[tr]), mask[tr], group[tr]),
                               (scaler.transform(tokens[va], mask[va]), mask[va], group[va]), settings, seed=1,
                               workdir=tmp_path,
                               trainer_kwargs={"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"})
    z = C.encode(model, scaler, tokens[te], mask[te])
    held_out = C.encode(model, scaler, *C.event_tokens(samples["signal"]["table"], k))
    centre = held_out.mean(0)
    dist = {name: float(np.linalg.norm(z[group[te] == g].mean(0) - centre)) for g, name in enumerate(names)}
    family = dist.pop("wprime_xy")
    assert family < 0.5 * min(dist.values()), (family, dist)
    # and next to each of the family's mass points, not only to their mean
    fam = names.index("wprime_xy")
    for i in range(len(IP_FAMILY)):
        point = float(np.linalg.norm(z[(group[te] == fam) & (member[te] == i)].mean(0) - centre))
        assert point < min(dist.values()), (i, point, dist)


# ------------------------------------------------------------------------------------------ full phase space

def test_flow_matching_jet_model_reproduces_the_sideband_jet_masses(cathode_qcd, tmp_path):
    """The jet CNF trained on 80% of the SB QCD reproduces the jet masses of the other 20% (~435 events).

    Sampled 4 times at each held-out event's m_jj (so the test's noise is that of the true events), each
    jet mass (heavier, lighter) passes a two-sample Kolmogorov-Smirnov test at the 1% level: D < ~0.087
    here. Measured with the laptop network (hidden 128, ~120 epochs, ~40 s on one core), sampling seeds
    2-5: heavier D = 0.044-0.056 (p 0.21-0.50), lighter D = 0.064-0.072 (p 0.05-0.11). With hidden 64
    and 40 epochs the lighter jet's mass failed for 3 seeds in 6 (p 0.001-0.008): too small a model.
    """
    import torch
    from scipy.stats import ks_2samp

    from resonant.flow_matching import train_jet_model
    from resonant.pointcloud import from_table

    torch.set_num_threads(1)
    cloud = from_table(cathode_qcd["table"], 8)
    idx = np.random.default_rng(1).permutation(np.flatnonzero(_in_sb(cloud.mjj)))
    tr, va = idx[: int(0.8 * len(idx))], idx[int(0.8 * len(idx)):]
    flow, _ = train_jet_model(cloud.take(tr), cloud.take(va), {"hidden": 128, "layers": 3, "batch_size": 128,
                                                               "epochs": 120, "patience": 15}, seed=1,
                              workdir=tmp_path / "jets")
    gen, true = flow.sample(np.repeat(cloud.mjj[va], 4), steps=50, seed=2), cloud.jets[va]
    assert len(va) > 300, len(va)
    for name, reduce in (("heavier", np.max), ("lighter", np.min)):
        ks = ks_2samp(reduce(gen[..., 3], axis=1), reduce(true[..., 3], axis=1))
        assert ks.pvalue > 0.01, (name, ks)


def test_point_cloud_classifier_separates_a_strong_signal_with_true_background(samples, cathode_qcd):
    """The point-cloud transformer, trained on SR data (QCD + W' -> XY at S/B ~ 0.45) against true SR QCD
    (the idealised setup), separates signal from background on an independent test set: AUC > 0.8.

    ~370 data and ~190 background events, 16 particles per jet, a small network (~10-20 s). Measured
    over four seeds: 0.846-0.892 (the supervised BDT on jet features: ~0.93); the AUC's statistical
    error on 114 signal and 193 background test events is ~0.02.
    """
    import torch
    from sklearn.metrics import roc_auc_score

    from resonant.pc_classify import train_classifier
    from resonant.pointcloud import PointCloud, from_table

    torch.set_num_threads(1)
    q, s = from_table(cathode_qcd["table"], 16), from_table(samples["signal"]["table"], 16)
    rng = np.random.default_rng(2)
    srq, srs = rng.permutation(np.flatnonzero(_in_sr(q.mjj))), rng.permutation(np.flatnonzero(_in_sr(s.mjj)))
    dq, iq, tq = np.split(srq, [int(0.4 * len(srq)), int(0.7 * len(srq))])
    ds, ts = np.split(srs, [len(srs) // 2])
    data = PointCloud.concatenate([q.take(dq), s.take(ds)])
    clf, _ = train_classifier(data, q.take(iq), {"dim": 32, "blocks": 2, "heads": 2, "batch_size": 64, "lr": 1e-3,
                                                 "epochs": 30, "patience": 8}, seed=1)
    test = PointCloud.concatenate([s.take(ts), q.take(tq)])
    auc = roc_auc_score(np.r_[np.ones(len(ts)), np.zeros(len(tq))], clf.predict(test))
    assert len(ds) > 80 and len(tq) > 150, (len(ds), len(tq))
    assert auc > 0.8, auc
