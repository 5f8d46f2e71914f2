"""Sample the CATHODE background flow at the SR m_jj values."""

import numpy as np
from resonant import cli, io, seeds
from resonant.models.flow import ConditionalFlow


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--flow", required=True, help="flow checkpoint (.pt)")
    p.add_argument("--mjj", required=True, help="sr_mjj.parquet of the study set")
    p.add_argument("--output", required=True, help="samples HDF5: features (N, d), mjj (N)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    flow = ConditionalFlow.load(args.flow)
    mjj = io.read_table(args.mjj, required=["mjj"]).column("mjj").to_numpy()
    X = flow.sample(mjj, seed=seeds.engine(prm["study"], prm["injection"], prm["seed"], prm["engine"])["sample"])
    io.write_h5(args.output, {"features": X, "mjj": mjj.astype(np.float32)},
                attrs={"model": "ConditionalFlow", "feature_names": prm["features"], "config": flow.config})


if __name__ == "__main__":
    cli.run(main)
