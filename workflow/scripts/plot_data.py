"""Figures of the dataset: m_jj with the SR, jet masses and tau21 per process."""

from resonant import cli, io
from resonant.evaluation import plot_dataset


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--jets", required=True)
    p.add_argument("--outdir", required=True)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cols = ["process", "mjj"] + [f"{j}_{f}" for j in ("j1", "j2") for f in ("m", "tau1", "tau2", "tau3")]
    jets = io.read_table(args.jets, columns=cols, required=cols)
    plot_dataset(jets, args.outdir, args.params["sr"], args.params["sb"])


if __name__ == "__main__":
    cli.run(main)
