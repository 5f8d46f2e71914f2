"""Train the supervised-contrastive encoder of one configuration on the simulation.

Splits every simulated process 60/20/20 (by event_id, the same for every
configuration), trains on the processes the configuration keeps (labels:
their process groups), and writes the encoder and the latent of the test
split of every process (held-out ones included). Launched by srun on SLURM,
each task is a DDP worker; only rank 0 writes.
"""

import numpy as np
import pyarrow as pa

from resonant import cli, io
from resonant.contrastive import encode, event_tokens, save_encoder, train_encoder
from resonant.errors import InputError
from resonant.features import latent_names
from resonant.regions import hash_split
from resonant.train.distributed import cluster_from_env, is_global_zero


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
    sim = io.read_table(args.simulation, required=["event_id", "process", "mjj"])
    process = np.asarray(sim.column("process").to_pylist(), dtype=object)
    missing = sorted(set(prm["train_processes"]) - set(process))
    if missing:
        raise InputError(args.simulation, f"simulated process(es) {missing} have no events after the selection",
                         "generate more events of them", field="process")
    part = hash_split(sim.column("event_id").to_numpy(), prm["split"])
    groups = sorted(set(prm["train_processes"].values()))
    group_of = np.array([groups.index(prm["train_processes"][p]) if p in prm["train_processes"] else -1
                         for p in process])
    sets = {}
    for name in ("train", "val"):
        idx = np.flatnonzero((part == name) & (group_of >= 0))
        tokens, mask = event_tokens(sim.take(pa.array(idx)), prm["n_constituents"], source=args.simulation)
        sets[name] = (tokens, mask, group_of[idx])
    model, scaler, history = train_encoder(sets["train"], sets["val"], prm["encoder"], seed=int(prm["seed"]),
                                           trainer_kwargs=cluster_from_env())
    if not is_global_zero():
        return
    save_encoder(args.output, model, scaler, {**prm["encoder"], "n_constituents": prm["n_constituents"]},
                 history, groups, meta={"configuration": prm["configuration"],
                                        "train_processes": prm["train_processes"]})
    test = sim.take(pa.array(np.flatnonzero(part == "test")))
    tokens, mask = event_tokens(test, prm["n_constituents"], source=args.simulation)
    z = encode(model, scaler, tokens, mask)
    procs = test.column("process").to_pylist()
    cols = {"event_id": test.column("event_id"), "process": test.column("process"), "label": test.column("label"),
            "group": pa.array([prm["groups"].get(p, p) for p in procs]),
            "trained": pa.array([p in prm["train_processes"] for p in procs]), "mjj": test.column("mjj")}
    cols.update({n: pa.array(z[:, i]) for i, n in enumerate(latent_names(z.shape[1]))})
    io.write_table(pa.table(cols), args.test_latent, metadata=prm)


if __name__ == "__main__":
    cli.run(main)
