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
    "vae": "VAE (KL score)",
    "vae_latent": "VAE (encoding rarity)",
    "flow_matching": "Flow matching (full phase space)",
    "diffusion": "Diffusion (full phase space)",
    "idealised_pointcloud": "Idealised AD (point cloud)",
    "random": "Random",
}


#: method: (colour, marker, line style), the same in every figure; contrastive configurations by _CONTRASTIVE
_STYLES = {
    "supervised": ("black", "s", "-"),
    "idealised": ("tab:gray", "D", "--"),
    "idealised_pointcloud": ("tab:olive", "d", "-."),
    "cathode": ("tab:blue", "o", "-"),
    "flow_matching": ("tab:red", "^", "-"),
    "diffusion": ("tab:purple", "v", "-"),
    "vae": ("tab:brown", "P", "-"),
    "vae_latent": ("darkgoldenrod", "p", "--"),
}
_CONTRASTIVE = {"ID": "tab:green", "IP": "tab:cyan", "EP": "tab:pink", "bkg": "tab:orange"}
_SPARE = ("gold", "navy", "teal", "maroon", "lime", "indigo")


def style_of(method: str) -> dict:
    """Colour, marker and line style of a method: fixed per method, so that it looks the same in every figure
    and no two methods of a study share a colour."""
    if method in _STYLES:
        color, marker, ls = _STYLES[method]
    elif method.startswith("contrastive-") and method.split("-", 1)[1] in _CONTRASTIVE:
        color, marker, ls = _CONTRASTIVE[method.split("-", 1)[1]], "*", ":"
    else:
        import zlib

        color, marker, ls = _SPARE[zlib.crc32(method.encode()) % len(_SPARE)], "X", "--"
    return {"color": color, "marker": marker, "ls": ls}


def _legend(ax, n_entries: int):
    """The legend: inside the axes when short, beside them (right) when it would cover the curves."""
    if n_entries <= 5:
        ax.legend(fontsize=13)
    else:
        ax.legend(fontsize=13, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def label_of(method: str) -> str:
    if method.startswith("contrastive-"):
        return f"Contrastive latent ({method.split('-', 1)[1]})"
    return METHOD_LABELS.get(method, method)


def save(fig, path) -> None:
    """Save atomically (PNG, 120 dpi) and close."""
    path = Path(path)
    with io.atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip("."))
    plt.close(fig)


def _tag(ax, text=None):
    hep.label.exp_text("", "Simulation", loc=0, ax=ax)
    if text:  # above the axes, right-aligned: never over a curve or the legend
        ax.set_title(text, loc="right", fontsize=14)


#: line styles that tell studies apart when one figure shows several
_STUDY_LS = ("-", "--", ":", "-.")
BAND_LABEL = "band: spread over seeds (16-84%)"
BARS_LABEL = "bars: test-set bootstrap (median over seeds)"


def _series(key, studies: list) -> tuple[dict, str]:
    """Style and label of a series keyed by a method or by (study, method); studies differ in line style."""
    if isinstance(key, tuple):
        study, method = key
        st = style_of(method)
        if len(studies) > 1:
            return {**st, "ls": _STUDY_LS[studies.index(study) % len(_STUDY_LS)]}, f"{label_of(method)} ({study})"
        return st, label_of(method)
    return style_of(key), label_of(key)


def curves(grid, bands: dict, ylabel: str, path, title=None, logy=False, reference=None):
    """Curves with 68% bands: ``bands[key] = (median, lo, hi)`` on ``grid``, key a method or (study, method)."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    studies = list(dict.fromkeys(k[0] for k in bands if isinstance(k, tuple)))
    for key, (med, lo, hi) in bands.items():
        st, label = _series(key, studies)
        ax.plot(grid, med, color=st["color"], ls=st["ls"], label=label)
        ax.fill_between(grid, lo, hi, color=st["color"], alpha=0.25, lw=0)
    if reference is not None:
        ax.plot(grid, reference(grid), "k:", label="Random")
    ax.set_xlabel("Signal efficiency")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    if logy:
        ax.set_yscale("log")
    _legend(ax, len(bands) + (reference is not None))
    _tag(ax, title)
    save(fig, path)


def versus_injection(table, metric, ylabel, path, xlabel="Injected signal events", title=None):
    """Median over seeds of ``metric`` versus injection, one line per method (and study).

    ``table`` is a pandas DataFrame with columns method, injection,
    {metric}_median/_lo/_hi and, optionally, study and {metric}_stat. Two
    uncertainties are drawn apart: the band is the 16-84% spread over seeds
    (the training spread, which includes the test-set fluctuation of each
    run), the error bars the statistical uncertainty of the test set, the
    median over seeds of each run's bootstrap standard deviation
    (``{metric}_stat``; no bars without it). With several studies in the
    table, each (study, method) is its own line, studies told apart by the
    line style; runs of different studies are never pooled.
    ``metric`` and ``ylabel`` may be lists: one panel each, side by side.
    """
    metrics, ylabels = ([metric], [ylabel]) if isinstance(metric, str) else (list(metric), list(ylabel))
    fig, axes = plt.subplots(1, len(metrics), figsize=(8 * len(metrics), 6.5), squeeze=False)
    for ax, m, yl in zip(axes[0], metrics, ylabels):
        _versus_injection_panel(ax, table, m, yl, xlabel)
    _tag(axes[0][0], title)
    save(fig, path)


def _versus_injection_panel(ax, table, metric: str, ylabel: str, xlabel: str):
    keys = ["study", "method"] if "study" in table.columns else ["method"]
    studies = list(dict.fromkeys(table["study"])) if "study" in table.columns else []
    groups = list(table.groupby(keys, sort=False))
    any_bars = False
    for key, g in groups:
        key = tuple(key) if isinstance(key, tuple) else (key,)  # pandas gives tuples for a list of keys
        st, label = _series(key if len(keys) == 2 else key[0], studies)
        g = g.sort_values("injection")
        x = g["injection"].to_numpy()
        med = g[f"{metric}_median"].to_numpy(np.float64)
        ax.plot(x, med, **st, label=label)
        ax.fill_between(x, g[f"{metric}_lo"], g[f"{metric}_hi"], color=st["color"], alpha=0.25, lw=0)
        stat = g[f"{metric}_stat"].to_numpy(np.float64) if f"{metric}_stat" in g else np.full(len(g), np.nan)
        if np.isfinite(stat).any():
            ax.errorbar(x, med, yerr=np.where(np.isfinite(stat), stat, 0.0), fmt="none", ecolor=st["color"],
                        elinewidth=1.2, capsize=3)
            any_bars = True
    if metric == "auc":
        ax.axhline(0.5, color="k", ls=":", label="Random")
    elif metric.startswith("max_sic") or metric.startswith("sic"):
        ax.axhline(1.0, color="k", ls=":", label="Random")
    ax.fill_between([], [], [], color="grey", alpha=0.25, lw=0, label=BAND_LABEL)
    if any_bars:
        ax.errorbar([], [], yerr=[], fmt="none", ecolor="grey", capsize=3, label=BARS_LABEL)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(ax, len(groups) + 2 + any_bars)


def _hist_panel(ax, rax, samples: dict, bins, density=True, ratio_to=None, legend=True):
    """Step histograms of several samples on ``ax``; their ratio to ``samples[ratio_to]`` on ``rax``."""
    counts = {}
    edges = None
    for name, values in samples.items():
        h, edges = np.histogram(values, bins=bins)
        norm = h.sum() * np.diff(edges) if density and h.sum() else 1.0
        counts[name] = (h / norm, np.sqrt(h) / norm)
        hep.histplot(h / norm, edges, yerr=np.sqrt(h) / norm, ax=ax, label=f"{name} ({len(values)})")
    ax.set_ylabel("Density" if density else "Events")
    if legend:
        ax.legend(fontsize=12)
    if rax is not None and ratio_to is not None:
        ref, _ = counts[ratio_to]
        with np.errstate(divide="ignore", invalid="ignore"):
            for name, (h, err) in counts.items():
                if name != ratio_to:
                    hep.histplot(h / ref, edges, yerr=err / ref, ax=rax)
        rax.axhline(1, color="k", lw=1)
        rax.set_ylim(0.5, 1.5)
        rax.set_ylabel(f"/ {ratio_to}", fontsize=12)


def histograms(samples: dict, bins, xlabel: str, path, density=True, logy=False, title=None, shade=None,
               ratio_to=None):
    """Step histograms of several samples; optional shaded x-range and ratio panel to one sample."""
    if ratio_to is not None:
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 8), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    else:
        fig, ax = plt.subplots(figsize=(8, 6.5))
        rax = None
    _hist_panel(ax, rax, samples, bins, density=density, ratio_to=ratio_to, legend=False)
    if shade is not None:
        ax.axvspan(*shade, color="grey", alpha=0.15, label="SR")
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=12)
    _tag(ax, title)
    (rax if rax is not None else ax).set_xlabel(xlabel)
    save(fig, path)


def feature_grid(panels: list, path, ratio_to: str, ncols: int = 5, title=None):
    """A grid of histogram panels with ratio panels below, one per feature.

    ``panels`` is a list of (xlabel, {sample name: values}, bins); every panel
    draws each sample's density and its ratio to ``ratio_to`` (e.g. generated
    over true). Rows of ``ncols`` panels.
    """
    nrows = -(-len(panels) // ncols)
    fig = plt.figure(figsize=(4.2 * ncols, 4.6 * nrows))
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1] * nrows, hspace=0.08, wspace=0.35)
    for k, (xlabel, samples, bins) in enumerate(panels):
        r, c = divmod(k, ncols)
        ax = fig.add_subplot(grid[2 * r, c])
        rax = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        _hist_panel(ax, rax, samples, bins, ratio_to=ratio_to, legend=k == 0)
        ax.tick_params(labelbottom=False, labelsize=10)
        rax.tick_params(labelsize=10)
        ax.yaxis.label.set_size(12)
        rax.set_xlabel(xlabel, fontsize=13)
        if k == 0:
            ax.legend(fontsize=9)
    if title:
        fig.suptitle(title, fontsize=16, y=1.0)
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


NO_CUT = "no_cut"  # the method name of the no-cut baseline rows (resonant.evaluation.NO_CUT)


def required_injection(table, path, cut: str, target: float = 5.0, title=None):
    """Injected signal needed for ``target`` sigma after the cut, per signal model (x) and method (marker).

    ``table``: columns study, signal, method, cut, median, lo, hi, max_injection (and upper_limit).
    Each study has its own slot on the x axis; every method's median and 68% band over that study's seeds.
    Methods that do not reach it within the scan get an upward arrow at the largest injection, those
    that reach it at the smallest injection scanned a downward one (an upper limit). Rows of method
    ``no_cut`` (any cut) are the baseline without a cut, S/sqrt(B) = ``target`` in the SR: a horizontal
    line across the study's slot, its band shaded.
    """
    t = table[(table["cut"] == cut) & (table["method"] != NO_CUT)]
    base = table[table["method"] == NO_CUT]
    studies = list(dict.fromkeys(list(t["study"]) + list(base["study"])))
    methods = list(dict.fromkeys(t["method"]))
    fig, ax = plt.subplots(figsize=(max(8, 2.2 * len(studies) + 4), 6.5))
    width = 0.8 / max(len(methods), 1)
    for k, method in enumerate(methods):
        _required_injection_method(ax, t[t["method"] == method].set_index("study"), studies, method,
                                   -0.4 + (k + 0.5) * width)
    _no_cut_lines(ax, base, studies, target)
    signal = dict(zip(table["study"], table["signal"])) if "signal" in table else {}
    ax.set_xticks(range(len(studies)))
    ax.set_xticklabels([f"{s}\n({signal.get(s, '')})" for s in studies], fontsize=12)
    ax.set_yscale("log")
    shown = _shown_values(t, base)
    top = float(max(t["max_injection"].max() if len(t) else 1.0, np.nanmax(shown, initial=1.0)))
    finite = shown[np.isfinite(shown) & (shown > 0)]
    ax.set_ylim(min(finite.min(), top) / 3 if len(finite) else top / 10, top * 3)
    ax.set_xlim(-0.6, len(studies) - 0.4)
    ax.set_ylabel(f"Injected signal for {target:g}$\\sigma$ (cut: {cut})")
    ax.legend(fontsize=12)
    _tag(ax, title)
    save(fig, path)


def _shown_values(t, base) -> np.ndarray:
    """Every finite lo/median/hi of the method rows and of the baseline rows: the values the y range must show."""
    cols = ("lo", "median", "hi")
    return np.concatenate([d[c].to_numpy(np.float64) for d in (t, base) for c in cols if c in d])


def _required_injection_method(ax, g, studies: list, method: str, offset: float):
    """One method's markers (median, 68% band) at its offset within each study's slot, and its arrows."""
    xs = np.array([studies.index(s) for s in g.index]) + offset
    med, lo, hi = g["median"].to_numpy(), g["lo"].to_numpy(), g["hi"].to_numpy()
    ok = np.isfinite(med)
    st = style_of(method)
    color = st["color"]
    ax.errorbar(xs[ok], med[ok], yerr=[med[ok] - lo[ok], hi[ok] - med[ok]], fmt=st["marker"], color=color,
                capsize=3, label=label_of(method))
    for x, top in zip(xs[~ok], g["max_injection"].to_numpy()[~ok]):
        ax.annotate("", xy=(x, top * 1.6), xytext=(x, top), arrowprops={"arrowstyle": "->", "color": color})
    limit = ok & g["upper_limit"].to_numpy(bool) if "upper_limit" in g else np.zeros(len(g), bool)
    for x, y in zip(xs[limit], med[limit]):  # reached at the smallest injection scanned
        ax.annotate("", xy=(x, y / 1.6), xytext=(x, y), arrowprops={"arrowstyle": "->", "color": color})


def _no_cut_lines(ax, base, studies: list, target: float):
    """The no-cut baseline of each study: a horizontal line across its slot, the band over seeds shaded."""
    label = f"no cut: S/sqrt(B) = {target:g}"
    for _, row in base.iterrows():
        if not np.isfinite(row["median"]):
            continue
        i = studies.index(row["study"])
        ax.hlines(row["median"], i - 0.45, i + 0.45, colors="k", linestyles="--", lw=1.5, label=label)
        if np.isfinite(row["lo"]) and np.isfinite(row["hi"]):
            ax.fill_between([i - 0.45, i + 0.45], row["lo"], row["hi"], color="k", alpha=0.1, lw=0)
        label = None  # one legend entry


def latent_projections(z: np.ndarray, group: np.ndarray, held_out: set, path, title=None, max_points=2000, seed=0):
    """A latent space per process group: pairs of coordinates (z0-z1, z2-z3, ...) and a 2-d PCA embedding
    (top row), and the distribution of every coordinate (below). Held-out groups are drawn with crosses."""
    from sklearn.decomposition import PCA

    d = z.shape[1]
    n_pairs = max(1, d // 2)
    ncol = n_pairs + 1
    nrow = 1 + int(np.ceil(d / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 6.5 + 4.5 * (nrow - 1)), squeeze=False,
                             gridspec_kw={"height_ratios": [6.5] + [4.5] * (nrow - 1)})
    rng = np.random.default_rng(seed)
    colours = plt.get_cmap("tab10")
    emb = PCA(n_components=2, random_state=seed).fit_transform(z) if d > 1 else np.c_[z, z]
    bins = [np.linspace(*np.nanpercentile(z[:, k], [0.5, 99.5]), 40) for k in range(d)]
    for i, g in enumerate(sorted(set(group))):
        sel = group == g
        idx = rng.choice(np.flatnonzero(sel), min(int(sel.sum()), max_points), replace=False)
        style = {"s": 4, "alpha": 0.4, "marker": "x" if g in held_out else "o", "color": colours(i % 10)}
        label = f"{g} (held out)" if g in held_out else g
        for k in range(n_pairs):
            j = min(2 * k + 1, d - 1)
            axes[0][k].scatter(z[idx, 2 * k], z[idx, j], label=label, **style)
        axes[0][n_pairs].scatter(emb[idx, 0], emb[idx, 1], **style)
        for k in range(d):
            ax = axes[1 + k // ncol][k % ncol]
            ax.hist(z[sel, k], bins=bins[k], density=True, histtype="step", color=colours(i % 10),
                    ls="--" if g in held_out else "-")
    for k in range(n_pairs):
        axes[0][k].set_xlabel(f"$z_{{{2 * k}}}$")
        axes[0][k].set_ylabel(f"$z_{{{min(2 * k + 1, d - 1)}}}$")
    axes[0][n_pairs].set_xlabel("PCA 1")
    axes[0][n_pairs].set_ylabel("PCA 2")
    for k in range(d):
        axes[1 + k // ncol][k % ncol].set_xlabel(f"$z_{{{k}}}$")
    for k in range(d, (nrow - 1) * ncol):
        axes[1 + k // ncol][k % ncol].axis("off")
    axes[0][0].legend(fontsize=10, markerscale=3)
    _tag(axes[0][0], title)
    save(fig, path)
