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


def evaluate(labels, scores, min_bkg: int = MIN_BKG) -> dict:
    """AUC, max SIC, SIC at the working points and background rejection at 0.5."""
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
