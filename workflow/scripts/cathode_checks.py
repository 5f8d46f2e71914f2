"""Sculpting checks of a CATHODE-type method (classic or latent): generated-vs-true AUC versus injection, m_jj before and after cuts."""

from resonant import cli, io, plots
from resonant.evaluation import fidelity_table, plot_sculpting, sculpting_summary


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--fidelity", nargs="+", required=True, help="fidelity JSON files (all injections and seeds)")
    p.add_argument("--mjj-scores", required=True, help="mjj_scores.parquet of the lowest injection, first seed")
    p.add_argument("--fidelity-plot", required=True)
    p.add_argument("--sculpting-plot", required=True)
    p.add_argument("--summary", required=True,
                   help="JSON: fidelity AUCs and, per cut, the pass-fraction chi2 test of the m_jj shape")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    df = fidelity_table(args.fidelity)
    df["method"] = prm.get("method", "CATHODE")
    plots.versus_injection(df, "auc", "AUC generated vs true SR background", args.fidelity_plot,
                           title=prm.get("title"))
    t = io.read_table(args.mjj_scores, required=["mjj", "score"])
    region = t.column("region").to_pylist() if "region" in t.column_names else None
    res = plot_sculpting(t.column("mjj").to_numpy(), t.column("score").to_numpy(), prm["sr"], prm["sb"],
                         args.sculpting_plot, title=f"{prm.get('method', 'CATHODE')}, injection {prm['injection']}",
                         region=region)
    io.write_json({"fidelity": df.to_dict(orient="records"), "sculpting": sculpting_summary(res)}, args.summary)


if __name__ == "__main__":
    cli.run(main)
