"""Diffusion generator on synthetic point clouds: training and sampling throughput, memory, cost vs flow matching.

* train  -- ``train_jet_model`` / ``train_particle_model`` (Keras 3 on TensorFlow, one CPU process, the
            ``tf`` engine with one replica): training events per second of the last epoch (the first
            one traces the train step), validation pass included, for laptop-sized models (width 64,
            2 blocks, 2 heads; jets batch 128, particles batch 128 clouds, 30 particle slots) and for
            the published particle model (width 128, 6 blocks, 2 heads, 279 slots, batch 128);
* sample -- ``JetDiffusion.sample`` and ``ParticleDiffusion.sample`` (default batch 4096 events) at 512
            second-order DDIM steps (published; 1024 network evaluations) and at 20 (laptop; 40):
            events per second and the peak resident memory of the call above the memory before it,
            each in a fresh process that loads the saved model (Linux: /proc/self/clear_refs resets the
            peak). The published particle model is timed on a few events only;
* versus flow matching -- the published sampling cost of both branches on the same events: diffusion
            at 512 second-order steps against flow matching (``resonant.flow_matching``, torch) at 250
            midpoint steps (500 evaluations), jets (ScoreNet 128 x 6 vs MLP 128 x 3) and particles
            (ScoreNet 128 x 6 vs EPiC 150/256 x 8, 279 slots), each in a fresh process. Sampling speed does
            not depend on the weights: the flow-matching networks are untrained.

Jets carry realistic multiplicities (log-normal around 60 constituents, 5 to 279: ``synthetic_events`` of
bench_flow_matching), so the published particle models sample about 120 particles per event; the laptop
model's jets mostly fill their 30 slots. Times are wall clock with one thread per framework (the machine may
be shared: the load average is printed).

Run: ``[OMP_WAIT_POLICY=PASSIVE] .venv/bin/python benchmarks/bench_diffusion.py [--events N ...]``
(the defaults take about 12 minutes on a 2-core machine; torch is needed for the comparison).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time

import numpy as np
from benchtools import in_fresh_process, load

LAPTOP = {"width": 64, "blocks": 2, "heads": 2, "fourier_dim": 32, "batch_size": 128, "patience": 100}
PUBLISHED = {"patience": 100}  # otherwise the defaults: width 128, 6 blocks, 2 heads, batch 128
PUBLISHED_STEPS, LAPTOP_STEPS, FM_STEPS = 512, 20, 250


def _peak_reset() -> float:
    """Reset the peak resident memory to the current one (Linux); the current resident MB."""
    from bench_flow_matching import _status_mb

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return float("nan")


def _peak() -> float:
    from bench_flow_matching import _status_mb

    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_in_child(framework, path, kind, jets, mjj, steps, threads, queue):
    """Load the model saved at ``path`` and sample once; put (seconds, baseline MB, peak MB) on ``queue``."""
    if framework == "diffusion":
        from resonant.models import diffusion as md

        md.configure(threads=threads)
        from resonant import diffusion as D

        model = D.load(path)
    else:
        import torch

        from resonant import flow_matching as FM

        torch.set_num_threads(threads)
        model = FM.load(path)

    def run(n, steps):
        if kind == "jets":
            return model.sample(mjj[:n], steps=steps, seed=1)
        return model.sample(jets[:n], mjj[:n], steps=steps, seed=1)

    run(2, 1)  # warm-up: tracing, first-call costs and the allocator's first pages do not count
    base = _peak_reset()
    t0 = time.perf_counter()
    run(len(mjj), steps)
    dt = time.perf_counter() - t0
    queue.put((dt, base, _peak()))


def measure_sampling(framework, path, kind, jets, mjj, steps, threads):
    """(seconds, baseline MB, peak MB) of one ``sample`` call in a fresh process."""
    return in_fresh_process(sample_in_child, framework, str(path), kind, jets, mjj, steps, threads)


def train(kind, cloud, n_train, settings, epochs, work, seed=0):
    """(model, training events/s of the last epoch, epochs run)."""
    from resonant import diffusion as D

    tr, va = cloud.take(np.arange(n_train)), cloud.take(np.arange(n_train, n_train + max(n_train // 4, 2)))
    fn = D.train_jet_model if kind == "jets" else D.train_particle_model
    model, h = fn(tr, va, {**settings, "epochs": epochs}, seed, os.path.join(work, f"{kind}-{n_train}-{epochs}"))
    return model, n_train / h["epoch_time"][-1], len(h["epoch_time"])


def flow_matching_models(cloud, work):
    """Untrained flow-matching jet and particle models of the published sizes, saved; their paths."""
    from resonant import flow_matching as FM
    from resonant.pointcloud import JetTransform, ParticleTransform

    jt = JetTransform().fit(cloud.jets, cloud.mjj)
    pt = ParticleTransform().fit(cloud.particles, cloud.mask)
    paths = {"jets": os.path.join(work, "fm-jets.pt"), "particles": os.path.join(work, "fm-particles.pt")}
    js, ps = (FM.settings_with_defaults(k, None) for k in ("jet_model", "particle_model"))
    FM.JetFlow(FM.make_net("jet_model", js), jt, js).save(paths["jets"])
    FM.ParticleFlow(FM.make_net("particle_model", ps), jt, pt, ps, cloud.max_particles).save(paths["particles"])
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="laptop jet-model training events")
    ap.add_argument("--particle-events", type=int, default=4_000, help="laptop particle-model training events")
    ap.add_argument("--published-events", type=int, default=256, help="published particle-model training events")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (the last one is timed)")
    ap.add_argument("--sample-jets", type=int, default=20_000, help="events for jet sampling at 20 steps "
                    "(a 25th at 512)")
    ap.add_argument("--sample-laptop", type=int, default=2_000, help="events for laptop particle sampling at 20 "
                    "steps (a 25th at 512)")
    ap.add_argument("--sample-published", type=int, default=16, help="events for published particle sampling at "
                    "20 steps (an 8th at 512)")
    ap.add_argument("--compare-jets", type=int, default=500, help="events of the jet-model cost comparison")
    ap.add_argument("--compare-particles", type=int, default=2, help="events of the particle-model cost comparison")
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow (and torch) threads")
    args = ap.parse_args(argv)

    from resonant.models import diffusion as md

    md.configure(threads=args.threads)
    import tensorflow as tf
    from bench_flow_matching import synthetic_events

    from resonant import diffusion as D

    logging.getLogger("resonant").setLevel(logging.WARNING)
    rng = np.random.default_rng(0)
    laptop = synthetic_events(max(args.events, args.particle_events) * 5 // 4 + 2, 30, rng)
    published = synthetic_events(max(args.published_events * 5 // 4 + 2, args.compare_jets), 279, rng)
    print(f"tensorflow {tf.__version__}, {args.threads} thread(s); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {load()}")
    print(f"synthetic jets: mean n {published.jets[..., 4].mean():.0f} (published model draws "
          f"{published.mask.sum(-1).mean():.0f} particles per jet of 279 slots, laptop "
          f"{laptop.mask.sum(-1).mean():.1f} of 30)")
    with tempfile.TemporaryDirectory() as work:
        print("\ntraining (events/s of the last epoch, validation included)")
        jl, rate, n = train("jets", laptop, args.events, LAPTOP, args.epochs, work)
        print(f"  jets      laptop    ScoreNet 64 x2, batch 128:              {rate:8.0f} events/s "
              f"({n} epochs, {args.events} events, {md.n_parameters(jl.net)} parameters)")
        pl, rate, n = train("particles", laptop, args.particle_events, LAPTOP, args.epochs, work)
        print(f"  particles laptop    ScoreNet 64 x2, 30 slots, batch 128:    {rate:8.1f} events/s "
              f"({n} epochs, {args.particle_events} events, {md.n_parameters(pl.net)} parameters)")
        pp, rate, n = train("particles", published, args.published_events, PUBLISHED, args.epochs, work)
        print(f"  particles published ScoreNet 128 x6, 279 slots, batch 128:  {rate:8.2f} events/s "
              f"({n} epochs, {args.published_events} events, {md.n_parameters(pp.net) / 1e6:.2f}M parameters)")
        jp = D.JetDiffusion(D.make_net("jet_model", D.DEFAULTS["jet_model"]), jl.transform, D.DEFAULTS["jet_model"])

        print("\nsampling (events/s; peak resident memory of the call in a fresh process, above its baseline)")
        cases = [("jets", "laptop ScoreNet 64 x2", jl, laptop, args.sample_jets, 25),
                 ("jets", "published ScoreNet 128 x6", jp, laptop, args.sample_jets // 10, 25),
                 ("particles", "laptop ScoreNet 64 x2, 30 slots", pl, laptop, args.sample_laptop, 25),
                 ("particles", "published ScoreNet 128 x6, 279 slots", pp, published, args.sample_published, 8)]
        for i, (kind, label, model, cloud, n_events, fewer) in enumerate(cases):
            path = os.path.join(work, f"model-{i}.h5")
            model.save(path)
            for steps in (PUBLISHED_STEPS, LAPTOP_STEPS):
                n_ev = min(n_events if steps == LAPTOP_STEPS else max(n_events // fewer, 2), len(cloud))
                dt, base, peak = measure_sampling("diffusion", path, kind, cloud.jets[:n_ev], cloud.mjj[:n_ev],
                                                  steps, args.threads)
                print(f"  {kind:9s} {label:38s} {steps:3d} steps ({D.evaluations(steps):4d} evaluations): "
                      f"{n_ev / dt:9.2f} events/s ({n_ev} events in {dt:.1f} s; peak +{peak - base:.0f} MB over "
                      f"{base:.0f} MB)")

        print(f"\nsampling cost at the published settings: diffusion {PUBLISHED_STEPS} second-order steps "
              f"({D.evaluations(PUBLISHED_STEPS)} evaluations) vs flow matching {FM_STEPS} midpoint steps "
              f"({2 * FM_STEPS} evaluations): {D.evaluations(PUBLISHED_STEPS) / (2 * FM_STEPS):.2f}x the evaluations")
        fm_paths = flow_matching_models(published, work)
        jp.save(os.path.join(work, "jets-published.h5"))
        comparisons = [("jets", "ScoreNet 128 x6 vs MLP 128 x3", os.path.join(work, "jets-published.h5"),
                        args.compare_jets),
                       ("particles", "ScoreNet 128 x6 vs EPiC 150/256 x8, 279 slots", os.path.join(work,
                                                                                                  "model-3.h5"),
                        args.compare_particles)]
        for kind, label, path, n_ev in comparisons:
            jets, mjj = published.jets[:n_ev], published.mjj[:n_ev]
            dd, _, dpeak = measure_sampling("diffusion", path, kind, jets, mjj, PUBLISHED_STEPS, args.threads)
            df, _, fpeak = measure_sampling("flow_matching", fm_paths[kind], kind, jets, mjj, FM_STEPS, args.threads)
            print(f"  {kind:9s} {label:48s}: diffusion {dd / n_ev * 1e3:9.1f} ms/event, flow matching "
                  f"{df / n_ev * 1e3:9.1f} ms/event: ratio {dd / df:5.2f} ({n_ev} events)")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
