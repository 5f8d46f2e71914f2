"""Fidelity of a generator of whole events: generated vs true background, in the SR and the SB.

The point-cloud classifier is trained to tell generated from true background
(half of each; its AUC on the other half: 0.5 for a perfect generator), in the
SR of a study set without signal (true: the idealised background) and in the
SB (true: the validation background, generated at its m_jj). Draws the jet and
particle features of both with ratio panels.
"""

from resonant import cli, io, plots, seeds
from resonant.pc_classify import fidelity_auc
from resonant.pointcloud import from_table, jet_panels, particle_panels, read_generated
from resonant.regions import validation_background


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--samples", required=True, help="the generator's SR samples (HDF5)")
    p.add_argument("--samples-sb", required=True, help="the generator's SB samples (HDF5)")
    p.add_argument("--sr-background", required=True, help="true SR background (sr_background.parquet)")
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet; its validation background is used)")
    p.add_argument("--summary", required=True)
    p.add_argument("--jets-plot", required=True)
    p.add_argument("--particles-plot", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    n = prm["max_particles"]
    true = {"sr": from_table(io.read_table(args.sr_background), n, source=args.sr_background),
            "sb": from_table(validation_background(io.read_table(args.sb)), n, source=args.sb)}
    generated = {"sr": read_generated(args.samples), "sb": read_generated(args.samples_sb)}
    settings = {**prm["classifier"], **prm["fidelity"]}
    summary = {"generator": prm["generator"], "injection": prm["injection"], "seed": prm["seed"]}
    jets, particles = [], []
    for region in ("sr", "sb"):
        seed = seeds.pc_fidelity(prm["study"], prm["injection"], prm["seed"], prm["generator"], region)
        summary[region] = fidelity_auc(generated[region], true[region], settings, seed=seed)
        samples = {"generated": generated[region], "true": true[region]}
        jets += jet_panels(samples, "true", region.upper())
        particles += particle_panels(samples, "true", region.upper())
    title = (f"{prm['title']} - {prm['method']}: generated vs true AUC {summary['sr']['auc']:.3f} (SR), "
             f"{summary['sb']['auc']:.3f} (SB)")
    plots.feature_grid(jets, args.jets_plot, ratio_to="true", ncols=5, title=title)
    plots.feature_grid(particles, args.particles_plot, ratio_to="true", ncols=4, title=title)
    io.write_json(summary, args.summary)


if __name__ == "__main__":
    cli.run(main)
