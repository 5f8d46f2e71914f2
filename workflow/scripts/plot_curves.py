"""SIC and background-rejection curves with 68% bands over seeds, every method, one injection."""

from resonant import cli
from resonant.evaluation import plot_curves


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--scores", nargs="+", required=True, metavar="METHOD=PATH",
                   help="test-set scores, each prefixed with its method")
    p.add_argument("--sic-plot", required=True)
    p.add_argument("--rejection-plot", required=True)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    by_method: dict[str, list] = {}
    for item in args.scores:
        method, _, path = item.partition("=")
        if not path:
            p.error(f"--scores entry '{item}' is not METHOD=PATH")
        by_method.setdefault(method, []).append(path)
    plot_curves(by_method, args.sic_plot, args.rejection_plot, title=args.params.get("title"))


if __name__ == "__main__":
    cli.run(main)
