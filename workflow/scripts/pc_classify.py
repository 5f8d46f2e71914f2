"""Point-cloud classifier ensemble: SR data (label 1) vs background (label 0), scored on the test set.

The background is a generator's SR samples (generated-background HDF5) or,
for the point-cloud idealised detector, the true SR background (Parquet).
"""

from pathlib import Path

from resonant import cli, io, seeds
from resonant.metrics import score_table
from resonant.pc_classify import ensemble_scores, train_ensemble
from resonant.pointcloud import from_table, read_generated


def read_cloud(path, max_particles: int):
    """Point clouds of a study-set Parquet file or of a generated-background HDF5."""
    if Path(path).suffix == ".h5":
        cloud = read_generated(path)
        if cloud.max_particles != max_particles:
            from resonant.errors import InputError

            raise InputError(path, f"{cloud.max_particles} particle slots per jet, the classifier expects "
                             f"{max_particles}", "resample with the current pointcloud.max_particles",
                             field="particles")
        return cloud
    return from_table(io.read_table(path), max_particles, source=path)


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--sr", required=True, help="SR data (sr.parquet)")
    p.add_argument("--background", required=True, help="samples.h5 of a generator, or sr_background.parquet")
    p.add_argument("--test", required=True, help="test.parquet")
    p.add_argument("--models-dir", required=True)
    p.add_argument("--scores", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    n = prm["max_particles"]
    data, background = read_cloud(args.sr, n), read_cloud(args.background, n)
    seed = seeds.pc_classifier(prm["study"], prm["injection"], prm["seed"], prm["method"])
    members = train_ensemble(data, background, prm["classifier"], seed=seed)
    test_table = io.read_table(args.test)
    scores = ensemble_scores([m for m, _ in members], from_table(test_table, n, source=args.test))
    for k, (model, _) in enumerate(members):
        model.save(Path(args.models_dir) / f"classifier-{k}.pt")
    io.write_table(score_table(test_table, list(scores.T)), args.scores, metadata=prm)


if __name__ == "__main__":
    cli.run(main)
