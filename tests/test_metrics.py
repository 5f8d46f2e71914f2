"""Metrics: SIC with the low-statistics cut, AUC, working points, bands."""

import numpy as np
import pytest

from resonant.metrics import (band, evaluate, injection_for_significance, interpolated_curves,
                              significance_after_cut, sic_curve)


def test_perfect_and_random_classifiers():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(1000), np.zeros(100000)]
    perfect = evaluate(y, y + rng.normal(0, 1e-3, len(y)))
    assert perfect["auc"] == pytest.approx(1.0)
    # best cut keeps all signal and exactly the 10 background events the cut-off allows
    assert perfect["max_sic"] == pytest.approx(1 / np.sqrt(10 / 100000), rel=0.05)
    rand = evaluate(y, rng.random(len(y)))
    assert rand["auc"] == pytest.approx(0.5, abs=0.02)
    assert rand["sic_0.5"] == pytest.approx(np.sqrt(0.5), rel=0.1)
    assert rand["rejection_0.5"] == pytest.approx(2.0, rel=0.1)


def test_gaussian_separation_matches_analytic():
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    n = 200000
    y = np.r_[np.ones(n), np.zeros(n)]
    s = np.r_[rng.normal(1.0, 1, n), rng.normal(0.0, 1, n)]
    m = evaluate(y, s)
    assert m["auc"] == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.005)
    cut = norm.ppf(0.5, loc=1.0)  # tpr 0.5
    assert m["rejection_0.5"] == pytest.approx(1 / norm.sf(cut), rel=0.03)


def test_sic_leaves_out_low_statistics_points():
    y = np.r_[np.ones(50), np.zeros(50)]
    s = np.r_[np.linspace(1, 2, 50), np.linspace(0, 1.5, 50)]
    t, sic = sic_curve(y, s, min_bkg=10)
    fpr_needed = 10 / 50
    assert np.all(sic <= t / np.sqrt(fpr_needed) + 1e-9)
    with pytest.raises(ValueError):
        evaluate(np.ones(5), np.ones(5))


def test_band_and_curves():
    med, lo, hi = band([[1.0], [2.0], [3.0], [np.nan]])
    assert med[0] == 2.0 and lo[0] < 2.0 < hi[0]
    rng = np.random.default_rng(2)
    runs = [(np.r_[np.ones(500), np.zeros(5000)], np.r_[rng.normal(2, 1, 500), rng.normal(0, 1, 5000)])
            for _ in range(3)]
    grid, rows = interpolated_curves(runs)
    assert rows.shape == (3, len(grid))
    assert np.nanmax(rows) > 2


def test_significance_helpers_invert():
    n_b, eps_s, eps_b = 10000, 0.4, 0.01
    n_s = injection_for_significance(n_b, eps_s, eps_b, z=5.0)
    assert significance_after_cut(n_s, n_b, eps_s, eps_b) == pytest.approx(5.0)


def test_working_points_and_significance_after_cut():
    from resonant.metrics import at_background_efficiency

    rng = np.random.default_rng(3)
    n = 100000
    y = np.r_[np.ones(n), np.zeros(n)]
    s = np.r_[rng.normal(2.0, 1, n), rng.normal(0.0, 1, n)]
    from scipy.stats import norm

    for wp in (0.1, 0.01):
        eff_s, sic = at_background_efficiency(y, s, wp)
        expected = norm.sf(norm.isf(wp) - 2.0)  # the cut at the background quantile
        assert eff_s == pytest.approx(expected, abs=0.01)
        assert sic == pytest.approx(expected / np.sqrt(wp), rel=0.05)
    # fewer than 10 background events would pass: undefined
    assert np.isnan(at_background_efficiency(y[:n + 500], s[:n + 500], 0.01)[0])
    m = evaluate(y, s, working_points=(0.1,), n_sr=(300, 10000))
    assert m["eff_s@0.1"] == pytest.approx(norm.sf(norm.isf(0.1) - 2.0), abs=0.01)
    assert m["z@0.1"] == pytest.approx(300 * m["eff_s@0.1"] / np.sqrt(10000 * 0.1), rel=1e-6)
    assert m["z@max_sic"] > 0


def test_required_injection_interpolates_the_first_crossing():
    from resonant.metrics import required_injection

    assert required_injection([200, 500, 1000], [2.0, 6.0, 12.0]) == pytest.approx(200 + 3 / 4 * 300)
    assert required_injection([500, 200], [6.0, 2.0]) == pytest.approx(425.0)  # order does not matter
    # reached at the smallest injection scanned: an upper limit, nothing extrapolated below the scan
    assert required_injection([0, 100, 300], [0.0, 10.0, 30.0]) == pytest.approx(100.0)
    assert np.isnan(required_injection([200, 500], [1.0, 4.9]))  # not reached in the scan
    assert required_injection([200, 500], [np.nan, 7.0]) == pytest.approx(200 + 5 / 7 * 300)


def test_every_method_of_a_study_has_its_own_colour_and_keeps_it():
    from resonant.config import POINTCLOUD_METHODS
    from resonant.plots import style_of

    methods = ["supervised", "idealised", "cathode", "vae", "vae_latent", *POINTCLOUD_METHODS,
               *(f"contrastive-{c}" for c in ("ID", "IP", "EP", "bkg"))]
    colours = [style_of(m)["color"] for m in methods]
    assert len(set(colours)) == len(methods), dict(zip(methods, colours))
    assert style_of("cathode") == style_of("cathode")  # fixed, not drawn from a running colour cycle
    assert style_of("contrastive-XYZ")["color"] == style_of("contrastive-XYZ")["color"]
