"""Metrics of one method, injection and seed from its test-set scores, each with its test-set bootstrap error.

Beside every value (auc, max_sic, sic_0.2, sic_0.5, rejection_0.5, sic@wp,
eff_s@wp, z@wp, z@max_sic) the stratified bootstrap of the test set gives
``{key}_err`` (standard deviation over the replicas) and ``{key}_p16`` /
``{key}_p84``; ``n_sr_signal`` / ``n_sr_background`` are the SR data's counts
from the study set's summary (they give the no-cut significance downstream).
"""

from resonant import cli, io
from resonant.metrics import N_BOOTSTRAP, evaluate


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--scores", required=True)
    p.add_argument("--summary", help="summary.json of the study set: the SR signal and background counts give "
                   "the significance after each cut")
    p.add_argument("--output", required=True, help="metrics JSON")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    t = io.read_table(args.scores, required=["label", "score"])
    n_sr, counts = None, {}
    if args.summary:
        sr = io.read_json(args.summary)["sr"]
        n_sr = (sr["signal"], sr["background"])
        counts = {"n_sr_signal": int(sr["signal"]), "n_sr_background": int(sr["background"])}
    n_boot = int(args.params.get("n_bootstrap", N_BOOTSTRAP))
    out = evaluate(t.column("label").to_numpy(), t.column("score").to_numpy(),
                   working_points=args.params.get("working_points", ()), n_sr=n_sr, n_boot=n_boot)
    out.update(counts, bootstrap_replicas=n_boot)
    ensembles = [c for c in t.column_names if c.startswith("ensemble_")]
    if ensembles:  # the spread of independently trained ensembles: the training uncertainty
        labels = t.column("label").to_numpy()
        out["max_sic_ensembles"] = [evaluate(labels, t.column(c).to_numpy())["max_sic"] for c in ensembles]
    io.write_json({**args.params, **out}, args.output)


if __name__ == "__main__":
    cli.run(main)
