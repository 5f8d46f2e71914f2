"""The turn-on of the generator cut from a QCD sample generated with a lower cut."""

import numpy as np
import pyarrow as pa

from resonant import cli, io
from resonant.evaluation import plot_turn_on, turn_on


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--raw", nargs="+", required=True, help="raw chunks of the low-cut sample (with pthat)")
    p.add_argument("--jets", nargs="+", required=True, help="jet chunks of the same sample")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    raw = pa.concat_tables([io.read_table(f, columns=["event_id", "pthat"], required=["event_id", "pthat"])
                            for f in args.raw])
    jets = pa.concat_tables([io.read_table(f, columns=["event_id", "mjj", "j1_pt"]) for f in args.jets])
    pthat_of = dict(zip(raw.column("event_id").to_numpy(), raw.column("pthat").to_numpy()))
    pthat = np.array([pthat_of[e] for e in jets.column("event_id").to_numpy()])
    sb = prm["sb"]
    curves = turn_on(pthat, jets.column("mjj").to_numpy(), jets.column("j1_pt").to_numpy(),
                     prm["nominal_pthat_min"], np.linspace(sb[0] - 300, sb[1], 19), np.linspace(1100, 2500, 15))
    plot_turn_on(curves, prm["nominal_pthat_min"], prm["sample_pthat_min"], prm["sr"], sb, args.output)


if __name__ == "__main__":
    cli.run(main)
