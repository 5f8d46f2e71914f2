"""Throughput and peak memory of the LHCO R&D particle import.

Builds particle files in the official layout (pandas fixed format, key "df",
``df/block0_values`` (N, 2101) float64: 700 x (pT, eta, phi) zero padded +
label), with 100-250 non-zero particles per event, written chunk by chunk
with PyTables exactly as ``DataFrame.to_hdf(path, key="df", complib=...,
complevel=...)`` writes it (same nodes, attributes, chunk shape, filters;
tests/test_lhco.py checks this against ``to_hdf``). The published file is
compressed (~2.9 GB for 1.1M events); its compressor is not documented, so
``--complib`` picks one: ``zlib`` (default; shuffle + deflate, the slowest
to decode, read by the threaded inflater), ``blosc`` (read through PyTables)
or ``none`` (pandas' default ``to_hdf``: uncompressed, ~17 KB per event on disk).

Each import runs in a fresh subprocess that does nothing else, so its
``ru_maxrss`` is the import's peak resident memory. Running the same import
on files of different sizes shows whether memory grows with the file size.
The files are read from the page cache (they were just written).

    .venv/bin/python benchmarks/bench_lhco_import.py --events 100000 200000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lhco_fixtures import N_COLUMNS, N_PARTICLES, write_particle_file_chunked  # noqa: E402

TARGET_EVENTS_PER_S = 20_000
TARGET_PEAK_BYTES = 2 * 1024**3

CHILD = r"""
import json, logging, resource, sys, time
logging.basicConfig(level=logging.WARNING)
from resonant.data.lhco import import_particles
src, out, chunk, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stats = import_particles(src, out, chunk_size=chunk, threads=None if threads == "auto" else int(threads))
stats["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
stats["rss_before_import_bytes"] = rss0 * 1024
print(json.dumps(stats))
"""


def make_chunk_fn(seed: int, lo: int = 100, hi: int = 250):
    """Dense rows start..stop-1, reproducible per row range (chunks are built independently)."""

    def make(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([seed, start])
        n = stop - start
        dense = np.zeros((n, N_COLUMNS))
        counts = rng.integers(lo, hi + 1, n)
        filled = np.arange(N_PARTICLES)[None, :] < counts[:, None]
        total = int(counts.sum())
        view = dense[:, : 3 * N_PARTICLES].reshape(n, N_PARTICLES, 3)
        view[..., 0][filled] = rng.exponential(15.0, total) + 0.5
        view[..., 1][filled] = rng.normal(0.0, 1.5, total)
        view[..., 2][filled] = rng.uniform(-np.pi, np.pi, total)
        dense[:, -1] = rng.random(n) < 0.1
        return dense

    return make


def run_import(src: Path, out: Path, chunk: int, threads: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(chunk), threads],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"import of {src} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, nargs="+", default=[100_000, 200_000],
                    help="file sizes to build and import (events)")
    ap.add_argument("--complib", choices=["zlib", "blosc", "none"], nargs="+", default=["zlib"],
                    help="compression(s) of the built files (as to_hdf's complib; 'none' = pandas' default)")
    ap.add_argument("--complevel", type=int, default=5, help="as to_hdf's complevel")
    ap.add_argument("--chunk-size", type=int, default=None, help="import chunk size (default: the importer's)")
    ap.add_argument("--threads", default="auto", help="decompression threads of the importer (default auto)")
    ap.add_argument("--repeat", type=int, default=1, help="imports per file (the best rate is reported)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to build the files (default: a new /tmp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built files")
    ap.add_argument("--reuse", action="store_true", help="reuse files already built in --workdir (with --keep)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from resonant.data.lhco import DEFAULT_CHUNK_SIZE

    chunk = args.chunk_size or DEFAULT_CHUNK_SIZE
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_lhco_", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for lib, n in [(lib, n) for lib in args.complib for n in sorted(set(args.events))]:
            complib = None if lib == "none" else lib
            src = workdir / f"events_{n}_{lib}.h5"
            t0 = time.perf_counter()
            if not (args.reuse and src.exists()):
                write_particle_file_chunked(src, n, make_chunk_fn(seed=7), chunk_rows=10_000, complib=complib,
                                            complevel=args.complevel)
            build_s = time.perf_counter() - t0
            print(f"built {src.name}: {n} events, {src.stat().st_size / 1e6:.0f} MB "
                  f"({src.stat().st_size / n / 1e3:.2f} kB/event) in {build_s:.0f} s", flush=True)
            best = None
            for _ in range(args.repeat):
                out = workdir / f"raw_{n}.parquet"
                load = os.getloadavg()[0]
                stats = run_import(src, out, chunk, args.threads)
                stats["load_before"] = load
                stats["output_bytes"] = out.stat().st_size
                out.unlink()
                print(f"  import: {stats['events_per_s']:,.0f} events/s ({stats['seconds']:.1f} s; "
                      f"{stats['events_per_cpu_s']:,.0f} events per CPU-s; load before {load:.1f}), "
                      f"peak RSS {stats['peak_rss_bytes'] / 2**20:,.0f} MiB, reader {stats['reader']}"
                      f"{' (' + stats['inflate_library'] + ')' if stats['inflate_library'] else ''}, "
                      f"{stats['n_particles'] / n:.0f} particles/event, output {stats['output_bytes'] / 1e6:.0f} MB",
                      flush=True)
                if best is None or stats["events_per_s"] > best["events_per_s"]:
                    best = stats
            results.append({"events": n, "file_bytes": src.stat().st_size, "complib": lib,
                            "complevel": args.complevel if complib else 0, "chunk_size": chunk,
                            "events_per_s": best["events_per_s"], "seconds": best["seconds"],
                            "events_per_cpu_s": best["events_per_cpu_s"], "load_before": best["load_before"],
                            "peak_rss_bytes": best["peak_rss_bytes"], "reader": best["reader"],
                            "inflate_library": best["inflate_library"],
                            "particles_per_event": best["n_particles"] / n})
            if not args.keep:
                src.unlink()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{'complib':>7} {'events':>8} {'file MB':>8} {'events/s':>10} {'ev/CPU-s':>9} {'peak MiB':>9}  reader")
    for r in results:
        print(f"{r['complib']:>7} {r['events']:>8} {r['file_bytes'] / 1e6:>8.0f} {r['events_per_s']:>10,.0f} "
              f"{r['events_per_cpu_s']:>9,.0f} {r['peak_rss_bytes'] / 2**20:>9,.0f}  {r['reader']}"
              f"{' (' + r['inflate_library'] + ')' if r['inflate_library'] else ''}")
    ok_rate = all(r["events_per_s"] >= TARGET_EVENTS_PER_S for r in results)
    ok_mem = all(r["peak_rss_bytes"] < TARGET_PEAK_BYTES for r in results)
    for lib in args.complib:
        peaks = [r["peak_rss_bytes"] for r in results if r["complib"] == lib]
        if len(peaks) > 1:
            growth = (max(peaks) - min(peaks)) / min(peaks)
            print(f"{lib}: peak memory spread between file sizes: {100 * growth:.1f}%")
    print(f"target >= {TARGET_EVENTS_PER_S:,} events/s: {'met' if ok_rate else 'NOT met'}; "
          f"target peak < 2 GiB: {'met' if ok_mem else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
