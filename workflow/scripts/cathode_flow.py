"""Train the CATHODE background flow p(features | m_jj) on sideband data."""

from pathlib import Path

from resonant import cli, io, seeds
from resonant.features import high_level
from resonant.models.flow import ConditionalFlow
from resonant.regions import select_split


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet of a study set)")
    p.add_argument("--output", required=True, help="flow checkpoint (.pt; its .json beside it)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    sb = io.read_table(args.sb, required=["mjj", "split"])
    tr, va = select_split(sb, "train"), select_split(sb, "val")
    X, Xv = (high_level(t, prm["features"], source=args.sb) for t in (tr, va))
    seed = seeds.engine(prm["study"], prm["injection"], prm["seed"], prm["engine"])["flow"]
    flow = ConditionalFlow.from_settings(X.shape[1], prm["flow"], seed=seed)
    flow.fit(X, tr.column("mjj").to_numpy(), Xv, va.column("mjj").to_numpy(), name="cathode flow")
    flow.save(Path(args.output))


if __name__ == "__main__":
    cli.run(main)
