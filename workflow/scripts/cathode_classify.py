"""Weakly supervised k-fold classifiers: SR data vs background samples.

Writes the test-set scores, the m_jj of all data with their scores (SR data
out-of-fold, sideband data each by one fold model, so
that both regions' scores have the same spread) for the sculpting
check, and the classifiers' training history.
"""

import numpy as np
import pyarrow as pa

from resonant import cli, io, seeds
from resonant.cathode import kfold_classify
from resonant.features import high_level
from resonant.references import score_table


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--sr", required=True, help="SR data (sr.parquet; train and val are both used, k-fold)")
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet), scored for the sculpting check")
    p.add_argument("--background", required=True, help="samples HDF5 with 'features'")
    p.add_argument("--test", required=True, help="test.parquet")
    p.add_argument("--scores", required=True)
    p.add_argument("--mjj-scores", required=True, help="Parquet: event_id, mjj, region, score of all data")
    p.add_argument("--history", required=True, help="JSON of the classifiers' training")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    feats = prm["features"]
    sr, sb, test = io.read_table(args.sr), io.read_table(args.sb), io.read_table(args.test)
    arrays, attrs = io.read_h5(args.background, ["features"])
    if attrs.get("feature_names") != feats:
        raise ValueError(f"{args.background}: features {attrs.get('feature_names')} != {feats}")
    seed = seeds.engine(prm["study"], prm["injection"], prm["seed"], prm["engine"])["classifier"]
    out = kfold_classify(high_level(sr, feats, args.sr), arrays["features"],
                         {"test": high_level(test, feats, args.test), "sb": high_level(sb, feats, args.sb)},
                         prm["classifier"], seed=seed, n_jobs=args.threads)
    io.write_table(score_table(test, list(out["scores"]["test"])), args.scores, metadata=prm)
    mjj = pa.table({
        "event_id": pa.concat_arrays([sr.column("event_id").combine_chunks(), sb.column("event_id").combine_chunks()]),
        "mjj": np.r_[sr.column("mjj").to_numpy(), sb.column("mjj").to_numpy()].astype(np.float32),
        "region": pa.array(["sr"] * len(sr) + ["sb"] * len(sb)),
        "score": np.r_[out["data_oof"].mean(0), out["one_fold"]["sb"].mean(0)].astype(np.float32),
    })
    io.write_table(mjj, args.mjj_scores, metadata=prm)
    io.write_json({"params": prm, "history": out["history"]}, args.history)


if __name__ == "__main__":
    cli.run(main)
