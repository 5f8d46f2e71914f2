"""Map study-set tables into the latent space of a trained contrastive encoder."""

import pyarrow as pa

from resonant import cli, io
from resonant.contrastive import encode, event_tokens, load_encoder
from resonant.features import latent_names

KEEP = ("event_id", "process", "label", "mjj", "split")


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--encoder", required=True, help="encoder (.pt)")
    p.add_argument("--inputs", nargs="+", required=True, help="study-set tables (jets with constituents)")
    p.add_argument("--outputs", nargs="+", required=True, help="latent tables, one per input")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    if len(args.inputs) != len(args.outputs):
        p.error("--inputs and --outputs must pair up")
    model, scaler, meta = load_encoder(args.encoder)
    n_const = meta["settings"]["n_constituents"]
    for src, dst in zip(args.inputs, args.outputs):
        t = io.read_table(src)
        tokens, mask = event_tokens(t, n_const, source=src)
        z = encode(model, scaler, tokens, mask)
        cols = {k: t.column(k) for k in KEEP if k in t.column_names}
        cols.update({n: pa.array(z[:, i]) for i, n in enumerate(latent_names(z.shape[1]))})
        io.write_table(pa.table(cols), dst, metadata={**args.params, "source": src})


if __name__ == "__main__":
    cli.run(main)
