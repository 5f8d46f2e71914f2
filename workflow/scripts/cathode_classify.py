"""Weakly supervised k-fold BDTs: SR data vs background samples; scores of the test set."""

import numpy as np

from resonant import cli, io
from resonant.cathode import kfold_classify
from resonant.features import high_level
from resonant.references import score_table


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--sr", required=True, help="SR data (sr.parquet; train and val are both used, k-fold)")
    p.add_argument("--background", required=True, help="samples HDF5 with 'features'")
    p.add_argument("--test", required=True, help="test.parquet")
    p.add_argument("--scores", required=True)
    p.add_argument("--history", required=True, help="JSON of the classifiers' training")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    sr = io.read_table(args.sr)
    test = io.read_table(args.test)
    arrays, attrs = io.read_h5(args.background, ["features"])
    if attrs.get("feature_names") != prm["features"]:
        raise ValueError(f"{args.background}: features {attrs.get('feature_names')} != {prm['features']}")
    out = kfold_classify(high_level(sr, prm["features"], args.sr), arrays["features"],
                         high_level(test, prm["features"], args.test), prm["classifier"], seed=int(prm["seed"]))
    io.write_table(score_table(test, list(out["test"])), args.scores, metadata=prm)
    io.write_json({"params": prm, "history": out["history"],
                   "data_oof_mean": float(np.mean(out["data_oof"]))}, args.history)


if __name__ == "__main__":
    cli.run(main)
