"""Figures of merit of an anomaly score on a labelled test set.

SIC = tpr / sqrt(fpr). Points of the curve where fewer than ``min_bkg``
background events pass the cut are left out (their SIC is pure fluctuation).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

MIN_BKG = 10
WORKING_POINTS = (0.2, 0.5)


def roc(labels, scores):
    """(fpr, tpr, n_bkg_passing) along the score thresholds."""
    labels = np.asarray(labels)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    n_bkg = int((labels == 0).sum())
    return fpr, tpr, np.rint(fpr * n_bkg).astype(int)


def kept_curve(labels, scores, min_bkg: int = MIN_BKG):
    """(fpr, tpr) of the points where at least ``min_bkg`` background events pass."""
    fpr, tpr, n_pass = roc(labels, scores)
    keep = (n_pass >= min_bkg) & (fpr > 0)
    return fpr[keep], tpr[keep]


def sic_curve(labels, scores, min_bkg: int = MIN_BKG):
    """(tpr, sic) with the low-statistics points removed."""
    fpr, tpr = kept_curve(labels, scores, min_bkg)
    return tpr, tpr / np.sqrt(fpr)


def _at_tpr(tpr, values, eff):
    """Value of a curve at signal efficiency ``eff`` (linear interpolation)."""
    if len(tpr) == 0 or eff < tpr.min() or eff > tpr.max():
        return float("nan")
    return float(np.interp(eff, tpr, values))


def at_background_efficiency(labels, scores, bkg_eff: float, min_bkg: int = MIN_BKG) -> tuple[float, float]:
    """(signal efficiency, SIC) of the cut keeping the fraction ``bkg_eff`` of the background.

    NaN when fewer than ``min_bkg`` background events would pass.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    bkg = np.sort(scores[labels == 0])[::-1]
    n_pass = int(round(bkg_eff * len(bkg)))
    if n_pass < max(min_bkg, 1):
        return float("nan"), float("nan")
    cut = bkg[n_pass - 1]
    eff_s = float(np.mean(scores[labels == 1] >= cut))
    eff_b = float(np.mean(bkg >= cut))
    return eff_s, eff_s / np.sqrt(eff_b)


def evaluate(labels, scores, min_bkg: int = MIN_BKG, working_points=(), n_sr: tuple[int, int] | None = None) -> dict:
    """AUC, max SIC, SIC at the signal-efficiency working points, background rejection at 0.5.

    ``working_points``: background efficiencies (~ fractions of SR events kept)
    at which the signal efficiency and SIC are reported (``eff_s@wp``,
    ``sic@wp``); with ``n_sr`` = (signal, background) events in the SR data,
    also the significance after the cut S eps_S / sqrt(B eps_B) (``z@wp``,
    and ``z@max_sic`` at the cut of the maximum SIC).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    n_sig, n_bkg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_sig == 0 or n_bkg == 0:
        raise ValueError(f"the test set needs signal and background (has {n_sig} and {n_bkg})")
    fpr, t = kept_curve(labels, scores, min_bkg)
    sic = t / np.sqrt(fpr)
    out = {
        "auc": float(roc_auc_score(labels, scores)),
        "max_sic": float(sic.max()) if len(sic) else float("nan"),
        "n_signal": n_sig,
        "n_background": n_bkg,
    }
    for eff in WORKING_POINTS:
        out[f"sic_{eff}"] = _at_tpr(t, sic, eff)
    out["rejection_0.5"] = _at_tpr(t, 1.0 / fpr, 0.5)
    for wp in working_points:
        eff_s, out[f"sic@{wp:g}"] = at_background_efficiency(labels, scores, wp, min_bkg)
        out[f"eff_s@{wp:g}"] = eff_s
        if n_sr is not None:
            out[f"z@{wp:g}"] = float(significance_after_cut(n_sr[0], n_sr[1], eff_s, wp))
    if n_sr is not None:
        i = int(np.argmax(sic)) if len(sic) else None
        out["z@max_sic"] = (float(significance_after_cut(n_sr[0], n_sr[1], t[i], fpr[i])) if i is not None
                            else float("nan"))
    return out


def band(values, axis=0):
    """Median and the central 68% interval (16th, 84th percentiles), NaN-aware."""
    values = np.asarray(values, dtype=np.float64)
    med, lo, hi = np.nanpercentile(values, [50, 16, 84], axis=axis)
    return med, lo, hi


def interpolated_curves(labels_scores, grid=None, kind="sic", min_bkg: int = MIN_BKG):
    """Curves of several runs on a common signal-efficiency grid (NaN where undefined)."""
    grid = np.linspace(0.01, 1.0, 100) if grid is None else grid
    rows = []
    for labels, scores in labels_scores:
        fpr, t = kept_curve(labels, scores, min_bkg)
        y = t / np.sqrt(fpr) if kind == "sic" else 1.0 / fpr  # else: background rejection
        row = np.full(len(grid), np.nan)
        if len(t) > 1:
            inside = (grid >= t.min()) & (grid <= t.max())
            row[inside] = np.interp(grid[inside], t, y)
        rows.append(row)
    return grid, np.array(rows)


def significance_after_cut(n_sig, n_bkg, eff_sig, eff_bkg):
    """S eps_S / sqrt(B eps_B): the significance of the SR excess after a selection."""
    return n_sig * eff_sig / np.sqrt(np.maximum(n_bkg * eff_bkg, 1e-12))


def injection_for_significance(n_bkg, eff_sig, eff_bkg, z=5.0):
    """The SR signal needed to reach ``z`` sigma after a cut of efficiencies (eff_sig, eff_bkg)."""
    return z * np.sqrt(n_bkg * eff_bkg) / np.maximum(eff_sig, 1e-12)


def required_injection(injections, z, target: float = 5.0) -> float:
    """The injected signal at which the significance ``z`` (measured at each injection) first reaches ``target``.

    Linear interpolation between two scanned injections around the crossing.
    Already reached at the smallest non-zero injection scanned: that injection
    (an upper limit; how a weakly supervised classifier would do with less
    signal was not measured, so nothing below the scan is extrapolated). NaN
    if the target is not reached in the scan.
    """
    order = np.argsort(injections)
    x = np.asarray(injections, np.float64)[order]
    y = np.asarray(z, np.float64)[order]
    keep = x > 0
    x, y = x[keep], np.where(np.isfinite(y[keep]), y[keep], 0.0)
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0 or y[i] == y[i - 1]:
                return float(x[i])
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return float("nan")


def score_table(test, member_scores: list):
    """The scores contract (a pyarrow table): event_id, label, mjj, one column per member and the mean ``score``."""
    import pyarrow as pa

    cols = {"event_id": test.column("event_id"), "label": test.column("label"), "mjj": test.column("mjj")}
    for k, s in enumerate(member_scores):
        cols[f"score_{k}"] = pa.array(np.asarray(s, np.float32))
    cols["score"] = pa.array(np.mean(member_scores, axis=0).astype(np.float32))
    return pa.table(cols)
