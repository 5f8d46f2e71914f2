"""Score the test set with the rarity of each event's VAE encoding among the data's encodings (vae_latent).

Uses the members the vae_train stage trained (no retraining). Per member, the
encodings (latent mean and log width) of the study set's data (SB + SR: jet
observables only, no labels) define their aggregate posterior, a kernel
density; an event's member score is -log of its encoding's density there,
standardised on the data, and the score is the mean over members
(resonant.vae.EncodingRarity). The test set is read after the densities are
fitted; its labels are only copied into the scores contract.
"""

from resonant import cli, io
from resonant.metrics import score_table


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--models-dir", required=True, help="the models directory of vae_train (member_NN.keras)")
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet of the study set)")
    p.add_argument("--sr", required=True, help="signal-region data (sr.parquet of the same study set)")
    p.add_argument("--test", required=True, help="test.parquet")
    p.add_argument("--scores", required=True, help="scores.parquet (the shared scores contract)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    from resonant.models.vae import configure

    configure(args.threads)  # TensorFlow threads, before the first op
    from resonant import vae

    prm = args.params
    s = vae.latent_settings(prm)
    test_columns = ["event_id", "label", "mjj", *vae.JET_COLUMNS]
    io.read_table(args.test, columns=["event_id"], required=test_columns)  # fail early
    models, _ = vae.load_ensemble(args.models_dir)
    data = vae.read_sets([args.sb, args.sr], columns=vae.JET_COLUMNS)
    rarities = vae.fit_rarity(models, vae.inputs(data, f"{args.sb} + {args.sr}"), s)
    test = io.read_table(args.test, columns=test_columns)
    scores = vae.rarity_scores(models, rarities, vae.inputs(test, args.test), s)
    io.write_table(score_table(test, scores), args.scores, metadata=prm)


if __name__ == "__main__":
    cli.run(main)
