"""CATHODE building blocks on synthetic 4-feature events: flow training and sampling, BDT and MLP fits.

* flow train  -- ``ConditionalFlow`` (maf, 6 transforms, 64 hidden x 2, batch 256) on ``--events``
                 training events (+20% validation) conditioned on m_jj: training samples per second
                 of one epoch (validation pass included), for each ``--threads`` setting;
* flow sample -- ``sample`` of ``--samples`` m_jj values with the trained flow (3 best epochs);
* BDT fit     -- ``resonant.models.bdt.BDT`` (defaults: depth 4, lr 0.1, <= 300 trees, early stopping
                 20) on ``--fit-events`` events (+25% validation): seconds per 100k training events
                 and per tree, for xgboost n_jobs 1 and 2 (the faster of two fits; torch's thread
                 count is raised first, as ``torch.set_num_threads(1)`` also caps xgboost's threads);
* MLP fit     -- ``MLPClassifier`` (classic 3x64, batch 128) on the same events: seconds per 100k
                 training events per epoch (validation pass included).

Times are wall clock and CPU time of this process (the machine may be shared: the load
average is printed; with one thread, CPU time is the better figure on a busy machine).
Epoch times come from the training loop's per-epoch log records; the figure is the median epoch.
Each model is warmed up by a small fit first (lazy imports and first-call costs take ~1.5 s).

With another job busy on one of two cores, libgomp's spin-waiting makes 2-thread runs of
xgboost up to ~15x slower than 1 thread (torch suffers less); ``OMP_WAIT_POLICY=PASSIVE``
removes that cliff. Compare both settings on a shared machine.

Run: ``[OMP_WAIT_POLICY=PASSIVE] .venv/bin/python benchmarks/bench_cathode.py [--events N --samples N --fit-events N]``
(the defaults take about 1-2 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
from benchtools import EpochClock, load
import torch

from resonant.models.bdt import BDT
from resonant.models.flow import ConditionalFlow
from resonant.models.mlp import MLPClassifier

FLOW = {"kind": "maf", "transforms": 6, "hidden": 64, "layers": 2, "lr": 1e-3, "batch_size": 256, "epochs": 3,
        "patience": 10, "n_best": 3}


def background(n, rng):
    """Four features, two of which shift with m_jj (as the jet masses do)."""
    m = 2300 + rng.exponential(700, n)
    x = np.c_[rng.gamma(4, 15, n) * (m / 3500), np.abs(rng.normal(0, 60, n)) + 0.02 * (m - 2300),
              rng.beta(6, 3, n), rng.beta(6, 3, n)]
    return x, m


def labelled(n, rng, frac_sig=0.5):
    """A classification set: background (0) vs a moderately separable 'signal' (1)."""
    n1 = int(n * frac_sig)
    xb, _ = background(n - n1, rng)
    xs = np.c_[rng.normal(100, 30, n1), rng.normal(150, 60, n1), rng.beta(4, 4, n1), rng.beta(4, 4, n1)]
    X = np.r_[xb, xs]
    y = np.r_[np.zeros(n - n1), np.ones(n1)].astype(np.int8)
    perm = rng.permutation(n)
    return X[perm], y[perm]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000, help="flow training events")
    ap.add_argument("--epochs", type=int, default=3, help="flow epochs")
    ap.add_argument("--samples", type=int, default=200_000, help="m_jj values to sample at")
    ap.add_argument("--fit-events", type=int, default=100_000, help="BDT/MLP training events")
    ap.add_argument("--mlp-epochs", type=int, default=3, help="MLP epochs")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to measure")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    clock = EpochClock()
    loop_log = logging.getLogger("resonant.train.loop")
    loop_log.setLevel(logging.INFO)
    loop_log.addHandler(clock)
    loop_log.propagate = False

    print(f"torch {torch.__version__}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {load()}")
    rng = np.random.default_rng(0)
    X, m = background(args.events + args.events // 5, rng)
    Xt, mt, Xv, mv = X[:args.events], m[:args.events], X[args.events:], m[args.events:]
    m_sr = rng.uniform(3300, 3700, args.samples)

    print(f"\nConditionalFlow {FLOW['kind']} {FLOW['transforms']} transforms, {FLOW['hidden']}x{FLOW['layers']}, "
          f"batch {FLOW['batch_size']}: {args.events} training + {len(Xv)} validation events")
    torch.set_num_threads(1)  # warm-up: first-call costs (lazy imports, allocator) are not throughput
    ConditionalFlow.from_settings(4, dict(FLOW, epochs=1), seed=0).fit(Xt[:2000], mt[:2000], Xv[:500], mv[:500])
    for t in threads:
        torch.set_num_threads(t)
        flow = ConditionalFlow.from_settings(4, dict(FLOW, epochs=args.epochs), seed=0)
        clock.start()
        flow.fit(Xt, mt, Xv, mv)
        wall, cpu, n = clock.median_epoch()
        print(f"  train  threads {t}: {args.events / wall:8.0f} samples/s per epoch (wall; {wall:.2f} s/epoch, "
              f"cpu {cpu:.2f} s, median of {n} epochs)")
        flow.sample(m_sr[:1000], seed=1)  # warm-up
        w0, c0 = time.perf_counter(), time.process_time()
        flow.sample(m_sr, seed=1)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(f"  sample threads {t}: {args.samples / wall:8.0f} events/s (wall; {wall:.2f} s for {args.samples}, "
              f"cpu {cpu:.2f} s)")
    print(f"  {load()}")

    n = args.fit_events
    X, y = labelled(n + n // 4, np.random.default_rng(1))
    Xt, yt, Xv, yv = X[:n], y[:n], X[n:], y[n:]
    per = 100_000 / n
    print(f"\nBDT (depth 4, lr 0.1, <= 300 trees, early stopping 20): {n} training + {len(Xv)} validation events")
    # torch and xgboost share libgomp here: torch.set_num_threads(k) caps xgboost's n_jobs at k
    torch.set_num_threads(max(threads))
    BDT(seed=0, n_jobs=1).fit(Xt[:2000], yt[:2000], Xv[:500], yv[:500])  # warm-up
    for jobs in threads:
        runs = []
        for _ in range(2):  # the faster of two fits: one fit is short and sensitive to other jobs
            bdt = BDT(seed=0, n_jobs=jobs)
            w0, c0 = time.perf_counter(), time.process_time()
            bdt.fit(Xt, yt, Xv, yv)
            runs.append((time.perf_counter() - w0, time.process_time() - c0))
        wall, cpu = min(runs)
        trees = len(bdt.history["val_logloss"])
        print(f"  n_jobs {jobs}: {wall * per:6.2f} s per 100k events (wall; cpu {cpu * per:.2f} s), {trees} trees "
              f"({1e3 * wall / trees:.1f} ms/tree), best {bdt.history['best_iteration'] + 1}")
    print(f"  {load()}")

    print(f"\nMLPClassifier (3x64 ReLU, batch 128, Adam 1e-3): {n} training + {len(Xv)} validation events")
    torch.set_num_threads(1)
    MLPClassifier(epochs=1, seed=0).fit(Xt[:2000], yt[:2000], Xv[:500], yv[:500])  # warm-up
    for t in threads:
        torch.set_num_threads(t)
        mlp = MLPClassifier(epochs=args.mlp_epochs, patience=10, n_best=1, seed=0)
        clock.start()
        mlp.fit(Xt, yt, Xv, yv)
        wall, cpu, k = clock.median_epoch()
        print(f"  threads {t}: {wall * per:6.2f} s per 100k events per epoch (wall; cpu {cpu * per:.2f} s, "
              f"median of {k} epochs; {n / wall:.0f} samples/s)")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
