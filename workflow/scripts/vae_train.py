"""Train the VAE ensemble on the whole data set (SB + SR) and score the test set with the mean per-event KL.

Training reads only the jet observables, m_jj and the train/val split: the
truth labels of the data are never read. The test set is read after training.
"""

from pathlib import Path

from resonant import cli, io, seeds
from resonant.metrics import score_table


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet of a study set)")
    p.add_argument("--sr", required=True, help="signal-region data (sr.parquet of the same study set)")
    p.add_argument("--test", required=True, help="test.parquet")
    p.add_argument("--models-dir", required=True, help="directory for member_NN.keras (+ .json beside each)")
    p.add_argument("--scores", required=True, help="scores.parquet (the shared scores contract)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    from resonant.models.vae import configure

    configure(args.threads)  # TensorFlow threads, before the first op
    from resonant import vae

    prm = args.params
    s = vae.settings(prm)
    test_columns = ["event_id", "label", "mjj", *vae.JET_COLUMNS]
    io.read_table(args.test, columns=["event_id"], required=test_columns)  # fail early, before training
    data = vae.read_sets([args.sb, args.sr])
    seed = seeds.vae(prm["study"], prm["injection"], prm["seed"])
    members = vae.train_ensemble(data, s, seed=seed, source=f"{args.sb} + {args.sr}")
    out = Path(args.models_dir)
    for k, (model, history, seed) in enumerate(members):
        vae.save_member(model, history, out / f"member_{k:02d}.keras",
                        meta={"member": k, "seed": seed, "settings": s, "params": prm})
    test = io.read_table(args.test, columns=test_columns)
    scores = vae.kl_scores([m for m, _, _ in members], vae.inputs(test, args.test))
    io.write_table(score_table(test, scores), args.scores, metadata=prm)


if __name__ == "__main__":
    cli.run(main)
