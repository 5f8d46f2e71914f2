"""SIC and background-rejection curves with 68% bands over seeds, every method, one injection.

Runs of different studies are never pooled into one band: where the scores
files lie in more than one study's directory (results/{study}/inj{n}/seed{k}/
{method}/scores.parquet), each (study, method) gets its own curve.
"""

import re
from pathlib import Path

from resonant import cli
from resonant.evaluation import plot_curves


def study_of(path: str):
    """The study of a scores file in the workflow's layout, None for any other path."""
    parts = Path(path).parts
    if len(parts) >= 5 and re.fullmatch(r"inj\d+", parts[-4]) and re.fullmatch(r"seed\d+", parts[-3]):
        return parts[-5]
    return None


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--scores", nargs="+", required=True, metavar="METHOD=PATH",
                   help="test-set scores, each prefixed with its method")
    p.add_argument("--sic-plot", required=True)
    p.add_argument("--rejection-plot", required=True)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    items = []
    for item in args.scores:
        method, _, path = item.partition("=")
        if not path:
            p.error(f"--scores entry '{item}' is not METHOD=PATH")
        items.append((study_of(path), method, path))
    several = len({study for study, _, _ in items}) > 1
    by_key: dict = {}
    for study, method, path in items:
        by_key.setdefault((str(study), method) if several else method, []).append(path)
    plot_curves(by_key, args.sic_plot, args.rejection_plot, title=args.params.get("title"))


if __name__ == "__main__":
    cli.run(main)
