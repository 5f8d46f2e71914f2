"""Metrics of one method, injection and seed from its test-set scores."""

from resonant import cli, io
from resonant.metrics import evaluate


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--scores", required=True)
    p.add_argument("--output", required=True, help="metrics JSON")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    t = io.read_table(args.scores, required=["label", "score"])
    out = evaluate(t.column("label").to_numpy(), t.column("score").to_numpy())
    io.write_json({**args.params, **out}, args.output)


if __name__ == "__main__":
    cli.run(main)
