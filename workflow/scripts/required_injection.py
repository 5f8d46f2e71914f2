"""Injected signal needed for 5 sigma after the selection, per signal model (study) and method.

For every run the significance after a cut is S eps_S / sqrt(B eps_B) in the
SR data (S, B: signal and background events there; eps from the test set);
the needed injection is where it first reaches the target along the scanned
injections (median and 68% band over the seeds of each study; studies are
never pooled), for the max-SIC cut and for each working point. Each study also
gets a baseline row, method ``no_cut`` and cut ``none``: the injection for
S/sqrt(B) = target in the SR without any cut, 5 sqrt(B_SR) / f with f the
fraction of the injected signal in the SR (columns sr_signal_fraction,
n_sr_background); every figure draws it per study.
"""

import pandas as pd

from resonant import cli, io, plots
from resonant.evaluation import required_injection_table


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files of every study")
    p.add_argument("--csv", required=True)
    p.add_argument("--plots", nargs="+", required=True, help="one figure per cut, in the order of params 'cuts'")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    df = required_injection_table(args.metrics, target=prm["target_sigma"])
    df["signal"] = df["study"].map(prm["signals"])
    df = df.sort_values(["study", "method", "cut"], kind="stable")
    with io.atomic_path(args.csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")
    if len(prm["cuts"]) != len(args.plots):
        raise ValueError(f"{len(args.plots)} plots for cuts {prm['cuts']}")
    for cut, path in zip(prm["cuts"], args.plots):
        plots.required_injection(df if len(df) else pd.DataFrame(columns=df.columns), path, cut,
                                 target=prm["target_sigma"])


if __name__ == "__main__":
    cli.run(main)
