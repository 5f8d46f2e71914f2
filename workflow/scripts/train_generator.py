"""Train a point-cloud generator of the background on the sideband data of a study set.

``--model jets``: both jets' (pt, eta, phi, m, n) given m_jj; ``--model particles``:
each jet's constituents given the jet and m_jj. The generator (``params.generator``)
is flow matching (CNFs; PyTorch Lightning, DDP workers when started by srun) or
diffusion (score models; Keras 3 on TensorFlow, the engine of ``params.engine``).
The study set's own train/validation split is used (early stopping on the
validation part). Only the first worker writes. An interrupted training resumes
from the checkpoints in ``<output>.work``.
"""

import shutil
from pathlib import Path

from resonant import cli, generative, io, seeds
from resonant.pointcloud import from_table
from resonant.regions import select_split

PARTS = {"jets": "jet_model", "particles": "particle_model"}


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", choices=sorted(PARTS), required=True)
    p.add_argument("--sb", required=True, help="sideband data (sb.parquet, with constituents)")
    p.add_argument("--output", required=True, help="model (its .json beside it)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    prm = args.params
    backend = generative.backend(prm["generator"], threads=args.threads)
    sb = io.read_table(args.sb, required=["mjj", "split", "j1_constituents"])
    train, val = (from_table(select_split(sb, s), prm["max_particles"], source=args.sb) for s in ("train", "val"))
    part = PARTS[args.model]
    seed = seeds.generator(prm["study"], prm["injection"], prm["seed"], prm["generator"])[part]
    workdir = Path(args.output).with_suffix(".work")  # checkpoints, shared by the workers
    model, writes = backend.train(part, train, val, prm, seed, workdir)
    if writes:
        model.save(args.output)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    cli.run(main)
