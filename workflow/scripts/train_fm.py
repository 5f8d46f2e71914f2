"""Train a flow-matching model of the background on the sideband data of a study set.

``--model jets``: the CNF of both jets' (pt, eta, phi, m, n) given m_jj.
``--model particles``: the EPiC CNF of each jet's constituents given the jet and m_jj.
The study set's own train/validation split is used (early stopping on the
validation part). Started by srun on SLURM, each task is a DDP worker; only
the first writes. An interrupted training resumes from the checkpoints in
``<output>.work``.
"""

import shutil
from pathlib import Path

from resonant import cli, io
from resonant.flow_matching import train_jet_model, train_particle_model
from resonant.pointcloud import from_table
from resonant.regions import select_split
from resonant.train.distributed import is_global_zero

MODEL_SEED_OFFSET = {"jets": 1, "particles": 2}


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", choices=sorted(MODEL_SEED_OFFSET), required=True)
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet, with constituents)")
    p.add_argument("--output", required=True, help="model (.pt; its .json beside it)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    sb = io.read_table(args.sb, required=["mjj", "split", "j1_constituents"])
    train, val = (from_table(select_split(sb, s), prm["max_particles"], source=args.sb) for s in ("train", "val"))
    seed = 1000 * int(prm["seed"]) + MODEL_SEED_OFFSET[args.model]
    workdir = Path(args.output).with_suffix(".work")  # checkpoints, shared by the DDP workers
    if args.model == "jets":
        model, _ = train_jet_model(train, val, prm["jet_model"], seed=seed, workdir=workdir)
    else:
        model, _ = train_particle_model(train, val, prm["particle_model"], seed=seed, workdir=workdir)
    if is_global_zero():
        model.save(args.output)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    cli.run(main)
