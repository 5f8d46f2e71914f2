"""Train the supervised-contrastive encoder of one configuration on the simulation.

Splits every simulated process 60/20/20 (by event_id, the same for every
configuration), trains on the processes the configuration keeps (labels:
their process groups), and writes the encoder and the latent of the test
split of every process (held-out ones included). Started by srun on SLURM,
each task is a DDP worker; only the first writes.
"""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from resonant import cli, io, seeds
from resonant.contrastive import TokenScaler, encode_table, event_tokens, save_encoder, train_encoder
from resonant.errors import InputError
from resonant.regions import hash_split
from resonant.train.distributed import is_global_zero


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--simulation", required=True, help="simulation.parquet (jets with constituents)")
    p.add_argument("--output", required=True, help="encoder (.pt; its .json beside it)")
    p.add_argument("--test-latent", required=True, help="Parquet: latent of the simulation's test split")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.set_threads(args.threads)
    prm = args.params
    n_const = int(prm["n_constituents"])
    sim = io.read_table(args.simulation, required=["event_id", "process", "mjj", "j1_constituents"])
    process = np.asarray(sim.column("process").to_pylist(), dtype=object)
    train_procs = prm["train_processes"]
    missing = sorted(set(train_procs) - set(process))
    if missing:
        raise InputError(args.simulation, f"simulated process(es) {missing} have no events after the selection",
                         "generate more events of them (simulation.processes)", field="process")
    part = hash_split(sim.column("event_id").to_numpy(), prm["split"])
    groups = sorted(set(train_procs.values()))
    group_of = np.array([groups.index(train_procs[p]) if p in train_procs else -1 for p in process])
    arrays = {}
    for name in ("train", "val"):
        idx = np.flatnonzero((part == name) & (group_of >= 0))
        tokens, mask = event_tokens(sim.take(pa.array(idx)), n_const, source=args.simulation)
        arrays[name] = (tokens, mask, group_of[idx])
    scaler = TokenScaler().fit(arrays["train"][0], arrays["train"][1])
    scaled = {k: (scaler.transform(t, m), m, g) for k, (t, m, g) in arrays.items()}
    workdir = Path(args.output).with_suffix(".work")  # shared by the DDP workers (checkpoints)
    model, history = train_encoder(scaled["train"], scaled["val"], prm["encoder"],
                                   seed=seeds.encoder(prm["configuration"], prm["index"]),
                                   workdir=workdir)
    if not is_global_zero():
        return
    history.update(configuration=prm["configuration"], train_processes=train_procs,
                   n_train=len(arrays["train"][2]), n_val=len(arrays["val"][2]))
    save_encoder(args.output, model, scaler, {**prm["encoder"], "n_constituents": n_const}, history, groups)
    shutil.rmtree(workdir, ignore_errors=True)
    test = sim.take(pa.array(np.flatnonzero(part == "test")))
    lat = encode_table(model, scaler, test, n_const, source=args.simulation)
    procs = test.column("process").to_pylist()
    lat = lat.append_column("group", pa.array([prm["groups"].get(p, p) for p in procs]))
    lat = lat.append_column("trained", pa.array([p in train_procs for p in procs]))
    io.write_table(lat, args.test_latent, metadata=prm)


if __name__ == "__main__":
    cli.run(main)
