"""Workflow figures: planning time, no-op rerun time, wall time per stage family, reference fit time.

    python benchmarks/bench_workflow.py [--workdir .] [--configfile config.yaml]

Planning time is measured in a fresh copy (nothing computed). The no-op time
and the per-stage wall times need a finished run in --workdir (e.g. after
`make run`); the per-stage times come from Snakemake's own job metadata.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_utils import copy_project, snakemake  # noqa: E402

FAMILIES = {
    "generate": "data", "import_lhco_particles": "data", "import_lhco_features": "data", "cluster": "data",
    "merge_jets": "data", "study_sets": "regions", "reference": "references", "metrics": "evaluate",
    "summarize": "evaluate", "plot_curves": "evaluate", "plot_data": "evaluate", "plot_turn_on": "evaluate",
}


def timed(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def stage_times(workdir: Path) -> dict[str, tuple[int, float]]:
    """(jobs, summed wall seconds) per rule, from .snakemake/metadata (one record per output file)."""
    jobs = {}
    for rec in (workdir / ".snakemake/metadata").glob("*"):
        try:
            meta = json.loads(rec.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if meta.get("starttime") and meta.get("endtime") and meta.get("rule"):
            key = (meta["rule"], meta.get("job_hash"), meta["starttime"])
            jobs[key] = meta["endtime"] - meta["starttime"]
    out = defaultdict(lambda: [0, 0.0])
    for (rule, _, _), dt in jobs.items():
        out[rule][0] += 1
        out[rule][1] += dt
    return {r: (n, t) for r, (n, t) in out.items()}


def reference_fit_time(n=100_000):
    from resonant.models.bdt import BDT

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.int8)
    X[y == 1] += 0.3
    Xv, yv = X[: n // 5], y[: n // 5]
    t = time.perf_counter()
    bdt = BDT(max_depth=4, learning_rate=0.1, n_estimators=300, early_stopping=20).fit(X, y, Xv, yv)
    return time.perf_counter() - t, bdt.history["best_iteration"] + 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=str(Path(__file__).resolve().parents[1]))
    p.add_argument("--configfile", default="config.yaml")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = copy_project(Path(tmp) / "wd")
        plan = timed(lambda: snakemake(fresh, "-n", "--configfile", args.configfile, "--quiet"))
    print(f"planning (snakemake -n, nothing computed, {args.configfile}): {plan:.2f} s   (goal < 5 s)")
    wd = Path(args.workdir)
    done = (wd / ".snakemake/metadata").exists()
    if done:
        noop = timed(lambda: snakemake(wd, "--configfile", args.configfile, "--quiet"))
        print(f"no-op rerun (everything up to date): {noop:.2f} s")
        times = stage_times(wd)
        fam = defaultdict(lambda: [0, 0.0])
        print("wall time per rule (summed over jobs, from Snakemake's job metadata):")
        for rule, (n, t) in sorted(times.items(), key=lambda kv: -kv[1][1]):
            print(f"  {rule:<24} {n:4d} jobs  {t:8.1f} s")
            f = FAMILIES.get(rule, rule)
            fam[f][0] += n
            fam[f][1] += t
        print("per stage family:")
        for f, (n, t) in sorted(fam.items(), key=lambda kv: -kv[1][1]):
            print(f"  {f:<24} {n:4d} jobs  {t:8.1f} s")
    else:
        print(f"no finished run in {wd}: run `make run` first for the no-op and per-stage figures")
    t, trees = reference_fit_time()
    print(f"reference BDT fit: {t:.2f} s per 100k events (4 features, {trees} trees, early stopping)")


if __name__ == "__main__":
    main()
