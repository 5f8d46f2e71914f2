"""Evaluation: summaries over seeds that keep studies apart, the no-cut baseline, latent checks, turn-on,
and the test-set bootstrap of the metrics."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from resonant import evaluation, plots
from resonant.metrics import (N_BOOTSTRAP, _descending_groups, bootstrap_errors, curve_metrics, evaluate)

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("sA", "sB")


@pytest.fixture
def one_thread():
    """The gradient-boosted checks on one OpenMP thread: the test machines' cores are shared."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def gaussian_toy(n: int, seed: int, shift: float = 1.0):
    """n signal ~ N(shift, 1) and n background ~ N(0, 1) scores."""
    rng = np.random.default_rng(seed)
    return np.r_[np.ones(n), np.zeros(n)], np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, n)]


@pytest.fixture(scope="module")
def template():
    """A metrics.json record as workflow/scripts/metrics.py writes it (values from a small toy)."""
    y, s = gaussian_toy(400, 0)
    out = evaluate(y, s, working_points=(0.1,), n_sr=(100, 5000), n_boot=20)
    return {"working_points": [0.1], "n_sr_signal": 100, "n_sr_background": 5000, "bootstrap_replicas": 20, **out}


def write_metrics(tmp_path, template, rows):
    """One metrics.json per row: the template with the row's fields (study, method, injection, seed, ...)."""
    paths = []
    for k, row in enumerate(rows):
        p = tmp_path / f"m{k}" / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({**template, **row}))
        paths.append(p)
    return paths


def capture_figures(monkeypatch):
    """Replace plots.save: the figures are kept (for their legends) instead of written."""
    import matplotlib.pyplot as plt

    figs = {}

    def keep(fig, path):
        figs[Path(path).name] = [t.get_text() for ax in fig.axes if ax.get_legend()
                                 for t in ax.get_legend().get_texts()]
        plt.close(fig)

    monkeypatch.setattr(plots, "save", keep)
    return figs


# ------------------------------------------------------------------ summaries over seeds, per study
AUC = {"sA": [0.60, 0.62, 0.64], "sB": [0.80, 0.82, 0.84]}  # pooled: median (0.64 + 0.80) / 2 = 0.72
AUC_ERR = {"sA": [0.01, 0.02, 0.03], "sB": [0.05, 0.06, 0.07]}  # pooled median 0.04


def test_summary_table_keeps_studies_apart(tmp_path, template, monkeypatch):
    rows = [{"study": st, "method": "cathode", "injection": 500, "seed": k, "auc": AUC[st][k],
             "auc_err": AUC_ERR[st][k]} for st in STUDIES for k in range(3)]
    df = evaluation.summary_table(write_metrics(tmp_path, template, rows))
    assert list(df["study"]) == list(STUDIES) and list(df["n_seeds"]) == [3, 3]
    by = df.set_index("study")
    # the median of three values is the middle one, exactly: pooling the six would give 0.72 and 0.04
    assert by.loc["sA", "auc_median"] == pytest.approx(0.62) and by.loc["sB", "auc_median"] == pytest.approx(0.82)
    assert by.loc["sA", "auc_stat"] == pytest.approx(0.02) and by.loc["sB", "auc_stat"] == pytest.approx(0.06)
    assert 0.60 <= by.loc["sA", "auc_lo"] < 0.62 < by.loc["sA", "auc_hi"] <= 0.64  # 16th/84th of its own seeds
    assert "sic@0.1_stat" in df and "z@max_sic_stat" in df
    assert not [c for c in df.columns if "_err_" in c or "_p16_" in c]  # the errors are not metrics of their own
    # the figures draw one line per study, and tell the spread over seeds from the bootstrap bars
    figs = capture_figures(monkeypatch)
    evaluation.plot_versus_injection(df, "max_sic.png", "auc.png", working_points_path="wp.png")
    labels = figs["auc.png"]
    assert plots.BAND_LABEL in labels and plots.BARS_LABEL in labels
    assert {"CATHODE (classic) (sA)", "CATHODE (classic) (sB)"} <= set(labels)
    assert plots.BARS_LABEL in figs["wp.png"]


# Per seed, z@max_sic = 5 injection / r: the significance reaches 5 at the injection r, exactly (linear
# between the scanned injections). Medians over seeds: 200 (sA), 350 (sB); pooled over both: (250 + 300) / 2 = 275.
REACH = {"sA": [150.0, 200.0, 250.0], "sB": [300.0, 350.0, 390.0]}
INJECTIONS = (0, 100, 200, 400)
# No cut: B_SR and the fraction f of the injected signal in the SR per seed; the injection for
# S/sqrt(B) = 5 is 5 sqrt(B) / f with f = sum S_SR / sum injection: sA 5 * 100 / 0.5 = 1000, sB 5 * 50 / 0.8.
B_SR = {"sA": 10000, "sB": 2500}
SR_FRACTION = {"sA": [0.45, 0.50, 0.55], "sB": [0.8, 0.8, 0.8]}


def required_rows():
    return [{"study": st, "method": m, "injection": inj, "seed": k,
             "z@max_sic": 5.0 * inj / REACH[st][k], "z@0.1": 2.5 * inj / REACH[st][k],
             "n_sr_background": B_SR[st], "n_sr_signal": int(round(SR_FRACTION[st][k] * inj))}
            for st in STUDIES for m in ("cathode", "idealised") for inj in INJECTIONS for k in range(3)]


def test_required_injection_table_keeps_studies_apart(tmp_path, template):
    df = evaluation.required_injection_table(write_metrics(tmp_path, template, required_rows()))
    got = df.set_index(["study", "method", "cut"])
    for st, median in (("sA", 200.0), ("sB", 350.0)):
        assert got.loc[(st, "cathode", "max_sic"), "median"] == pytest.approx(median)  # pooled: 275
        assert got.loc[(st, "cathode", "max_sic"), "n_seeds"] == 3
    # cut 0.1 reaches 5 at 2 r: sA 300, 400 and 500 (beyond the scan, NaN) -> median of the reached 350;
    # sB 600 to 780: never within the scan
    assert got.loc[("sA", "idealised", "0.1"), "median"] == pytest.approx(350.0)
    assert got.loc[("sA", "idealised", "0.1"), "reached"] == 2
    assert np.isnan(got.loc[("sB", "idealised", "0.1"), "median"]) and got.loc[("sB", "idealised", "0.1"),
                                                                               "reached"] == 0
    assert got.loc[("sA", "cathode", "max_sic"), "lo"] == pytest.approx(np.percentile(REACH["sA"], 16))
    base = df[df["method"] == evaluation.NO_CUT].set_index("study")
    assert list(base.index) == list(STUDIES) and set(base["cut"]) == {"none"}
    assert base.loc["sA", "median"] == pytest.approx(5 * np.sqrt(10000) / 0.5)
    assert base.loc["sB", "median"] == pytest.approx(5 * np.sqrt(2500) / 0.8)
    assert base.loc["sA", "sr_signal_fraction"] == pytest.approx(0.5)
    # the band is the spread of 5 sqrt(B) / f over the study sets: f from 0.45 to 0.55
    assert 5 * 100 / 0.55 <= base.loc["sA", "lo"] < 1000 < base.loc["sA", "hi"] <= 5 * 100 / 0.45


def test_required_injection_script_draws_each_study_and_the_baseline(tmp_path, template, monkeypatch):
    paths = write_metrics(tmp_path, template, required_rows())
    figs = capture_figures(monkeypatch)
    script = load_script("required_injection")
    csv = tmp_path / "required.csv"
    params = {"target_sigma": 5.0, "cuts": ["max_sic", "0.1"], "signals": {"sA": "W'", "sB": "Z'"}}
    script.main(["--metrics", *map(str, paths), "--csv", str(csv), "--params", json.dumps(params),
                 "--plots", str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    import pandas as pd

    table = pd.read_csv(csv)
    assert set(table[table["method"] == "no_cut"]["study"]) == set(STUDIES)
    assert set(table["signal"]) == {"W'", "Z'"}
    for name in ("a.png", "b.png"):
        assert "no cut: S/sqrt(B) = 5" in figs[name]
        assert {"CATHODE (classic)", "Idealised AD"} <= set(figs[name])


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "workflow" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curves_of_two_studies_are_not_pooled(tmp_path, monkeypatch):
    from resonant import io

    args = []
    for st in STUDIES:
        for seed in range(2):
            y, s = gaussian_toy(300, seed, shift=1.0 if st == "sA" else 2.0)
            p = tmp_path / f"results/{st}/inj100/seed{seed}/cathode/scores.parquet"
            p.parent.mkdir(parents=True)
            io.write_table(pa.table({"label": y.astype(np.int8), "score": s}), p)
            args.append(f"cathode={p}")
    figs = capture_figures(monkeypatch)
    load_script("plot_curves").main(["--scores", *args, "--sic-plot", "sic.png", "--rejection-plot", "rej.png"])
    assert {"CATHODE (classic) (sA)", "CATHODE (classic) (sB)"} <= set(figs["sic.png"])


# ------------------------------------------------------------------ latent checks
def test_mjj_leakage_r2_bounds(one_thread):
    from resonant.evaluation import mjj_leakage_r2

    rng = np.random.default_rng(0)
    n = 1000
    mjj = rng.uniform(3300, 3700, n)
    # independent latent: the best out-of-fold prediction is the mean (R^2 = 0); the regressor's fit to noise
    # costs a little: measured -0.029 +- 0.006 over 8 toys of this size, so [-0.1, 0.05] is >= 8 sd away
    assert -0.1 < mjj_leakage_r2(rng.normal(size=(n, 3)), mjj) < 0.05
    # a latent coordinate that is a function of m_jj: only the trees' piecewise-constant approximation is
    # lost, measured 0.99987 +- 0.00002 over the same 8 toys; the bound 0.98 is far below that
    assert mjj_leakage_r2(np.c_[np.log(mjj), rng.normal(size=(n, 2))], mjj) > 0.98


def test_latent_checks_separated_and_unseparated_groups(one_thread):
    rng = np.random.default_rng(1)
    sizes = {"qcd_dijet": 1000, "far": 300, "same": 300}
    shift = {"qcd_dijet": 0.0, "far": 3.0, "same": 0.0}
    group = np.concatenate([[g] * n for g, n in sizes.items()])
    z = rng.normal(size=(len(group), 2))
    z[:, 0] += np.array([shift[g] for g in group])
    table = pa.table({"group": group, "trained": np.isin(group, ["qcd_dijet", "far"]),
                      "mjj": rng.uniform(3300, 3700, len(group)), "z0": z[:, 0], "z1": z[:, 1]})
    res = evaluation.latent_checks(table, background_group="qcd_dijet")
    assert res["n_background"] == 1000 and set(res["groups"]) == {"far", "same"}
    assert res["groups"]["far"]["in_training"] and not res["groups"]["same"]["in_training"]
    # m_jj independent of the latent: R^2 about 0 (bound as in test_mjj_leakage_r2_bounds)
    assert -0.1 < res["mjj_r2_background"] < 0.05
    # a 3 sigma shift in one coordinate: the best AUC is Phi(3 / sqrt(2)) = 0.983; the AUC's sd with
    # 300 vs 1000 events is < 0.005 there, and the classifier loses a little: bound 0.95
    assert res["groups"]["far"]["auc_vs_background"] > 0.95
    # the same distribution: AUC 0.5 with the Mann-Whitney sd sqrt((n0 + n1 + 1) / (12 n0 n1)) = 0.019;
    # the bound 0.08 is 4 sd
    sd = np.sqrt((1000 + 300 + 1) / (12 * 1000 * 300))
    assert abs(res["groups"]["same"]["auc_vs_background"] - 0.5) < 4 * sd


# ------------------------------------------------------------------ turn-on
def test_turn_on_binomial_efficiency():
    rng = np.random.default_rng(2)
    n = 40000
    mjj_bins, pt_bins = np.linspace(2000, 5000, 11), np.linspace(1200, 2400, 7)
    true = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0])  # per m_jj bin
    mjj, pt = rng.uniform(2000, 5000, n), rng.uniform(1200, 2400, n)
    passed = rng.random(n) < true[np.digitize(mjj, mjj_bins) - 1]
    nominal = 500.0
    pthat = np.where(passed, nominal + 10.0, nominal - 10.0)
    curves = evaluation.turn_on(pthat, mjj, pt, nominal, mjj_bins, pt_bins)
    # pT is independent of m_jj (uniform), so every pT bin has the mean efficiency
    for name, p in (("mjj", true), ("pt", np.full(len(pt_bins) - 1, true.mean()))):
        x, eff, err = curves[name]
        n_bin, _ = np.histogram(mjj if name == "mjj" else pt, mjj_bins if name == "mjj" else pt_bins)
        sd = np.sqrt(p * (1 - p) / n_bin)  # binomial sd of the pass fraction of each bin
        inner = p < 1
        # each pull ~ N(0, 1): P(any of the 16 bins beyond 4 sd) ~ 16 * 6e-5 = 1e-3
        assert np.all(np.abs(eff[inner] - p[inner]) < 4 * sd[inner])
        assert np.all(eff[~inner] == 1.0) and np.all(err[~inner] > 0)  # no zero error at full efficiency
        # the reported error is the binomial sd at the measured efficiency: with >= 4000 events a bin, eff is
        # within 4 sd (<= 0.03) of p, which changes sqrt(p (1 - p)) by < 10% for 0.1 <= p <= 0.95
        np.testing.assert_allclose(err[inner], sd[inner], rtol=0.1)


# ------------------------------------------------------------------ test-set bootstrap
def test_vectorised_curve_metrics_reproduce_evaluate():
    """Unit weights: the per-replica metrics equal evaluate's, ties included."""
    rng = np.random.default_rng(3)
    for trial in range(6):
        n_s, n_b = rng.integers(30, 300), rng.integers(100, 1500)
        y = np.r_[np.ones(n_s), np.zeros(n_b)]
        s = np.r_[rng.normal(1, 1, n_s), rng.normal(0, 1, n_b)]
        s = np.round(s, 1) if trial % 2 else s  # ties
        central = evaluate(y, s, working_points=(0.1, 0.01), n_sr=(100, 5000))
        gid, m = _descending_groups(s)
        one = curve_metrics(np.bincount(gid[y == 1], minlength=m), np.bincount(gid[y == 0], minlength=m),
                            (0.1, 0.01), (100, 5000))
        for key, value in one.items():
            np.testing.assert_allclose(value[0], central[key], rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=key)


def test_bootstrap_is_deterministic_and_complete():
    y, s = gaussian_toy(500, 4)
    a = evaluate(y, s, working_points=(0.1,), n_sr=(100, 5000), n_boot=N_BOOTSTRAP)
    b = evaluate(y, s, working_points=(0.1,), n_sr=(100, 5000), n_boot=N_BOOTSTRAP)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN written alike
    for key in ("auc", "max_sic", "sic_0.2", "sic_0.5", "rejection_0.5", "sic@0.1", "eff_s@0.1", "z@0.1",
                "z@max_sic"):
        assert a[f"{key}_err"] > 0 and a[f"{key}_p16"] < a[f"{key}_p84"], key
    assert bootstrap_errors(y, s, seed=1)["auc_err"] != a["auc_err"]  # the seed is what fixes it


def test_bootstrap_errors_shrink_like_one_over_sqrt_n():
    """4x the test events: errors / 2.

    Single toy pairs (2000 vs 8000 events a class, 200 replicas) gave ratios
    2.03 +- 0.16 (AUC), 2.01 +- 0.23 (SIC at eps_S 0.5), 2.10 +- 0.25 (SIC at
    eps_B 0.1) over 30 pairs; averaging the errors of 4 toys halves that spread,
    so the tolerance 2 +- 0.5 is >= 4 sd. (The max SIC is left out: the maximum
    of a noisy curve is not a smooth statistic, its ratio was 2.8 +- 1.2.)
    """
    keys = ("auc", "sic_0.5", "sic@0.1")
    small = [bootstrap_errors(*gaussian_toy(2000, k), (0.1,)) for k in range(4)]
    large = [bootstrap_errors(*gaussian_toy(8000, 100 + k), (0.1,)) for k in range(4)]
    for key in keys:
        ratio = np.mean([e[f"{key}_err"] for e in small]) / np.mean([e[f"{key}_err"] for e in large])
        assert 1.5 < ratio < 2.5, (key, ratio)


def test_bootstrap_auc_error_matches_hanley_mcneil():
    """Hanley & McNeil (1982): SE^2 = [A(1-A) + (n_s-1)(Q1-A^2) + (n_b-1)(Q2-A^2)] / (n_s n_b).

    Gaussian toy, 2000 events a class: bootstrap / Hanley-McNeil measured
    0.99 +- 0.05 over 40 toys (the 200-replica sd alone has 5% relative error);
    the 30% tolerance is > 6 sd.
    """
    y, s = gaussian_toy(2000, 5)
    a = evaluate(y, s)["auc"]
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    n = 2000
    se = np.sqrt((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * n))
    assert bootstrap_errors(y, s)["auc_err"] == pytest.approx(se, rel=0.3)
