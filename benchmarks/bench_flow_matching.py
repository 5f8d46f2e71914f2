"""Flow-matching generator on synthetic point clouds: training and sampling throughput, sampling memory.

* train  -- ``train_jet_model`` / ``train_particle_model`` (Lightning, one CPU process): training
            events per second of an epoch (validation pass included; the median epoch), for the
            laptop settings of config.yaml (jets: MLP 128 x 3, batch 256; particles: EPiC hidden 64,
            global 32, 3 layers, batch 256, 30 particle slots) and for the published particle
            model (hidden 150, global 256, 8 layers, 279 slots; batch 128 here to keep it short);
* sample -- ``JetFlow.sample`` and ``ParticleFlow.sample`` (default batch 4096 events) at 250
            midpoint steps (published) and at 20 (laptop): events per second and the peak
            resident memory of the call above the memory before it, each in a fresh process
            that loads the saved model (Linux: /proc/self/clear_refs resets the peak).

Jets carry realistic multiplicities (log-normal around 60 constituents, 5 to 279), so the
published particle model samples about 120 particles per event; the laptop model's jets mostly
fill their 30 slots. Sampling speed does not depend on the weights: the sampled networks are
those of the short training runs. Times are wall clock (the machine may be shared: the load
average is printed). A small fit first warms up imports and first-call costs.

Run: ``[OMP_WAIT_POLICY=PASSIVE] .venv/bin/python benchmarks/bench_flow_matching.py [--events N ...]``
(the defaults take about 6 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time

import numpy as np
import torch
from benchtools import in_fresh_process, load

from resonant import flow_matching as FM
from resonant.pointcloud import PointCloud, mask_from_counts, n_valid

ONE_CPU = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}
LAPTOP_JETS = {"hidden": 128, "layers": 3, "batch_size": 256, "patience": 100}
LAPTOP_PARTICLES = {"hidden": 64, "global_dim": 32, "layers": 3, "batch_size": 256, "patience": 100}
PUBLISHED_PARTICLES = {"batch_size": 128, "patience": 100}  # otherwise the defaults


def synthetic_events(n: int, max_particles: int, rng) -> PointCloud:
    """Dijet-like events: jets of pT ~ m_jj / 2, masses 20-500 GeV, log-normal multiplicities."""
    mjj = rng.uniform(2800, 5500, n).astype(np.float32)
    jets = np.zeros((n, 2, 5), np.float32)
    jets[..., 0] = mjj[:, None] / 2 * rng.uniform(0.7, 1.0, (n, 2))
    jets[..., 0] = -np.sort(-jets[..., 0], axis=1)
    jets[..., 1] = rng.normal(0, 1, (n, 2))
    jets[..., 2] = rng.uniform(-np.pi, np.pi, (n, 2))
    jets[..., 3] = rng.uniform(20, 500, (n, 2))
    jets[..., 4] = np.clip(np.rint(rng.lognormal(np.log(60), 0.5, (n, 2))), 5, 279)
    mask = mask_from_counts(n_valid(jets, max_particles), max_particles)
    particles = np.zeros((n, 2, max_particles, 3), np.float32)
    particles[..., 0] = -np.sort(-rng.dirichlet(np.ones(max_particles), (n, 2)), axis=-1) * mask
    particles[..., 1:] = rng.normal(0, 0.3, (n, 2, max_particles, 2)) * mask[..., None]
    return PointCloud(jets, particles, mask, mjj)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def sample_in_child(path, kind, jets, mjj, steps, threads, queue):
    """Load the model saved at ``path`` and sample once; put (seconds, baseline MB, peak MB) on ``queue``."""
    torch.set_num_threads(threads)
    flow = FM.load(path)
    # warm-up: first-call costs (and the allocator's first pages) do not count
    (flow.sample(mjj[:2], steps=1) if kind == "jets" else flow.sample(jets[:2], mjj[:2], steps=1))
    try:
        with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak RSS to the current RSS
            f.write("5")
        base = _status_mb("VmRSS")
    except OSError:
        base = float("nan")
    t0 = time.perf_counter()
    if kind == "jets":
        flow.sample(mjj, steps=steps, seed=1)
    else:
        flow.sample(jets, mjj, steps=steps, seed=1)
    dt = time.perf_counter() - t0
    try:
        peak = _status_mb("VmHWM")
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((dt, base, peak))


def measure_sampling(path, kind, jets, mjj, steps, threads):
    """(seconds, baseline MB, peak MB) of one ``sample`` call in a fresh process."""
    return in_fresh_process(sample_in_child, str(path), kind, jets, mjj, steps, threads)


def train(kind, cloud, n_train, settings, epochs, work, seed=0):
    tr, va = cloud.take(np.arange(n_train)), cloud.take(np.arange(n_train, n_train + max(n_train // 4, 2)))
    fn = FM.train_jet_model if kind == "jets" else FM.train_particle_model
    flow, h = fn(tr, va, {**settings, "epochs": epochs}, seed, os.path.join(work, f"{kind}-{n_train}-{epochs}"),
                 ONE_CPU)
    return flow, n_train / float(np.median(h["epoch_time"])), len(h["epoch_time"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="jet-model training events")
    ap.add_argument("--particle-events", type=int, default=4_000, help="laptop particle-model training events")
    ap.add_argument("--published-events", type=int, default=128, help="published particle-model training events")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs")
    ap.add_argument("--sample-jets", type=int, default=20_000, help="events for jet sampling")
    ap.add_argument("--sample-laptop", type=int, default=2_000, help="events for laptop particle sampling at 20 "
                    "steps (a tenth at 250)")
    ap.add_argument("--sample-published", type=int, default=160, help="events for published particle sampling at "
                    "20 steps (a tenth at 250)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    rng = np.random.default_rng(0)
    laptop = synthetic_events(max(args.events, args.particle_events) * 5 // 4 + 2, 30, rng)
    published = synthetic_events(args.published_events * 5 // 4 + 2, 279, rng)
    print(f"torch {torch.__version__}, {args.threads} thread(s); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {load()}")
    print(f"synthetic jets: mean n {published.jets[..., 4].mean():.0f} (published model draws "
          f"{published.mask.sum(-1).mean():.0f} particles per jet of 279 slots, laptop "
          f"{laptop.mask.sum(-1).mean():.1f} of 30)")
    with tempfile.TemporaryDirectory() as work:
        train("jets", laptop, 512, LAPTOP_JETS, 1, work)  # warm-up
        print("\ntraining (events/s of an epoch, validation included; median epoch)")
        jf, rate, n = train("jets", laptop, args.events, LAPTOP_JETS, args.epochs, work)
        print(f"  jets      laptop    MLP 128x3, batch 256:              {rate:8.0f} events/s ({n} epochs, "
              f"{args.events} events)")
        pf_laptop, rate, n = train("particles", laptop, args.particle_events, LAPTOP_PARTICLES, args.epochs, work)
        print(f"  particles laptop    EPiC 64/32 x3, 30 slots, batch 256: {rate:8.1f} events/s ({n} epochs, "
              f"{args.particle_events} events)")
        pf_pub, rate, n = train("particles", published, args.published_events, PUBLISHED_PARTICLES, 1, work)
        n_par = sum(p.numel() for p in pf_pub.net.parameters())
        print(f"  particles published EPiC 150/256 x8 ({n_par / 1e6:.2f}M), 279 slots, batch 128: {rate:8.2f} "
              f"events/s ({n} epoch, {args.published_events} events)")

        print("\nsampling (events/s; peak resident memory of the call in a fresh process, above its baseline)")
        cases = [("jets", "laptop/published MLP 128x3", jf, laptop, args.sample_jets),
                 ("particles", "laptop EPiC 64/32 x3, 30 slots", pf_laptop, laptop, args.sample_laptop),
                 ("particles", "published EPiC 150/256 x8, 279 slots", pf_pub, published, args.sample_published)]
        for i, (kind, label, flow, cloud, n_events) in enumerate(cases):
            path = os.path.join(work, f"model-{i}.pt")
            flow.save(path)
            for steps in (250, 20):
                n_ev = min(n_events if steps == 20 else max(n_events // 10, 2), len(cloud))
                dt, base, peak = measure_sampling(path, kind, cloud.jets[:n_ev], cloud.mjj[:n_ev], steps,
                                                  args.threads)
                print(f"  {kind:9s} {label:38s} {steps:3d} steps: {n_ev / dt:9.1f} events/s "
                      f"({n_ev} events in {dt:.1f} s; peak +{peak - base:.0f} MB over {base:.0f} MB)")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
