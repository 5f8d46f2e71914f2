"""Combine the test-set scores of the contrastive branch's members (encoder x flow x classifier)."""

from resonant import cli, io, seeds
from resonant.cathode import combine_member_scores


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--members", nargs="+", required=True, help="scores.parquet of each encoder x flow member")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    tables = [io.read_table(m) for m in args.members]
    seed = seeds.combine(prm["study"], prm["injection"], prm["seed"], prm["configuration"])
    out = combine_member_scores(tables, prm["ensemble_size"], seed=seed, sources=args.members)
    io.write_table(out, args.output, metadata=args.params)


if __name__ == "__main__":
    cli.run(main)
