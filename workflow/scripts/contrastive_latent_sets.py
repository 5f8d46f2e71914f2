"""The study set in an encoder's latent space: each table's events with their latent coordinates."""

from resonant import cli, io
from resonant.features import LATENT_KEEP, attach_latent, latent_columns


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--latent", required=True, help="latent Parquet of the whole dataset (one encoder)")
    p.add_argument("--inputs", nargs="+", required=True, help="study-set tables")
    p.add_argument("--outputs", nargs="+", required=True, help="latent study-set tables, one per input")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    if len(args.inputs) != len(args.outputs):
        p.error("--inputs and --outputs must pair up")
    latent = io.read_table(args.latent, required=["event_id", "z0"])
    latent = latent.select(["event_id", *latent_columns(latent)])
    for src, dst in zip(args.inputs, args.outputs):
        names = io.open_parquet(src).schema_arrow.names
        t = io.read_table(src, columns=[c for c in LATENT_KEEP if c in names], required=["event_id", "mjj"])
        io.write_table(attach_latent(t, latent, source=src), dst, metadata={**args.params, "source": src})


if __name__ == "__main__":
    cli.run(main)
