"""Clustering + jet-feature throughput (events per CPU-second, i.e. per core).

What is measured, on QCD events (pTHatMin 1100 GeV) from the project's generator:

* ``detector`` -- the default parametric detector (|eta| < 4.9, pT > 0.5 GeV, smeared;
  Delphes-like, as the LHC Olympics events are): ~260 particles per event;
* ``truth``    -- visible final-state particles, no detector (~500 per event, close to
  the ~550 of the reference measurement of anti-kt alone);
* ``--input FILE`` -- any raw-event Parquet file as well (e.g. the imported LHCO particle
  file: ``import_lhco.py particles`` output).

For each sample: ``jets_table`` (the whole stage: Arrow -> flat arrays -> anti-kt ->
selection -> constituents -> N-subjettiness -> Arrow table) with its per-step CPU
breakdown, the same with all events in one chunk, and, for reference, FastJet's anti-kt
alone through its Python interface (Best strategy, ClusterSequence + inclusive_jets). Each figure is the fastest
of ``--repeats`` runs (CPU time of this process: robust against other jobs on the
machine). The target is >= 3,000 events/s per core for the whole stage.

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--events N] [--repeats R] [--input raw.parquet]``
(defaults: 2000 events per sample, about a minute of generation plus a minute of timing).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from resonant import io
from resonant.data import jets
from resonant.data.generate import chunk_seed, generate_chunk

TARGET = 3000.0


def generate(n: int, detector: dict | None, seed: int):
    return generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, n, chunk_seed(seed, "bench_cluster", 0), "qcd", 0, 0,
                          detector=detector, progress=False)


def fastest(fn, repeats: int):
    best, out = None, None
    for _ in range(repeats):
        t0 = time.process_time()
        res = fn()
        dt = time.process_time() - t0
        if best is None or dt < best[0]:
            best, out = (dt,), res
    return best[0], out


def antikt_alone(raw) -> float:
    """CPU seconds of FastJet anti-kt R=1.0 (Best strategy) + inclusive_jets through the Python interface."""
    import fastjet

    off, pt, eta, phi = jets.flat_particles_from_arrow(raw.column("particles"))
    px, py, pz, e = jets.four_vectors(pt, eta, phi)
    jd = fastjet.JetDefinition(fastjet.antikt_algorithm, 1.0)
    t0 = time.process_time()
    cs = fastjet.ClusterSequence(jets._momentum_array(off, px, py, pz, e), jd)
    cs.inclusive_jets()
    return time.process_time() - t0


def measure(name: str, raw, repeats: int) -> dict:
    n = raw.num_rows
    off, *_ = jets.flat_particles_from_arrow(raw.column("particles"))
    mult = np.diff(off)
    best = None
    for _ in range(repeats):
        timings = {}
        t0 = time.process_time()
        table, stats = jets.jets_table(raw, progress=False, timings=timings)
        dt = time.process_time() - t0
        if best is None or dt < best[0]:
            best = (dt, timings, stats)
    t_table, timings, stats = best
    t_big, _ = fastest(lambda: jets.jets_table(raw, progress=False, chunk_size=n), repeats)
    t_antikt = min(antikt_alone(raw) for _ in range(repeats))
    print(f"\n{name}: {n} events, {mult.mean():.0f} particles/event (median {np.median(mult):.0f}, "
          f"95% {np.percentile(mult, 95):.0f}), {stats['n_selected']} selected, "
          f"{stats['n_constituents_from_fastjet']} with constituents from FastJet's slow path")
    print(f"  jets_table (whole stage, chunks of {jets.DEFAULT_CHUNK_SIZE}) : {n / t_table:7.0f} events/s per core "
          f"({n / t_table * mult.mean() / 1e6:.2f}M particles/s)")
    print(f"  jets_table, all {n} events in one chunk : {n / t_big:7.0f} events/s per core")
    print(f"  FastJet anti-kt alone (Best, one chunk)  : {n / t_antikt:7.0f} events/s per core (reference)")
    print("  steps of the stage, microseconds per input event:")
    for step, sec in timings.items():
        print(f"    {step:16s} {sec / n * 1e6:7.1f}")
    rest = t_table - sum(timings.values())
    print(f"    {'Arrow in/out':16s} {rest / n * 1e6:7.1f}")
    return {"name": name, "n": n, "particles": float(mult.mean()), "table": n / t_table, "antikt": n / t_antikt}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=2000, help="generated QCD events per sample (0: none)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (the fastest is kept)")
    ap.add_argument("--seed", type=int, default=1, help="global seed of the generated samples")
    ap.add_argument("--input", nargs="*", default=[], help="raw-event Parquet files to measure as well")
    ap.add_argument("--no-truth", action="store_true", help="skip the truth-level sample")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)

    samples = []
    if args.events > 0:
        t0 = time.perf_counter()
        samples.append(("detector", generate(args.events, None, args.seed)))
        if not args.no_truth:
            samples.append(("truth", generate(args.events, {"enabled": False}, args.seed)))
        print(f"generated {len(samples)} x {args.events} QCD events in {time.perf_counter() - t0:.0f} s")
    for path in args.input:
        samples.append((str(path), io.read_table(path)))

    # warm-up: imports, FastJet banner, first-call costs
    jets.jets_table(samples[0][1].slice(0, 50), progress=False)
    results = [measure(name, raw, args.repeats) for name, raw in samples]
    print(f"\ntarget: >= {TARGET:.0f} events/s per core for the whole stage")
    for r in results:
        verdict = "OK" if r["table"] >= TARGET else "below target"
        print(f"  {r['name']:12s} {r['particles']:5.0f} particles/event: {r['table']:6.0f} events/s per core "
              f"({verdict}); anti-kt alone {r['antikt']:6.0f}")


if __name__ == "__main__":
    main()
