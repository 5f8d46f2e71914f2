"""All figures, in one style (mplhep CMS-like, labelled as simulation)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from . import io  # noqa: E402

plt.style.use(hep.style.CMS)

METHOD_LABELS = {
    "supervised": "Supervised",
    "idealised": "Idealised AD",
    "cathode": "CATHODE (classic)",
    "random": "Random",
}


def label_of(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def save(fig, path) -> None:
    """Save atomically (PNG, 120 dpi) and close."""
    path = Path(path)
    with io.atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip("."))
    plt.close(fig)


def _tag(ax, text=None):
    hep.label.exp_text("", "Simulation", loc=0, ax=ax)
    if text:
        ax.text(0.97, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=14)


def curves(grid, bands: dict, ylabel: str, path, title=None, logy=False, reference=None):
    """Curves with 68% bands: ``bands[method] = (median, lo, hi)`` on ``grid``."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for method, (med, lo, hi) in bands.items():
        (line,) = ax.plot(grid, med, label=label_of(method))
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.25, lw=0)
    if reference is not None:
        ax.plot(grid, reference(grid), "k:", label="Random")
    ax.set_xlabel("Signal efficiency")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=14)
    _tag(ax, title)
    save(fig, path)


def versus_injection(table, metric: str, ylabel: str, path, xlabel="Injected signal events", title=None):
    """Median and 68% band of ``metric`` versus injection, one line per method.

    ``table`` is a pandas DataFrame with columns method, injection, {metric}_median/_lo/_hi.
    """
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for method, g in table.groupby("method", sort=False):
        g = g.sort_values("injection")
        x = g["injection"].to_numpy()
        (line,) = ax.plot(x, g[f"{metric}_median"], "o-", label=label_of(method))
        ax.fill_between(x, g[f"{metric}_lo"], g[f"{metric}_hi"], color=line.get_color(), alpha=0.25, lw=0)
    if metric == "auc":
        ax.axhline(0.5, color="k", ls=":", label="Random")
    elif metric.startswith("max_sic") or metric.startswith("sic"):
        ax.axhline(1.0, color="k", ls=":", label="Random")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=14)
    _tag(ax, title)
    save(fig, path)


def histograms(samples: dict, bins, xlabel: str, path, density=True, logy=False, title=None, shade=None,
               ratio_to=None):
    """Step histograms of several samples; optional shaded x-range and ratio panel to one sample."""
    if ratio_to is not None:
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 8), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    else:
        fig, ax = plt.subplots(figsize=(8, 6.5))
    counts = {}
    for name, values in samples.items():
        h, edges = np.histogram(values, bins=bins)
        norm = h.sum() * np.diff(edges) if density and h.sum() else 1.0
        counts[name] = (h / norm, np.sqrt(h) / norm)
        hep.histplot(h / norm, edges, yerr=np.sqrt(h) / norm, ax=ax, label=f"{name} ({len(values)})")
    if shade is not None:
        ax.axvspan(*shade, color="grey", alpha=0.15, label="SR")
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel("Density" if density else "Events")
    ax.legend(fontsize=12)
    _tag(ax, title)
    if ratio_to is not None:
        ref, ref_err = counts[ratio_to]
        with np.errstate(divide="ignore", invalid="ignore"):
            for name, (h, err) in counts.items():
                if name == ratio_to:
                    continue
                hep.histplot(h / ref, edges, yerr=err / ref, ax=rax)
        rax.axhline(1, color="k", lw=1)
        rax.set_ylim(0.5, 1.5)
        rax.set_ylabel(f"/ {ratio_to}", fontsize=14)
        rax.set_xlabel(xlabel)
    else:
        ax.set_xlabel(xlabel)
    save(fig, path)


def efficiency(x_centres, eff, err, xlabel: str, ylabel: str, path, title=None, hline=1.0):
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.errorbar(x_centres, eff, yerr=err, fmt="o")
    ax.axhline(hline, color="k", ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.1)
    _tag(ax, title)
    save(fig, path)
