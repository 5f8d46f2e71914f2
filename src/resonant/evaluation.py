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
