"""Checks of a contrastive encoder on the simulation's test split.

Projections of the latent space per process group; the cross-validated R^2 of
a regressor predicting m_jj from the latent on background (about 0: the
latent does not know the resonant mass, so CATHODE can interpolate it); how
well each group separates from the background in the latent.
"""

import numpy as np

from resonant import cli, io, plots, seeds
from resonant.evaluation import latent_checks
from resonant.features import latent_columns


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--latent", required=True, help="test-split latent Parquet of the encoder")
    p.add_argument("--plot", required=True)
    p.add_argument("--summary", required=True, help="JSON of the checks")
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    t = io.read_table(args.latent, required=["group", "trained", "mjj", "z0"])
    z = np.stack([t.column(n).to_numpy() for n in latent_columns(t)], axis=1)
    group = np.asarray(t.column("group").to_pylist(), dtype=object)
    held_out = {g for g, tr in zip(group, t.column("trained").to_pylist()) if not tr}
    plots.latent_projections(z, group, held_out, args.plot, title=f"encoder {prm['configuration']}")
    res = latent_checks(t, background_group=prm.get("background_group", "qcd_dijet"),
                        seed=seeds.encoder_checks(prm["configuration"]))
    io.write_json({**prm, **res}, args.summary)


if __name__ == "__main__":
    cli.run(main)
