"""VAE branch on synthetic jet observables: training, scoring and characterisation-decoder throughput.

* VAE train   -- ``resonant.vae.train_member`` (6 inputs, 3 x 64 SeLU encoder and decoder, latent 1,
                 Adadelta, batch 1000) on ``--events`` training events (+25% validation, whose KL and
                 MSE are computed every epoch): training events per second of one epoch (validation
                 pass included), median over the epochs after the first; the first epoch also traces
                 the training step into a TensorFlow graph, its extra cost is printed separately;
* scoring     -- per-event KL of ``--events`` events with the trained model (the anomaly score);
* decoder     -- ``resonant.vae.fit_mass_decoder`` (the characterisation decoder on the frozen
                 encoder, Adam, batch 1000): training events per second of one epoch.

TensorFlow's thread pools are fixed when its runtime starts, so every ``--threads`` value runs in
its own process. Times are wall clock and CPU time of that process (the machine may be shared:
the load average is printed; with one thread, CPU time is the better figure on a busy machine).
The KL-peak rule is switched off (rise = epochs) so that every run trains ``--epochs`` epochs.

Run: ``.venv/bin/python benchmarks/bench_vae.py [--events N --epochs N --threads 1,2]``
(the defaults take about a minute per thread setting on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np
from benchtools import EpochClock, load
import pyarrow as pa


EPOCH_LINE = re.compile(r" epoch \d+/\d+:")


def worker(args) -> dict:
    from resonant.models.vae import configure

    configure(args.threads)
    from resonant import vae

    clock = EpochClock(EPOCH_LINE.pattern)
    lg = logging.getLogger("resonant.vae")
    lg.setLevel(logging.INFO)
    lg.addHandler(clock)
    lg.propagate = False  # the per-epoch lines (and the expected "no KL peak" warnings) stay quiet

    table = jets(int(args.events * 1.25), seed=0)
    X, Xv = vae.train_val(table)
    s = {"epochs": args.epochs, "rise": args.epochs, "fall": 1, "batch_size": 1000,
         "characterisation": {"epochs": args.epochs, "patience": args.epochs, "batch_size": 1000}}
    out = {"threads": args.threads, "n_train": len(X), "n_val": len(Xv)}

    w0, c0 = time.perf_counter(), time.process_time()
    clock.start()
    model, hist = vae.train_member(X, Xv, s, seed=1)
    e = clock.epochs()
    med = np.median(e[1:], axis=0)
    out["vae"] = {"events_per_s": len(X) / med[0], "epoch_wall": med[0], "epoch_cpu": med[1],
                  "first_epoch_extra_wall": e[0, 0] - med[0], "total_wall": time.perf_counter() - w0,
                  "total_cpu": time.process_time() - c0, "epochs": len(e)}

    model.kl_numpy(X[:1000])  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    model.kl_numpy(X)
    out["score"] = {"events_per_s": len(X) / (time.perf_counter() - w0), "cpu": time.process_time() - c0}

    clock.start()
    vae.fit_mass_decoder(model, table, s, seed=2)
    e = clock.epochs()
    med = np.median(e[1:], axis=0)
    out["decoder"] = {"events_per_s": len(X) / med[0], "epoch_wall": med[0], "epoch_cpu": med[1],
                      "first_epoch_extra_wall": e[0, 0] - med[0]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="training events (+25%% validation)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the VAE and of the decoder")
    ap.add_argument("--threads", default="1,2", help="TensorFlow thread counts to measure (one process each)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from importlib.metadata import version

    print(f"tensorflow {version('tensorflow-cpu')}; keras {version('keras')}; {load()}")
    print(f"VAE 6 -> 3x64 SeLU -> 1 -> 3x64 SeLU -> 6, Adadelta, batch 1000: {args.events} training events "
          f"(+25% validation), {args.epochs} epochs")
    for t in [int(x) for x in args.threads.split(",")]:
        cmd = [sys.executable, __file__, "--worker", "--threads", str(t), "--events", str(args.events),
               "--epochs", str(args.epochs)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ,
                             "TF_CPP_MIN_LOG_LEVEL": "2"})
        r = json.loads(res.stdout.strip().splitlines()[-1])
        v, d, sc = r["vae"], r["decoder"], r["score"]
        print(f"  threads {t}: VAE train {v['events_per_s']:8.0f} events/s per epoch (wall; {v['epoch_wall']:.2f} s"
              f"/epoch, cpu {v['epoch_cpu']:.2f} s; first epoch +{v['first_epoch_extra_wall']:.1f} s tracing)")
        print(f"             scoring   {sc['events_per_s']:8.0f} events/s; "
              f"decoder train {d['events_per_s']:8.0f} events/s per epoch (cpu {d['epoch_cpu']:.2f} s/epoch)")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
