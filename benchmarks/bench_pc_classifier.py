"""Point-cloud classifier on synthetic events: training and prediction throughput.

Three sizes:

* laptop    -- the network of config.yaml (dim 32, 2 heads, 2 blocks, batch 128), 32 constituent slots
               per jet, 20-80 constituents per jet (most jets fill the 32 slots);
* laptop64  -- the same events, the published network (dim 64, 2 heads, 4 blocks, dropout 0.1, batch 64);
* published -- the published network, 279 slots per jet, constituents per jet ~ N(80, 30) clipped to
               [10, 279] (a batch is trimmed to the slots its jets use, ~150-200 here), a few batches only.

For each size and ``--threads`` setting:

* train   -- ``train_classifier`` (Adamax, one CPU process): training events per second of one epoch
             (validation pass included, 80/20 split), the median of ``--epochs`` epochs;
* predict -- ``PCClassifier.predict`` at its default batch size: events per second.

Times are wall clock and CPU time of this process (the machine may be shared: the load average is
printed). Epoch times come from the training loop's per-epoch log records. A small fit first warms
up imports and first-call costs.

Run: ``[OMP_WAIT_POLICY=PASSIVE] .venv/bin/python benchmarks/bench_pc_classifier.py [--threads 1,2]``
(the defaults take about 3 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch
from benchtools import EpochClock, load

from resonant import pc_classify as C
from resonant.pointcloud import PointCloud, mask_from_counts

PUBLISHED = {k: C.DEFAULTS[k] for k in ("dim", "heads", "blocks", "dropout", "lr", "batch_size")}
LAPTOP = dict(PUBLISHED, dim=32, blocks=2, batch_size=128)  # as config.yaml
# name: (network, slots per jet, (mean, sd, low, high) of the constituents per jet, training + validation
#        events, events to predict)
SIZES = {"laptop": (LAPTOP, 32, (50, 15, 20, 80), 4000, 4000),
         "laptop64": (PUBLISHED, 32, (50, 15, 20, 80), 4000, 4000),
         "published": (PUBLISHED, 279, (80, 30, 10, 279), 800, 640)}


def synthetic_events(n: int, slots: int, counts: tuple, rng) -> PointCloud:
    """Events shaped like real ones (values random): back-to-back jets, constituents around the axis."""
    mean, sd, lo, hi = counts
    mjj = rng.normal(3500, 200, n)
    jets = np.stack([np.stack([mjj / 2 * rng.uniform(0.8, 1.0, n), rng.normal(0, 1, n), rng.uniform(-3, 3, n),
                               np.abs(rng.normal(100, 60, n)), np.zeros(n)], -1) for _ in range(2)], 1)
    n_const = np.clip(np.rint(rng.normal(mean, sd, (n, 2))), lo, hi)
    jets[..., 4] = n_const
    mask = mask_from_counts(np.minimum(n_const, slots).astype(int), slots)
    pt_rel = np.sort(rng.dirichlet(np.ones(slots), (n, 2)), axis=-1)[..., ::-1]
    particles = np.concatenate([pt_rel[..., None], rng.normal(0, 0.2, (n, 2, slots, 2))], -1) * mask[..., None]
    return PointCloud(jets.astype(np.float32), particles.astype(np.float32), mask, mjj.astype(np.float32))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per measurement")
    ap.add_argument("--threads", default="1", help="torch thread counts to measure")
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"which of {', '.join(SIZES)}")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    clock = EpochClock(r"epoch \d+:")
    loop_log = logging.getLogger("resonant.train.loop")
    loop_log.setLevel(logging.INFO)
    loop_log.addHandler(clock)
    loop_log.propagate = False

    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {load()}")
    torch.set_num_threads(1)  # warm-up
    warm = synthetic_events(256, 16, (10, 3, 2, 16), rng)
    C.train_classifier(warm, warm, dict(LAPTOP, epochs=1), seed=0)
    for size in args.sizes.split(","):
        settings, slots, counts, n_fit, n_predict = SIZES[size]
        positive, negative = (synthetic_events(n_fit // 2, slots, counts, rng) for _ in range(2))
        to_predict = synthetic_events(n_predict, slots, counts, rng)
        n_train = int(n_fit * (1 - C.DEFAULTS["val_fraction"]))
        n_params = sum(p.numel() for p in C.make_net(settings).parameters())
        print(f"\n{size}: PCTransformer dim {settings['dim']}, {settings['heads']} heads, {settings['blocks']} "
              f"blocks ({n_params} parameters), batch {settings['batch_size']}; {slots} slots per jet, "
              f"{positive.mask.sum(-1).mean():.0f} constituents per jet on average; {n_train} training + "
              f"{n_fit - n_train} validation events")
        for t in threads:
            torch.set_num_threads(t)
            clock.start()
            model, _ = C.train_classifier(positive, negative, dict(settings, epochs=args.epochs, patience=100),
                                          seed=0)
            wall, cpu, n = clock.median_epoch()
            print(f"  train   threads {t}: {n_train / wall:8.1f} events/s per epoch (wall; {wall:.2f} s/epoch, "
                  f"cpu {cpu:.2f} s, median of {n} epochs)")
            w0, c0 = time.perf_counter(), time.process_time()
            model.predict(to_predict)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            chunk = C.chunk_events(slots, settings["heads"])
            print(f"  predict threads {t}: {n_predict / wall:8.1f} events/s (wall; {wall:.2f} s for {n_predict}, "
                  f"cpu {cpu:.2f} s, batch {chunk})")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
