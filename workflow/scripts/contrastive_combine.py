"""Combine the test-set scores of the contrastive branch's members (encoder x flow x classifier)."""

from resonant import cli, io
from resonant.cathode import combine_member_scores


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--members", nargs="+", required=True, help="scores.parquet of each encoder x flow member")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    tables = [io.read_table(m) for m in args.members]
    out = combine_member_scores(tables, args.params["ensemble_size"], seed=int(args.params["seed"]),
                                sources=args.members)
    io.write_table(out, args.output, metadata=args.params)


if __name__ == "__main__":
    cli.run(main)
