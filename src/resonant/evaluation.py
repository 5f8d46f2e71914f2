"""Collecting per-run metrics and scores into summaries and figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import io, plots
from .metrics import band, interpolated_curves

SUMMARY_METRICS = ("auc", "max_sic", "sic_0.2", "sic_0.5", "rejection_0.5")


def summary_table(metric_files) -> pd.DataFrame:
    """Median and 68% band over seeds per method and injection."""
    rows = [io.read_json(p) for p in metric_files]
    df = pd.DataFrame(rows)
    out = []
    for (method, inj), g in df.groupby(["method", "injection"], sort=False):
        row = {"method": method, "injection": int(inj), "n_seeds": len(g)}
        for m in SUMMARY_METRICS:
            med, lo, hi = band(g[m].to_numpy())
            row.update({f"{m}_median": med, f"{m}_lo": lo, f"{m}_hi": hi})
        out.append(row)
    return pd.DataFrame(out).sort_values(["method", "injection"], kind="stable").reset_index(drop=True)


def write_summary(metric_files, csv_path, json_path) -> pd.DataFrame:
    df = summary_table(metric_files)
    with io.atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")
    io.write_json(df.to_dict(orient="records"), json_path)
    return df


def plot_versus_injection(df: pd.DataFrame, max_sic_path, auc_path, title=None) -> None:
    plots.versus_injection(df, "max_sic", "Max SIC", max_sic_path, title=title)
    plots.versus_injection(df, "auc", "AUC", auc_path, title=title)


def plot_curves(scores_by_method: dict[str, list], sic_path, rejection_path, title=None) -> None:
    """SIC and background rejection vs signal efficiency with 68% bands over seeds."""
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


def sculpting(mjj: np.ndarray, score: np.ndarray, efficiencies, bins) -> dict:
    """m_jj shape of all data and after cuts keeping the highest-score fraction ``eff`` of it.

    For each cut: the chi2/ndf of the normalised after-cut histogram against
    the normalised inclusive one (Poisson errors of both), and its p-value.
    """
    from scipy.stats import chi2 as chi2_dist

    h_all, edges = np.histogram(mjj, bins)
    out = {"edges": edges, "all": h_all, "cuts": {}}
    p_all = h_all / max(h_all.sum(), 1)
    for eff in efficiencies:
        thr = np.quantile(score, 1 - eff)
        h, _ = np.histogram(mjj[score >= thr], edges)
        n = max(h.sum(), 1)
        ok = (h_all > 0)
        var = h[ok] / n**2 + h_all[ok] / max(h_all.sum(), 1) ** 2
        var = np.where(var > 0, var, 1.0 / n**2)
        chi2 = float(np.sum((h[ok] / n - p_all[ok]) ** 2 / var))
        ndf = int(ok.sum()) - 1
        out["cuts"][eff] = {"hist": h, "chi2": chi2, "ndf": ndf, "p_value": float(chi2_dist.sf(chi2, max(ndf, 1)))}
    return out


def plot_sculpting(mjj, score, sr, sb, path, efficiencies=(0.2, 0.05), title=None) -> dict:
    res = sculpting(mjj, score, efficiencies, np.linspace(sb[0], sb[1], 28))
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
                     label=f"top {eff:.0%}: $\\chi^2$/ndf = {c['chi2']:.1f}/{c['ndf']}, p = {c['p_value']:.2f}")
        with np.errstate(divide="ignore", invalid="ignore"):
            hep.histplot(dens / ref, edges, yerr=err / ref, ax=rax)
    ax.axvspan(*sr, color="grey", alpha=0.15, label="SR")
    ax.set_yscale("log")
    ax.set_ylabel("Density")
    ax.legend(fontsize=11)
    plots._tag(ax, title)
    rax.axhline(1, color="k", lw=1)
    rax.set_ylim(0, 3)
    rax.set_ylabel("cut / all", fontsize=14)
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
