"""Event-generation throughput: bare Pythia vs the full generate_chunk path (+ Parquet, + jets).

For QCD (pTHatMin 1100 GeV) and the LHCO-like signal wprime_xy(3500, 500, 100):

* bare     -- a ``Pythia.next()`` loop with the same settings and seed;
* batch    -- the ``Pythia.nextBatch`` loop alone (Pythia + building its awkward record);
* full     -- ``generate_chunk``: nextBatch, particle extraction, detector smearing,
              table building; the same Pythia events as ``bare``;
* +parquet -- ``full`` plus ``write_chunk`` (validation and zstd Parquet);
* +jets    -- if ``resonant.data.jets`` exists: ``jets_table`` on the table, reported
              as selected events per second of the whole chain.

Rates are events per CPU-second of this process ("per core"; more robust than wall
time against other jobs sharing the machine), Pythia's init excluded; each figure is
the fastest of ``--repeats`` alternating runs. The target is (full+write)/bare >= 0.85.

Run: ``.venv/bin/python benchmarks/bench_generate.py [--qcd-events N --signal-events N --repeats R]``
(defaults take about two minutes on one core).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

from resonant.data import processes
from resonant.data.generate import DEFAULT_BATCH_SIZE, chunk_seed, generate_chunk, make_pythia, write_chunk

CASES = {
    "qcd": ("qcd_dijet", {"pthat_min": 1100.0}, 0),
    "wprime_xy_500_100": ("wprime_xy", {"m_res": 3500.0, "m_x": 500.0, "m_y": 100.0}, 1),
}


class Clock:
    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def rate(n, clock) -> str:
    return f"{n / max(clock.cpu, 1e-9):7.1f} ev/s ({n / max(clock.wall, 1e-9):6.1f} wall)"


def bare(model, params, n, seed) -> tuple[Clock, Clock]:
    """(init, event loop) clocks of a plain ``Pythia.next()`` loop."""
    with Clock() as c_init:
        pythia = make_pythia(processes.pythia_settings(model, params, seed=seed), model)
    with Clock() as c_loop:
        for _ in range(n):
            pythia.next()
    return c_init, c_loop


def batch_only(model, params, n, seed, batch_size) -> Clock:
    """Event loop of ``Pythia.nextBatch`` alone (init excluded): Pythia + its awkward-array building."""
    pythia = make_pythia(processes.pythia_settings(model, params, seed=seed), model)
    with Clock() as c:
        done = 0
        while done < n:
            done += len(pythia.nextBatch(min(batch_size, n - done)))
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--qcd-events", type=int, default=600, help="QCD events per measurement")
    ap.add_argument("--signal-events", type=int, default=600, help="signal events per measurement")
    ap.add_argument("--repeats", type=int, default=2,
                    help="alternate bare/nextBatch/full this many times and keep the fastest of each")
    ap.add_argument("--seed", type=int, default=1, help="global seed")
    ap.add_argument("--no-jets", action="store_true", help="skip the clustering step even if available")
    args = ap.parse_args(argv)

    try:
        jets = None if args.no_jets else importlib.import_module("resonant.data.jets")
        jets_table = getattr(jets, "jets_table", None)
    except ImportError:
        jets_table = None

    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, params, label) in CASES.items():
            n = args.qcd_events if label == 0 else args.signal_events
            seed = chunk_seed(args.seed, name, 0)
            init = loop = nb = full = write = None
            for _ in range(max(1, args.repeats)):  # alternate, keep the fastest of each
                c_init, c_loop = bare(model, params, n, seed)
                c_nb = batch_only(model, params, n, seed, DEFAULT_BATCH_SIZE)
                with Clock() as c_full:
                    table = generate_chunk(model, params, n, seed, name, label, 0, progress=False)
                with Clock() as c_write:
                    write_chunk(table, Path(tmp) / f"{name}.parquet")
                init = c_init if init is None or c_init.cpu < init.cpu else init
                loop = c_loop if loop is None or c_loop.cpu < loop.cpu else loop
                nb = c_nb if nb is None or c_nb.cpu < nb.cpu else nb
                full = c_full if full is None or c_full.cpu < full.cpu else full
                write = c_write if write is None or c_write.cpu < write.cpu else write
            # generate_chunk includes one Pythia init: take it out to compare event loops.
            full_loop = max(full.cpu - init.cpu, 1e-9)
            size = (Path(tmp) / f"{name}.parquet").stat().st_size
            r_full = loop.cpu / full_loop
            r_write = loop.cpu / (full_loop + write.cpu)
            print(f"{name}: {model} {params}, {n} events, {size / n / 1024:.1f} KiB/event on disk, "
                  f"Pythia init {init.cpu:.2f} s CPU")
            print(f"  bare Pythia next() loop        : {n / loop.cpu:7.1f} ev/s per core ({n / loop.wall:.1f} wall)")
            print(f"  Pythia nextBatch() loop alone  : {n / nb.cpu:7.1f} ev/s per core   nextBatch/bare = "
                  f"{loop.cpu / nb.cpu:.3f}")
            print(f"  generate_chunk (full path)     : {n / full_loop:7.1f} ev/s per core   full/bare = {r_full:.3f}"
                  f"   full/nextBatch = {nb.cpu / full_loop:.3f}   [incl. init: {n / full.cpu:.1f} ev/s]")
            print(f"  + write Parquet                : {n / (full_loop + write.cpu):7.1f} ev/s per core   "
                  f"(full+write)/bare = {r_write:.3f}   [writing alone {n / max(write.cpu, 1e-9):.0f} ev/s]")
            jt = None
            if jets_table is not None:
                try:
                    with Clock() as c_jets:
                        jt = jets_table(table)
                except Exception as e:  # another engineer's API may differ: report, do not fail
                    print(f"  + jets_table (selection)       : failed ({type(e).__name__}: {e}), skipped")
            if jt is not None:
                n_sel = jt.num_rows
                total = full_loop + write.cpu + c_jets.cpu
                print(f"  + jets_table (selection)       : {n_sel}/{n} selected; clustering {n / c_jets.cpu:.0f} ev/s; "
                      f"whole chain {n / total:.1f} generated ev/s = {n_sel / total:.1f} selected ev/s per core")
            elif jets_table is None:
                print("  + jets_table (selection)       : skipped (resonant.data.jets.jets_table not available)")
            summary.append((name, r_full, r_write))
    print("target: full path within 15% of bare Pythia, i.e. (full+write)/bare >= 0.85 (event loops, init excluded)")
    for name, r_full, r_write in summary:
        verdict = "OK" if r_write >= 0.85 else "BELOW TARGET"
        print(f"  {name:20s} full/bare {r_full:.3f}, (full+write)/bare {r_write:.3f}  {verdict}")


if __name__ == "__main__":
    main()
