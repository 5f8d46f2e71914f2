"""Diagnostics of the VAE ensemble and sculpting checks of both VAE scores.

Diagnostics (the study's largest injection, first seed: the members the
vae_train stage trained there): per member the validation KL against epoch
with the kept epoch marked, and the distribution of the data's latent means at
that epoch. Sculpting (the smallest injection, ideally 0, first seed): the
data events (SB + SR) scored by the published KL score and by the
encoding-rarity score (each event left out of its own density), and the m_jj
spectrum before and after keeping their highest-scoring 20% and 5%
(resonant.evaluation.plot_sculpting). Everything is computed without labels;
the labels of the diagnostics set are read at the end, to draw the signal in
the latent-mean figure only.
"""

from resonant import cli, io


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--diagnostics-models", required=True, help="vae models directory of the largest injection")
    p.add_argument("--diagnostics-sets", nargs=2, required=True, metavar=("SB", "SR"),
                   help="sb.parquet and sr.parquet of the same study set")
    p.add_argument("--sculpting-models", required=True, help="vae models directory of the smallest injection")
    p.add_argument("--sculpting-sets", nargs=2, required=True, metavar=("SB", "SR"),
                   help="sb.parquet and sr.parquet of the same study set")
    p.add_argument("--training-plot", required=True, help="validation KL against epoch per member (PNG)")
    p.add_argument("--latent-plot", required=True, help="the data's latent means per member (PNG)")
    p.add_argument("--kl-sculpting-plot", required=True, help="m_jj before and after cuts on the KL score (PNG)")
    p.add_argument("--sculpting-plot", required=True, help="m_jj before and after cuts on the rarity score (PNG)")
    p.add_argument("--summary", required=True, help="JSON: kept epochs, sculpting tests of both scores")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    from resonant.models.vae import configure

    configure(args.threads)  # TensorFlow threads, before the first op
    import numpy as np

    from resonant import vae
    from resonant.evaluation import plot_sculpting, sculpting_summary
    from resonant.plots import label_of

    prm = args.params
    s = vae.latent_settings(prm)
    title = prm.get("title")

    # sculpting: both scores of the data of the smallest injection
    models, _ = vae.load_ensemble(args.sculpting_models)
    parts = [vae.read_sets([path], columns=["mjj", *vae.JET_COLUMNS]) for path in args.sculpting_sets]
    region = np.concatenate([np.full(t.num_rows, name, dtype=object) for t, name in zip(parts, ("sb", "sr"))])
    X = np.concatenate([vae.inputs(t, path) for t, path in zip(parts, args.sculpting_sets)])
    mjj = np.concatenate([t.column("mjj").to_numpy() for t in parts])
    scores = vae.data_scores(models, X, s)
    sculpting = {}
    for method, path in (("vae", args.kl_sculpting_plot), ("vae_latent", args.sculpting_plot)):
        res = plot_sculpting(mjj, scores[method], prm["sr"], prm["sb"], path, region=list(region),
                             title=f"{label_of(method)}, injection {prm['sculpting_injection']}")
        sculpting[method] = sculpting_summary(res)

    # diagnostics: the members of the largest injection
    models, metas = vae.load_ensemble(args.diagnostics_models)
    histories = [m["history"] for m in metas]
    data = vae.read_sets(args.diagnostics_sets, columns=vae.JET_COLUMNS)
    means = [m.encode_numpy(vae.inputs(data, " + ".join(args.diagnostics_sets)))[0] for m in models]
    where = f"injection {prm['diagnostics_injection']}"
    vae.plot_training(histories, args.training_plot, title=f"{title}: {where}" if title else where)
    labels = vae.read_sets(args.diagnostics_sets, columns=["label"]).column("label").to_numpy()  # figure only
    vae.plot_latent_means(means, [h["selected_epoch"] for h in histories], args.latent_plot, labels=labels,
                          title=f"{title}: {where}" if title else where)
    io.write_json({"members": [{"selected_epoch": h["selected_epoch"], "peak_found": h["peak_found"],
                                "epochs_run": h["epochs_run"], "val_kl_kept": h["val_kl"][h["selected_epoch"]]}
                               for h in histories],
                   "sculpting": sculpting, "params": prm}, args.summary)


if __name__ == "__main__":
    cli.run(main)
