"""Build the study sets (SB, SR, idealised background, signal reserve, test, SR m_jj) of one injection and seed."""

from pathlib import Path

from resonant import cli, io
from resonant.regions import STUDY_SETS, StudySpec, Windows, build_study_sets, check_disjoint


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--jets", required=True, help="the dataset's jets.parquet")
    p.add_argument("--outdir", required=True, help="directory for the study-set files")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    spec = StudySpec(
        background=tuple(prm["background"]), signal=prm["signal"], injection=int(prm["injection"]),
        seed=int(prm["seed"]), windows=Windows(tuple(prm["sr"]), tuple(prm["sb"])),
        split_seed=prm["split_seed"], val_fraction=prm["val_fraction"],
        signal_test_fraction=prm["signal_test_fraction"], sr_background=prm["sr_background"],
        kde_bandwidth=prm["mjj_kde"]["bandwidth"], oversampling=prm["mjj_kde"]["oversampling"],
    )
    jets = io.read_table(args.jets, required=["event_id", "process", "label", "mjj"])
    sets, summary = build_study_sets(jets, spec, source=args.jets)
    check_disjoint(sets, source=args.jets)  # before anything is written
    out = Path(args.outdir)
    for name in (*STUDY_SETS, "sr_mjj"):
        io.write_table(sets[name], out / f"{name}.parquet", metadata=prm)
    io.write_json(summary, out / "summary.json")


if __name__ == "__main__":
    cli.run(main)
