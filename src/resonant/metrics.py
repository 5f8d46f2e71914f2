"""Figures of merit of an anomaly score on a labelled test set.

SIC = tpr / sqrt(fpr). Points of the curve where fewer than ``min_bkg``
background events pass the cut are left out (their SIC is pure fluctuation).

The statistical uncertainty of each figure of merit is a stratified bootstrap
of the test set (:func:`bootstrap_errors`): signal and background events are
resampled separately with replacement, so every replica keeps the numbers of
signal and background events.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

MIN_BKG = 10
WORKING_POINTS = (0.2, 0.5)
#: test-set bootstrap: replicas and the seed of its numpy Generator (fixed: same inputs, same errors)
N_BOOTSTRAP = 200
BOOTSTRAP_SEED = 20240601
#: suffixes of the bootstrap keys beside each metric: standard deviation, 16th and 84th percentiles
BOOTSTRAP_SUFFIXES = ("_err", "_p16", "_p84")
#: at most this many (replica x event) entries are held at once
_BOOTSTRAP_BLOCK = 4_000_000


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


def evaluate(labels, scores, min_bkg: int = MIN_BKG, working_points=(), n_sr: tuple[int, int] | None = None,
             n_boot: int = 0, seed: int = BOOTSTRAP_SEED) -> dict:
    """AUC, max SIC, SIC at the signal-efficiency working points, background rejection at 0.5.

    ``working_points``: background efficiencies (~ fractions of SR events kept)
    at which the signal efficiency and SIC are reported (``eff_s@wp``,
    ``sic@wp``); with ``n_sr`` = (signal, background) events in the SR data,
    also the significance after the cut S eps_S / sqrt(B eps_B) (``z@wp``,
    and ``z@max_sic`` at the cut of the maximum SIC). With ``n_boot`` > 0,
    also each value's test-set bootstrap uncertainty (:func:`bootstrap_errors`:
    ``auc_err``, ``auc_p16``, ``auc_p84``, ...).
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
    if n_boot > 0:
        out.update(bootstrap_errors(labels, scores, working_points, n_sr, n_boot, seed, min_bkg, central=out))
    return out


def bootstrap_errors(labels, scores, working_points=(), n_sr=None, n_boot: int = N_BOOTSTRAP,
                     seed: int = BOOTSTRAP_SEED, min_bkg: int = MIN_BKG, central: dict | None = None) -> dict:
    """Test-set bootstrap uncertainty of every value of :func:`evaluate`: ``{key}_err``, ``{key}_p16``, ``{key}_p84``.

    Stratified: the signal and the background events are each resampled with
    replacement (a numpy Generator seeded with ``seed``, so the same inputs
    give the same output), ``n_boot`` replicas. ``_err`` is the standard
    deviation over the replicas where the value is defined, ``_p16``/``_p84``
    the central 68% interval of the replicas. Reads the test labels and scores
    only. With ``central`` (the values of :func:`evaluate`), a value undefined
    there gets NaN errors too.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    gid, n_groups = _descending_groups(scores)
    g_sig, g_bkg = gid[labels == 1], gid[labels == 0]
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK // max(len(scores), 1))
    parts = []
    for start in range(0, n_boot, block):
        r = min(block, n_boot - start)
        s = _resampled_counts(rng, g_sig, n_groups, r)
        b = _resampled_counts(rng, g_bkg, n_groups, r)
        parts.append(curve_metrics(s, b, working_points, n_sr, min_bkg))
    out = {}
    for key in parts[0]:
        values = np.concatenate([p[key] for p in parts])
        out.update(_spread(key, values, central))
    return out


def _descending_groups(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Index of each event's distinct score value, 0 for the highest; the number of distinct values."""
    uniq, inv = np.unique(scores, return_inverse=True)
    return (len(uniq) - 1 - inv.ravel()), len(uniq)


def _resampled_counts(rng, groups: np.ndarray, n_groups: int, n_rep: int) -> np.ndarray:
    """(n_rep, n_groups) events per distinct score of ``n_rep`` resamplings (with replacement) of ``groups``."""
    n = len(groups)
    picked = groups[rng.integers(0, n, size=(n_rep, n))] if n else np.zeros((n_rep, 0), int)
    flat = (np.arange(n_rep)[:, None] * n_groups + picked).ravel()
    return np.bincount(flat, minlength=n_rep * n_groups).reshape(n_rep, n_groups)


def _spread(key: str, values: np.ndarray, central: dict | None) -> dict:
    ok = np.isfinite(values)
    undefined = ok.sum() < 2 or (central is not None and not np.isfinite(central.get(key, np.nan)))
    if undefined:
        return {f"{key}{sfx}": float("nan") for sfx in BOOTSTRAP_SUFFIXES}
    p16, p84 = np.percentile(values[ok], [16, 84])
    return {f"{key}_err": float(np.std(values[ok], ddof=1)), f"{key}_p16": float(p16), f"{key}_p84": float(p84)}


def curve_metrics(sig_counts, bkg_counts, working_points=(), n_sr=None, min_bkg: int = MIN_BKG) -> dict:
    """The values of :func:`evaluate` for many weighted copies of one test set at once.

    ``sig_counts``, ``bkg_counts``: (replicas, thresholds) numbers of signal
    and background events at each distinct score, highest score first. Returns
    one array (replicas,) per key; the same definitions as :func:`evaluate`
    (ties count half in the AUC; interpolation in the signal efficiency as
    ``numpy.interp``; the cut of a working point at the n-th highest background).
    """
    s = np.atleast_2d(np.asarray(sig_counts, np.float64))
    b = np.atleast_2d(np.asarray(bkg_counts, np.float64))
    n_s, n_b = s.sum(axis=1, keepdims=True), b.sum(axis=1, keepdims=True)
    cum_s, cum_b = np.cumsum(s, axis=1), np.cumsum(b, axis=1)
    tpr, fpr = cum_s / n_s, cum_b / n_b
    kept = cum_b >= max(min_bkg, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sic = np.where(kept, tpr / np.sqrt(fpr), np.nan)
        out = {"auc": (np.sum(s * (n_b - cum_b + 0.5 * b), axis=1) / (n_s * n_b)[:, 0])}
        best = np.argmax(np.where(kept, sic, -np.inf), axis=1)
        rows = np.arange(len(s))
        any_kept = kept.any(axis=1)
        out["max_sic"] = np.where(any_kept, sic[rows, best], np.nan)
        for eff in WORKING_POINTS:
            out[f"sic_{eff}"] = _interp_rows(tpr, sic, kept, eff)
        out["rejection_0.5"] = _interp_rows(tpr, 1.0 / fpr, kept, 0.5)
        for wp in working_points:
            eff_s, out[f"sic@{wp:g}"] = _at_background_rows(cum_s, cum_b, n_s[:, 0], n_b[:, 0], wp, min_bkg)
            out[f"eff_s@{wp:g}"] = eff_s
            if n_sr is not None:
                out[f"z@{wp:g}"] = significance_after_cut(n_sr[0], n_sr[1], eff_s, wp)
        if n_sr is not None:
            z = significance_after_cut(n_sr[0], n_sr[1], tpr[rows, best], fpr[rows, best])
            out["z@max_sic"] = np.where(any_kept, z, np.nan)
    return out


def _interp_rows(x, y, kept, at: float) -> np.ndarray:
    """Per row, ``numpy.interp(at, x[kept], y[kept])`` (x non-decreasing), NaN outside the kept x range.

    The kept points of a row are a contiguous tail (the background passing
    only grows as the cut loosens).
    """
    rows = np.arange(len(x))
    first = np.argmax(kept, axis=1)
    any_kept = kept.any(axis=1)
    above = kept & (x > at)
    k = np.where(above.any(axis=1), np.argmax(above, axis=1), x.shape[1])  # first kept x above ``at``
    last = x.shape[1] - 1
    j = np.clip(k - 1, 0, last)
    kk = np.clip(k, 0, last)
    x0, x1, y0, y1 = x[rows, j], x[rows, kk], y[rows, j], y[rows, kk]
    inner = np.where(x1 > x0, y0 + (at - x0) * (y1 - y0) / np.where(x1 > x0, x1 - x0, 1.0), y0)
    at_end = (k == x.shape[1]) & np.isclose(x[rows, last], at, rtol=0, atol=1e-12)  # ``at`` is the top x
    value = np.where(at_end, y[rows, last], inner)
    defined = any_kept & (k > first) & ((k < x.shape[1]) | at_end)
    return np.where(defined, value, np.nan)


def _at_background_rows(cum_s, cum_b, n_s, n_b, bkg_eff: float, min_bkg: int):
    """Per row, :func:`at_background_efficiency`: (signal efficiency, SIC) at the n-th highest background."""
    n_pass = np.rint(bkg_eff * n_b)
    ok = n_pass >= max(min_bkg, 1)
    idx = np.argmax(cum_b >= np.maximum(n_pass, 1)[:, None], axis=1)
    rows = np.arange(len(cum_s))
    eff_s = cum_s[rows, idx] / n_s
    eff_b = cum_b[rows, idx] / n_b
    return np.where(ok, eff_s, np.nan), np.where(ok, eff_s / np.sqrt(eff_b), np.nan)


def band(values, axis=0):
    """Median and the central 68% interval (16th, 84th percentiles), NaN-aware (NaN where all are NaN)."""
    import warnings

    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
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
