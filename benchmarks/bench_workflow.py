"""Workflow figures: planning time, no-op rerun time, wall time per stage family, reference fit time.

    python benchmarks/bench_workflow.py [--workdir .] [--configfile config.yaml]

Planning time is measured in a fresh copy (nothing computed). The no-op time
and the per-stage wall times need a finished run in --workdir (e.g. after
`make run`); the per-stage times come from Snakemake's own job metadata.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_utils import copy_project, snakemake  # noqa: E402

FAMILIES = {  # rule -> stage family (branch); the CATHODE engine rules by their {engine} wildcard
    "generate": "data", "import_lhco_particles": "data", "import_lhco_features": "data", "cluster": "data",
    "merge_jets": "data", "merge_simulation": "data", "study_sets": "regions", "reference": "references",
    "metrics": "evaluate", "summarize": "evaluate", "plot_curves": "evaluate", "plot_data": "evaluate",
    "plot_turn_on": "evaluate", "required_injection": "evaluate",
    "train_contrastive_encoder": "contrastive", "contrastive_encode": "contrastive",
    "contrastive_latent_sets": "contrastive", "contrastive_combine": "contrastive",
    "contrastive_latent_checks": "contrastive", "vae_train": "vae", "vae_characterise": "vae",
    "train_jet_fm": "flow_matching", "train_particle_fm": "flow_matching", "sample_fm": "flow_matching",
    "train_jet_diffusion": "diffusion", "train_particle_diffusion": "diffusion", "sample_diffusion": "diffusion",
}


def family(rule: str, wildcards: str) -> str:
    """The branch a job belongs to: engine and classifier rules by their wildcards."""
    if rule.startswith("cathode_"):
        return "contrastive" if "contrastive-" in wildcards else "cathode"
    if rule in ("pc_classifier", "pc_checks"):  # by the {pcmethod} or {generator} wildcard
        return next((m for m in ("idealised_pointcloud", "diffusion", "flow_matching") if m in wildcards), rule)
    return FAMILIES.get(rule, rule)


def timed(fn, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def stage_times(workdir: Path) -> dict[tuple[str, str], tuple[int, float]]:
    """(jobs, summed wall seconds) per (rule, family), from the complete Snakemake run of ``workdir``
    that took longest (a --touch or no-op run also ends '100% done')."""
    logs = [p for p in sorted((workdir / ".snakemake/log").glob("*.snakemake.log"))
            if "steps (100%) done" in p.read_text()]
    runs = [_log_times(p) for p in logs]
    return max(runs, key=lambda r: sum(t for _, t in r.values()), default={})


def _log_times(log: Path) -> dict[str, tuple[int, float]]:
    import re
    from datetime import datetime

    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
    start, rule_of, out = {}, {}, defaultdict(lambda: [0, 0.0])
    now, pending_rule, job = None, None, None
    for line in log.read_text().splitlines():
        m = stamp.match(line.strip())
        if m:
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            pending_rule = m.group(1)
            continue
        m = re.match(r"^\s*jobid: (\d+)$", line)
        if m and pending_rule:
            job = m.group(1)
            start[job], rule_of[job] = now, (pending_rule, family(pending_rule, ""))
            pending_rule = None
            continue
        m = re.match(r"^\s*wildcards: (.*)$", line)
        if m and job in rule_of:
            rule_of[job] = (rule_of[job][0], family(rule_of[job][0], m.group(1)))
            continue
        m = re.match(r"^Finished jobid: (\d+)", line.strip())
        if m and m.group(1) in start:
            key = rule_of[m.group(1)]
            out[key][0] += 1
            out[key][1] += (now - start[m.group(1)]).total_seconds()
    return {k: (n, t) for k, (n, t) in out.items() if k[0] != "all"}


def reference_fit_time(n=100_000, n_jobs=1):
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from resonant.models.bdt import BDT

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.int8)
    X[y == 1] += 0.3
    Xv, yv = X[: n // 5], y[: n // 5]
    t = time.perf_counter()
    bdt = BDT(max_depth=4, learning_rate=0.1, n_estimators=300, early_stopping=20, n_jobs=n_jobs).fit(X, y, Xv, yv)
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
    if done and "Nothing to be done" not in (lambda p: p.stdout + p.stderr)(
            snakemake(wd, "-n", "--configfile", args.configfile)):
        print(f"{wd} is not up to date: run `make run` first for the no-op figure")
        done = False
    if done:
        noop = timed(lambda: snakemake(wd, "--configfile", args.configfile, "--quiet"))
        print(f"no-op rerun (everything up to date): {noop:.2f} s")
        times = stage_times(wd)
        fam = defaultdict(lambda: [0, 0.0])
        print("wall time per rule (summed over jobs, from the last complete Snakemake log):")
        for (rule, f), (n, t) in sorted(times.items(), key=lambda kv: -kv[1][1]):
            print(f"  {rule:<26} {f:<20} {n:4d} jobs  {t:8.1f} s")
            fam[f][0] += n
            fam[f][1] += t
        print("per branch (stage family), summed job wall time:")
        for f, (n, t) in sorted(fam.items(), key=lambda kv: -kv[1][1]):
            print(f"  {f:<24} {n:4d} jobs  {t:8.1f} s")
    else:
        print(f"no finished run in {wd}: run `make run` first for the no-op and per-stage figures")
    for n_jobs in (1, 2):
        t, trees = reference_fit_time(n_jobs=n_jobs)
        print(f"reference BDT fit, {n_jobs} thread(s): {t:.2f} s per 100k events (4 features, {trees} trees, "
              "early stopping)")


if __name__ == "__main__":
    main()
