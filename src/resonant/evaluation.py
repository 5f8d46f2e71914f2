"""Collecting per-run metrics and scores into summaries and figures."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from . import io, plots
from .metrics import BOOTSTRAP_SUFFIXES, band, interpolated_curves, required_injection

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("auc", "max_sic", "sic_0.2", "sic_0.5", "rejection_0.5")
# Per-working-point metrics (keys "sic@0.1", "z@0.1", ...) are summarised too when present.
WP_PREFIXES = ("sic@", "eff_s@", "z@")
#: the method name of the no-cut baseline rows of :func:`required_injection_table`
NO_CUT = "no_cut"


def _metric_columns(df: pd.DataFrame) -> list[str]:
    wp = [c for c in df.columns if c.startswith(WP_PREFIXES) and not c.endswith(BOOTSTRAP_SUFFIXES)]
    return [m for m in SUMMARY_METRICS if m in df.columns] + wp


def _keys(df: pd.DataFrame, *keys: str) -> list[str]:
    """The grouping keys, with ``study`` first when the table has it: runs of different studies are never pooled."""
    return (["study"] if "study" in df.columns else []) + list(keys)


def summary_table(metric_files) -> pd.DataFrame:
    """Median and 68% band over seeds per (study,) method and injection, and the statistical error.

    ``{m}_median``, ``{m}_lo``, ``{m}_hi``: the median and the 16th/84th
    percentiles over seeds (the training spread); ``{m}_stat``: the median over
    seeds of the test-set bootstrap error ``{m}_err`` of each run (NaN when the
    metrics files carry none).
    """
    df = pd.DataFrame([io.read_json(p) for p in metric_files])
    keys = _keys(df, "method", "injection")
    out = []
    for key, g in df.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        row.update(injection=int(row["injection"]), n_seeds=len(g))
        for m in _metric_columns(df):
            with np.errstate(all="ignore"):
                med, lo, hi = band(g[m].to_numpy(np.float64))
                stat = float(band(g[f"{m}_err"].to_numpy(np.float64))[0]) if f"{m}_err" in g else float("nan")
            row.update({f"{m}_median": med, f"{m}_lo": lo, f"{m}_hi": hi, f"{m}_stat": stat})
        out.append(row)
    return pd.DataFrame(out).sort_values(keys, kind="stable").reset_index(drop=True)


def required_injection_table(metric_files, target: float = 5.0) -> pd.DataFrame:
    """Per study, method and cut (each working point, and the max-SIC cut): the injection reaching ``target`` sigma.

    Computed per seed from the significance after the cut at every scanned
    injection (``resonant.metrics.required_injection``), then the median and
    68% band over the seeds of that study; NaN where the scan does not reach
    it. Runs of different studies are never pooled. Where the metrics carry the
    SR counts (``n_sr_signal``, ``n_sr_background``), each study also gets a
    row of method :data:`NO_CUT` (cut ``none``): the injection for ``target``
    sigma without any cut (:func:`no_cut_injection`).
    """
    df = pd.DataFrame([io.read_json(p) for p in metric_files])
    if "study" not in df.columns:
        df["study"] = ""
    cuts = [c for c in df.columns if c.startswith("z@") and not c.endswith(BOOTSTRAP_SUFFIXES)]
    out = []
    for (study, method), g in df.groupby(["study", "method"], sort=False):
        for cut in cuts:
            out.append({"study": study, "method": method, "cut": cut[2:], "target_sigma": target,
                        **_required_of_cut(g, cut, target)})
    if {"n_sr_signal", "n_sr_background"} <= set(df.columns):
        out += [{"study": study, "method": NO_CUT, "cut": "none", "target_sigma": target,
                 **no_cut_injection(g, target)} for study, g in df.groupby("study", sort=False)]
    else:
        log.warning("metrics files carry no SR counts (n_sr_signal, n_sr_background): no no-cut baseline")
    return pd.DataFrame(out)


def _required_of_cut(g: pd.DataFrame, cut: str, target: float) -> dict:
    """The needed injection of one study and method for one cut: median and band over seeds."""
    per_seed = [required_injection(s["injection"].to_numpy(), s[cut].to_numpy(np.float64), target)
                for _, s in g.groupby("seed")]
    with np.errstate(all="ignore"):
        med, lo, hi = band(per_seed)
    scanned = g["injection"][g["injection"] > 0]
    first = int(scanned.min()) if len(scanned) else 0
    return {"median": med, "lo": lo, "hi": hi, "n_seeds": len(per_seed),
            "reached": int(np.isfinite(per_seed).sum()), "max_injection": int(g["injection"].max()),
            "upper_limit": bool(np.isfinite(med) and med <= first)}


def no_cut_injection(g: pd.DataFrame, target: float = 5.0) -> dict:
    """The injection giving S/sqrt(B) = ``target`` in the SR with no cut at all, for one study's runs.

    The SR signal needed is n_SR = target sqrt(B_SR), B_SR the SR background
    of the study set; an injection of N puts the fraction f = S_SR / N of its
    signal into the SR, so the injection is target sqrt(B_SR) / f. f is the
    ratio of the summed SR signal to the summed injection over the distinct
    non-zero (injection, seed) study sets; the band is the 16-84% spread of the
    same quantity per study set. ``sr_signal_fraction`` and ``n_sr_background``
    are reported beside it.
    """
    runs = g[g["injection"] > 0].drop_duplicates(["injection", "seed"])
    if not len(runs):
        nan = float("nan")
        return {"median": nan, "lo": nan, "hi": nan, "n_seeds": 0, "reached": 0,
                "max_injection": int(g["injection"].max()), "upper_limit": False,
                "sr_signal_fraction": nan, "n_sr_background": nan}
    inj = runs["injection"].to_numpy(np.float64)
    s_sr = runs["n_sr_signal"].to_numpy(np.float64)
    b_sr = runs["n_sr_background"].to_numpy(np.float64)
    frac = s_sr.sum() / inj.sum()
    b = float(np.median(b_sr))
    with np.errstate(divide="ignore"):
        per_run = target * np.sqrt(b_sr) / (s_sr / inj)
    _, lo, hi = band(np.where(np.isfinite(per_run), per_run, np.nan))
    return {"median": float(target * np.sqrt(b) / frac) if frac > 0 else float("nan"), "lo": lo, "hi": hi,
            "n_seeds": int(runs["seed"].nunique()), "reached": int(np.isfinite(per_run).sum()),
            "max_injection": int(g["injection"].max()), "upper_limit": False,
            "sr_signal_fraction": float(frac), "n_sr_background": b}


def write_summary(metric_files, csv_path, json_path) -> pd.DataFrame:
    df = summary_table(metric_files)
    with io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")
    io.write_json(df.to_dict(orient="records"), json_path)
    return df


def plot_versus_injection(df: pd.DataFrame, max_sic_path, auc_path, title=None, working_points_path=None) -> None:
    """Max SIC, AUC (and SIC at each working point) versus injection from :func:`summary_table`.

    Per method (and study, when the table holds several): the median over
    seeds, the 16-84% band over seeds and, as error bars, the statistical
    error of the test set (``{metric}_stat``, the median over seeds of the
    per-run bootstrap standard deviation; see :func:`resonant.plots.versus_injection`).
    """
    plots.versus_injection(df, "max_sic", "Max SIC", max_sic_path, title=title)
    plots.versus_injection(df, "auc", "AUC", auc_path, title=title)
    if working_points_path is not None:
        wps = sorted({c[4:-7] for c in df.columns if c.startswith("sic@") and c.endswith("_median")},
                     key=float, reverse=True)
        plots.versus_injection(df, [f"sic@{wp}" for wp in wps],
                               [f"SIC at $\\epsilon_B$ = {wp}" for wp in wps], working_points_path, title=title)


def plot_curves(scores_by_method: dict, sic_path, rejection_path, title=None) -> None:
    """SIC and background rejection vs signal efficiency with 68% bands over seeds.

    ``scores_by_method``: {method: [scores files of its seeds]}; the runs under
    one key are pooled into one band, so a key holds one study's runs: with
    several studies, key by (study, method) (labelled "method (study)").
    """
    sic_bands, rej_bands = {}, {}
    for method, paths in scores_by_method.items():
        runs = []
        for p in paths:
            t = io.read_table(p, columns=["label", "score"])
            runs.append((t.column("label").to_numpy(), t.column("score").to_numpy()))
        grid, sic = interpolated_curves(runs, kind="sic")
        _, rej = interpolated_curves(runs, grid=grid, kind="rejection")
        with np.errstate(all="ignore"):
            sic_bands[method] = band(sic)
            rej_bands[method] = band(rej)
    plots.curves(grid, sic_bands, "SIC = $\\epsilon_S/\\sqrt{\\epsilon_B}$", sic_path, title=title,
                 reference=np.sqrt)
    plots.curves(grid, rej_bands, "Background rejection $1/\\epsilon_B$", rejection_path, title=title,
                 logy=True, reference=lambda x: 1.0 / x)


def plot_dataset(jets, outdir, sr, sb) -> None:
    """m_jj with the SR shaded, and mass / tau21 of the heavier and lighter jet per process."""
    from pathlib import Path

    from .features import high_level

    outdir = Path(outdir)
    procs = np.asarray(jets.column("process").to_pylist(), dtype=object)
    names = sorted(set(procs), key=lambda p: (p != "qcd", p))
    feats = high_level(jets, ["mj1", "mj2", "tau21_j1", "tau21_j2", "mjj"])
    by = {p: feats[procs == p] for p in names}
    plots.histograms({p: f[:, 4] for p, f in by.items()}, np.linspace(sb[0] - 300, sb[1] + 500, 60),
                     "$m_{jj}$ [GeV]", outdir / "mjj.png", logy=True, shade=sr)
    plots.histograms({p: f[:, 1] for p, f in by.items()}, np.linspace(0, 900, 61),
                     "Heavier jet $m_J$ [GeV]", outdir / "jet_mass_heavy.png")
    plots.histograms({p: f[:, 0] for p, f in by.items()}, np.linspace(0, 600, 61),
                     "Lighter jet $m_J$ [GeV]", outdir / "jet_mass_light.png")
    plots.histograms({p: f[:, 3] for p, f in by.items()}, np.linspace(0, 1.2, 49),
                     "Heavier jet $\\tau_{21}$", outdir / "tau21_heavy.png")
    plots.histograms({p: f[:, 2] for p, f in by.items()}, np.linspace(0, 1.2, 49),
                     "Lighter jet $\\tau_{21}$", outdir / "tau21_light.png")


def turn_on(pthat: np.ndarray, mjj: np.ndarray, lead_pt: np.ndarray, nominal: float, mjj_bins, pt_bins):
    """Fraction of selected events with pTHat above ``nominal``, in bins of m_jj and leading-jet pT.

    Returns {"mjj": (centres, eff, err), "pt": (centres, eff, err)} with binomial errors.
    """
    passed = pthat >= nominal
    out = {}
    for name, x, bins in (("mjj", mjj, mjj_bins), ("pt", lead_pt, pt_bins)):
        n_all, edges = np.histogram(x, bins)
        n_pass, _ = np.histogram(x[passed], edges)
        with np.errstate(divide="ignore", invalid="ignore"):
            eff = np.where(n_all > 0, n_pass / np.maximum(n_all, 1), np.nan)
            err = np.where(n_all > 0, np.sqrt(np.clip(eff * (1 - eff), 1 / np.maximum(n_all, 1) ** 2, None)
                                               / np.maximum(n_all, 1)), np.nan)
        out[name] = (0.5 * (edges[1:] + edges[:-1]), eff, err)
    return out


def plot_turn_on(curves: dict, nominal: float, sample_cut: float, sr, sb, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, (name, xlabel) in zip(axes, (("mjj", "$m_{jj}$ [GeV]"), ("pt", "Leading jet $p_T$ [GeV]"))):
        x, eff, err = curves[name]
        ax.errorbar(x, eff, yerr=err, fmt="o", label=f"$\\hat{{p}}_T$ > {nominal:g} GeV given > {sample_cut:g} GeV")
        ax.axhline(1.0, color="k", ls=":")
        if name == "mjj":
            ax.axvspan(*sr, color="grey", alpha=0.15, label="SR")
            for edge in sb:
                ax.axvline(edge, color="k", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Efficiency of the generator cut")
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=12, loc="lower right")
    plots._tag(axes[0])
    plots.save(fig, path)


def _merge_bins(n_all: np.ndarray, eff: float, min_expected: float) -> np.ndarray:
    """Group index of each bin: adjacent bins merged (left to right) until the expected numbers of
    passing and failing events, eff N and (1 - eff) N, both reach ``min_expected``; a short tail
    joins the last group."""
    group = np.zeros(len(n_all), dtype=int)
    g, acc = 0, 0.0
    need = min_expected / max(min(eff, 1.0 - eff), 1e-12)
    for i, n in enumerate(n_all):
        group[i] = g
        acc += n
        if acc >= need:
            g, acc = g + 1, 0.0
    if acc < need and g > 0:  # the tail did not reach it: merge it into the previous group
        group[group == g] = g - 1
    return group


def pass_fraction_test(x: np.ndarray, passed: np.ndarray, edges, min_expected: float = 5.0) -> dict:
    """Is the fraction of events passing a cut the same in every bin of ``x``?

    The events passing are a subset of all events, so the after-cut
    histogram is not independent of the inclusive one: under "no sculpting"
    the number passing in bin i is binomial, k_i ~ Bin(N_i, eps), with eps the
    global pass fraction. The statistic is Pearson's chi2 of the 2 x B table
    (pass/fail x bin), sum_i (k_i - eps N_i)^2 / (N_i eps (1 - eps)), with B - 1
    degrees of freedom (eps is estimated from the same events); bins are
    merged until eps N_i and (1 - eps) N_i are at least ``min_expected``.
    Returns the chi2, ndf, p-value, eps, and per original bin N_i, k_i.
    """
    from scipy.stats import chi2 as chi2_dist

    x, passed = np.asarray(x), np.asarray(passed, dtype=bool)
    n_all, edges = np.histogram(x, edges)
    n_pass, _ = np.histogram(x[passed], edges)
    total = int(n_all.sum())
    eff = float(n_pass.sum() / total) if total else float("nan")
    out = {"n": total, "n_pass": int(n_pass.sum()), "pass_fraction": eff, "all": n_all, "hist": n_pass}
    if not total or eff in (0.0, 1.0):
        return {**out, "chi2": float("nan"), "ndf": 0, "p_value": float("nan")}
    group = _merge_bins(n_all, eff, min_expected)
    N = np.bincount(group, weights=n_all)
    K = np.bincount(group, weights=n_pass)
    ok = N > 0
    chi2 = float(np.sum((K[ok] - eff * N[ok]) ** 2 / (N[ok] * eff * (1.0 - eff))))
    ndf = int(ok.sum()) - 1
    p = float(chi2_dist.sf(chi2, ndf)) if ndf > 0 else float("nan")
    return {**out, "chi2": chi2, "ndf": ndf, "p_value": p}


def sculpting(mjj: np.ndarray, score: np.ndarray, efficiencies, bins, region=None) -> dict:
    """Does a cut keeping the highest-score fraction ``eff`` of the events change their m_jj shape?

    For each cut, :func:`pass_fraction_test` over all events (the pass
    fraction per m_jj bin against the global one). With ``region`` (per-event
    labels, e.g. "sr"/"sb") the same test within each region, with that
    region's own pass fraction, and each region's pass fraction: a step in the
    pass fraction at the SR edges sculpts a bump without changing the shape
    inside either region.
    """
    mjj, score = np.asarray(mjj), np.asarray(score)
    h_all, edges = np.histogram(mjj, bins)
    out = {"edges": edges, "all": h_all, "cuts": {}}
    labels = None if region is None else np.asarray(region, dtype=object)
    for eff in efficiencies:
        thr = float(np.quantile(score, 1 - eff))
        passed = score >= thr
        res = pass_fraction_test(mjj, passed, edges)
        res["threshold"] = thr
        if labels is not None:
            res["regions"] = {str(r): {k: v for k, v in pass_fraction_test(mjj[labels == r], passed[labels == r],
                                                                          edges).items()
                                       if k not in ("all", "hist")}
                              for r in sorted(set(labels))}
        out["cuts"][eff] = res
    return out


def sculpting_summary(res: dict) -> dict:
    """The JSON-able numbers of :func:`sculpting` (no per-bin histograms), by cut."""
    drop = ("all", "hist")
    return {str(e): {k: v for k, v in c.items() if k not in drop} for e, c in res["cuts"].items()}


def plot_sculpting(mjj, score, sr, sb, path, efficiencies=(0.2, 0.05), title=None, region=None) -> dict:
    res = sculpting(mjj, score, efficiencies, np.linspace(sb[0], sb[1], 28), region=region)
    edges = res["edges"]
    import matplotlib.pyplot as plt
    import mplhep as hep

    fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 8), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ref = res["all"] / res["all"].sum() / np.diff(edges)
    hep.histplot(ref, edges, ax=ax, label=f"all data ({res['all'].sum()})", color="k")
    for eff, c in res["cuts"].items():
        n = max(c["hist"].sum(), 1)
        dens = c["hist"] / n / np.diff(edges)
        err = np.sqrt(c["hist"]) / n / np.diff(edges)
        hep.histplot(dens, edges, yerr=err, ax=ax,
                     label=f"top {eff:.0%}: $\\chi^2$/ndf = {c['chi2']:.1f}/{c['ndf']}, p = {c['p_value']:.2g}")
        # pass fraction per bin over the global one, binomial errors
        eps = c["pass_fraction"]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(res["all"] > 0, c["hist"] / res["all"], np.nan)
            ferr = np.sqrt(eps * (1 - eps) / res["all"])
            hep.histplot(frac / eps, edges, yerr=ferr / eps, ax=rax)
    ax.axvspan(*sr, color="grey", alpha=0.15, label="SR")
    ax.set_yscale("log")
    ax.set_ylabel("Density")
    ax.legend(fontsize=11)
    plots._tag(ax, title)
    rax.axhline(1, color="k", lw=1)
    rax.axvspan(*sr, color="grey", alpha=0.15)
    rax.set_ylim(0, 3)
    rax.set_ylabel("pass fraction\n/ global", fontsize=14)
    rax.set_xlabel("$m_{jj}$ [GeV]")
    plots.save(fig, path)
    return res


def fidelity_table(files) -> pd.DataFrame:
    """Median and 68% band over seeds of the generated-vs-true AUC per injection."""
    df = pd.DataFrame([io.read_json(p) for p in files])
    rows = []
    for inj, g in df.groupby("injection"):
        med, lo, hi = band(g["auc"].to_numpy())
        rows.append({"method": "cathode", "injection": int(inj), "auc_median": med, "auc_lo": lo, "auc_hi": hi})
    return pd.DataFrame(rows)


def mjj_leakage_r2(z: np.ndarray, mjj: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated R^2 of a regressor predicting m_jj from a latent: about 0 when the latent knows no m_jj.

    A gradient-boosted regressor (scikit-learn), out-of-fold predictions; the
    constant prediction (the mean) scores 0, a perfect one 1.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    reg = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed)
    pred = cross_val_predict(reg, z, mjj, cv=KFold(folds, shuffle=True, random_state=seed))
    return float(r2_score(mjj, pred))


def group_separation_auc(z: np.ndarray, is_group: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated AUC of a classifier telling one process group from another in a latent space."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed)
    p = cross_val_predict(clf, z, is_group, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                          method="predict_proba")[:, 1]
    return float(roc_auc_score(is_group, p))


def latent_checks(table, background_group: str, seed: int = 0) -> dict:
    """Checks of an encoder on simulated test events: m_jj leakage on background, separation of each group.

    ``table``: a latent table (columns group, trained, mjj, z0, z1, ...).
    """
    from .features import latent_columns

    names = latent_columns(table)
    z = np.stack([table.column(n).to_numpy() for n in names], axis=1)
    group = np.asarray(table.column("group").to_pylist(), dtype=object)
    trained = dict(zip(group, table.column("trained").to_pylist()))
    mjj = table.column("mjj").to_numpy()
    bkg = group == background_group
    out = {"background_group": background_group, "n_background": int(bkg.sum()),
           "mjj_r2_background": mjj_leakage_r2(z[bkg], mjj[bkg], seed=seed), "groups": {}}
    for g in sorted(set(group) - {background_group}):
        sel = bkg | (group == g)
        out["groups"][g] = {"n": int((group == g).sum()), "in_training": bool(trained[g]),
                            "auc_vs_background": group_separation_auc(z[sel], group[sel] == g, seed=seed)}
    return out
