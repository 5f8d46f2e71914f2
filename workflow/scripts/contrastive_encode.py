"""Map a jets table (the dataset, with constituents) into the latent space of a contrastive encoder.

Streams row groups: constant memory whatever the size of the dataset.
"""

import itertools
import logging

import pyarrow as pa

from resonant import cli, io
from resonant.contrastive import encode_table, load_encoder
from resonant.errors import InputError

log = logging.getLogger("contrastive_encode")


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--encoder", required=True, help="encoder (.pt)")
    p.add_argument("--input", required=True, help="jets Parquet with constituents")
    p.add_argument("--output", required=True, help="latent Parquet: event_id, process, label, mjj, z0, z1, ...")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=50_000, help="events per chunk")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    model, scaler, meta = load_encoder(args.encoder)
    n_const = int(meta["settings"]["n_constituents"])
    pf = io.open_parquet(args.input)
    n = pf.metadata.num_rows
    if n == 0:
        raise InputError(args.input, "no events", "check the selection and the generated sizes")
    chunks = (encode_table(model, scaler, pa.Table.from_batches([b]), n_const, source=args.input)
              for b in pf.iter_batches(batch_size=args.batch))
    first = next(chunks)
    done = 0
    with io.parquet_writer(args.output, first.schema, metadata=args.params) as writer:
        for lat in itertools.chain([first], chunks):
            writer.write_table(lat)
            done += len(lat)
            log.info("encoded %d / %d events", done, n)


if __name__ == "__main__":
    cli.run(main)
