"""Train a reference classifier (supervised or idealised) on a study set and score the test set."""

from pathlib import Path

from resonant import cli, io, seeds
from resonant.features import high_level
from resonant.references import METHODS, score_table, train_ensemble


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--study-dir", required=True, help="directory with the study-set Parquet files")
    p.add_argument("--models-dir", required=True, help="directory for one xgboost JSON per ensemble member")
    p.add_argument("--scores", required=True, help="test-set scores Parquet")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    d = Path(args.study_dir)
    sets = {n: io.read_table(d / f"{n}.parquet") for n in ("sr", "sr_background", "sr_signal", "test")}
    seed = seeds.reference(prm["study"], prm["injection"], prm["seed"], args.method)
    models = train_ensemble(args.method, sets, prm, seed=seed, n_jobs=args.threads)
    X_test = high_level(sets["test"], prm["features"], source=d / "test.parquet")
    scores = [m.predict(X_test) for m in models]
    for k, m in enumerate(models):
        m.save(Path(args.models_dir) / f"model-{k}{m.file_suffix}")
    io.write_table(score_table(sets["test"], scores), args.scores, metadata={"method": args.method, **prm})


if __name__ == "__main__":
    cli.run(main)
