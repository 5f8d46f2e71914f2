"""Sample a point-cloud generator's background: jets at the given m_jj, then each jet's particles.

``--region sr``: m_jj are the SR KDE draws (sr_mjj.parquet), as many as
``sampling.oversampling`` x the SR data; ``--region sb``: the m_jj of the
sideband validation background (sb.parquet), the reference of the SB fidelity
check. Streams batches into the generated-background HDF5.
"""

import math

from resonant import cli, generative, io, seeds
from resonant.pointcloud import GeneratedWriter
from resonant.regions import validation_background


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--jet-model", required=True)
    p.add_argument("--particle-model", required=True)
    p.add_argument("--mjj", required=True, help="sr_mjj.parquet (SR) or sb.parquet (SB)")
    p.add_argument("--region", choices=sorted(seeds.SAMPLING_REGIONS), required=True)
    p.add_argument("--output", required=True, help="generated-background HDF5")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    backend = generative.backend(prm["generator"], threads=args.threads)
    table = io.read_table(args.mjj, required=["mjj"])
    if args.region == "sb":
        table = validation_background(table)
    mjj = table.column("mjj").to_numpy()
    if args.region == "sr":  # the KDE draws are kde_oversampling x the SR data: keep oversampling x
        mjj = mjj[:math.ceil(len(mjj) * prm["sampling"]["oversampling"] / prm["kde_oversampling"])]
    jet_cls, particle_cls = backend.MODELS
    jets, particles = jet_cls.load(args.jet_model), particle_cls.load(args.particle_model)
    s = prm["sampling"]
    attrs = {"generator": prm["generator"], "region": args.region, "params": prm}
    seed = seeds.generator(prm["study"], prm["injection"], prm["seed"], prm["generator"])[f"sample_{args.region}"]
    with GeneratedWriter(args.output, prm["max_particles"], attrs=attrs) as writer:
        backend.generate(jets, particles, mjj, prm["max_particles"], steps=s["steps"], batch_size=s["batch_size"],
                         seed=seed, writer=writer)


if __name__ == "__main__":
    cli.run(main)
