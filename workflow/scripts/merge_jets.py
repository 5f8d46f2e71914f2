"""Merge per-chunk jet tables into the dataset's jets.parquet."""

from resonant import cli, io
from resonant.data.dataset import merge_jets


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--inputs", nargs="+", required=True, help="jet Parquet files")
    p.add_argument("--stats", nargs="*", default=[], help="selection stats JSON of each clustering job")
    p.add_argument("--output", required=True, help="merged jets Parquet")
    p.add_argument("--summary", required=True, help="JSON with generated and selected events per process")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    counts = merge_jets(args.inputs, args.output, metadata=args.params)
    generated: dict[str, int] = {}
    for path in args.stats:
        for proc, n in io.read_json(path).get("n_in_by_process", {}).items():
            generated[proc] = generated.get(proc, 0) + n
    io.write_json({"selected": counts, "generated": generated,
                   "efficiency": {p: counts.get(p, 0) / n for p, n in generated.items() if n}}, args.summary)


if __name__ == "__main__":
    cli.run(main)
