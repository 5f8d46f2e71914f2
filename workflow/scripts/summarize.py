"""Summary table (median and 68% band over seeds) and max SIC / AUC versus injection, every method.

Per (study,) method and injection: ``{metric}_median``, ``_lo``, ``_hi`` over
seeds and ``{metric}_stat``, the median over seeds of the test-set bootstrap
error; the figures draw the band (spread over seeds) and the bars (bootstrap).
"""

from resonant import cli
from resonant.evaluation import plot_versus_injection, write_summary


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files")
    p.add_argument("--csv", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--max-sic-plot", required=True)
    p.add_argument("--auc-plot", required=True)
    p.add_argument("--working-points-plot", required=True, help="SIC at each working point versus injection")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    df = write_summary(args.metrics, args.csv, args.json)
    plot_versus_injection(df, args.max_sic_plot, args.auc_plot, title=args.params.get("title"),
                          working_points_path=args.working_points_plot)


if __name__ == "__main__":
    cli.run(main)
