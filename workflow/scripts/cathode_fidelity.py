"""How well the background model matches the true SR background: out-of-fold AUC of true vs generated."""

from resonant import cli, io, seeds
from resonant.cathode import fidelity_auc
from resonant.features import high_level


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--true", required=True, help="true SR background (sr_background.parquet)")
    p.add_argument("--background", required=True, help="samples HDF5 with 'features'")
    p.add_argument("--output", required=True, help="JSON with the AUC")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    true = high_level(io.read_table(args.true), prm["features"], args.true)
    gen = io.read_h5(args.background, ["features"])[0]["features"]
    seed = seeds.engine(prm["study"], prm["injection"], prm["seed"], prm["engine"])["fidelity"]
    auc = fidelity_auc(true, gen, prm["classifier"], seed=seed, n_jobs=args.threads)
    io.write_json({"study": prm["study"], "injection": prm["injection"], "seed": prm["seed"], "auc": auc,
                   "n_true": len(true), "n_generated": len(gen)}, args.output)


if __name__ == "__main__":
    cli.run(main)
