"""Characterise the VAE latent space of a data set with signal and of one without.

For each: a VAE (KL-peak stopping), then a new decoder on its frozen encoder
with m_jj as an extra input, decoded on a (m_jj, z) grid. Background-only
subsets of the data set without signal give bands for the marginals
<O>_z(m_jj) / <O>. Writes the two heat-map figures, the marginal-band figure
and a JSON summary with the m_jj of the largest deviation of each observable.
Truth labels are read only at the end, for the signal/background contours.
"""

from resonant import cli, io, seeds


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--signal-sets", nargs=2, required=True, metavar=("SB", "SR"),
                   help="sb.parquet and sr.parquet of the data set with signal")
    p.add_argument("--background-sets", nargs=2, required=True, metavar=("SB", "SR"),
                   help="sb.parquet and sr.parquet of the data set without signal (injection 0)")
    p.add_argument("--latent-signal-plot", required=True, help="heat maps of the data set with signal (PNG)")
    p.add_argument("--latent-background-plot", required=True, help="heat maps of the data set without signal (PNG)")
    p.add_argument("--marginals-plot", required=True, help="marginals with the background-only bands (PNG)")
    p.add_argument("--summary", required=True, help="JSON summary")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    from resonant.models.vae import configure

    configure(args.threads)  # TensorFlow threads, before the first op
    from resonant import vae

    prm = args.params
    s = vae.settings(prm)
    sr, mjj_range = prm["sr"], prm["sb"]
    signal = vae.read_sets(args.signal_sets)
    background = vae.read_sets(args.background_sets)
    if prm.get("drop_signal_from_background"):
        # the study has no injection 0: its background alone, from the truth labels of the same events
        bkg_only = vae.read_sets(args.background_sets, columns=["label"]).column("label").to_numpy() == 0
        background = background.filter(bkg_only)
    seed = seeds.vae_characterisation(prm["study"], prm["injection"], prm["seed"])
    study = vae.characterisation_study(signal, background, s, seed, mjj_range, sr=sr,
                                       source=" + ".join(args.signal_sets + args.background_sets))

    # final evaluation: the truth labels enter the figures' contours only
    title = prm.get("title")
    inj = prm.get("injection")
    for res, sets, path, what in ((study["signal"], args.signal_sets, args.latent_signal_plot, f"injection {inj}"),
                                  (study["background"], args.background_sets, args.latent_background_plot,
                                   "no signal")):
        labels = vae.read_sets(sets, columns=["label"]).column("label").to_numpy()
        if what == "no signal" and prm.get("drop_signal_from_background"):
            labels = labels[labels == 0]
        vae.plot_latent_map(res, path, labels=labels, title=f"{title}: {what}" if title else what)
    vae.plot_marginals(study["signal"]["mjj_grid"], study["band"],
                       {f"injection {inj}": study["signal"]["marginals"],
                        "no signal (all events)": study["background"]["marginals"]},
                       args.marginals_plot, sr=sr, deviations=study["deviations"]["signal"], title=title)
    io.write_json({**vae.characterisation_summary(study, sr), "params": prm}, args.summary)


if __name__ == "__main__":
    cli.run(main)
