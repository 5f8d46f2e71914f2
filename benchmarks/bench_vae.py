"""VAE branch: training, scoring and characterisation-decoder throughput, and the branch's laptop wall time.

Throughput, on ``--events`` synthetic training events (+25% validation), for each ``--threads`` setting:

* VAE train   -- ``resonant.vae.train_member`` with the default settings (6 inputs, 3 x 64 SeLU encoder
                 and decoder, latent 1, Adadelta, batch 1000, 100 optimizer steps per epoch): training
                 events per second (steps x batch / wall time of one epoch, its validation pass included),
                 median over the epochs after the first; the first epoch also traces the training step
                 into a TensorFlow graph, its extra cost is printed separately. The KL-peak rule is
                 switched off (rise = epochs) so that every run trains ``--epochs`` epochs;
* scoring     -- per-event KL of ``--events`` events with the trained model (the anomaly score);
* decoder     -- ``resonant.vae.fit_mass_decoder`` (the characterisation decoder on the frozen encoder,
                 Adam, batch 1000, one pass per epoch): training events per second.

Laptop wall time (``--laptop``, one thread, as the workflow runs the stages): the two stages of the
branch with the settings of ``config.yaml`` on one study set of the laptop study -- the real one
(results/lhco-analogue/inj500/seed0, if present) or a synthetic set of the same size:

* vae_train        -- ``n_ensemble`` members with KL-peak early stopping on SB + SR, and the scores of
                      the test set; the study runs it once per (injection, seed);
* vae_characterise -- VAE + mass decoder on the set with signal, on the set without and on
                      ``n_subsets`` background-only subsets; once per study.

The branch's laptop time is then (injections x seeds) x vae_train + vae_characterise on one core
(the workflow runs the stages in parallel on the available cores).

TensorFlow's thread pools are fixed when its runtime starts, so every measurement runs in its own
process. Times are wall clock and CPU time of that process (the machine may be shared: the load
average is printed; with one thread, CPU time is the better figure on a busy machine).

Run: ``.venv/bin/python benchmarks/bench_vae.py [--events N --epochs N --threads 1,2] [--laptop]``
(throughput about a minute per thread setting on a 2-core machine; ``--laptop`` a few minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from benchtools import EpochClock, load

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = r" epoch \d+/\d+:"
STUDY = "lhco-analogue"


def jets(n: int, seed: int, n_sig: int | None = None) -> pa.Table:
    """Jet columns of a falling QCD-like background with a 500 GeV two-prong signal (2% unless ``n_sig``),
    m_jj, the train/val split (20% val) and the label."""
    rng = np.random.default_rng(seed)
    n_sig = n // 50 if n_sig is None else n_sig
    sig = np.arange(n) < n_sig
    heavy = np.where(sig, rng.normal(500, 20, n), 30 + rng.exponential(150, n))
    light = np.where(sig, rng.normal(100, 8, n), 30 + rng.exponential(40, n))
    heavy, light = np.maximum(heavy, light), np.minimum(heavy, light)
    cols = {"mjj": np.where(sig, rng.normal(3500, 70, n), 2300 + rng.exponential(500, n))}
    for j, m in (("j1", light), ("j2", heavy)):
        t21 = np.where(sig, rng.beta(2, 9, n), rng.beta(6, 3, n))
        tau1 = rng.uniform(0.2, 0.6, n)
        cols[f"{j}_m"], cols[f"{j}_tau1"], cols[f"{j}_tau2"] = m, tau1, tau1 * t21
        cols[f"{j}_tau3"] = tau1 * t21 * rng.beta(6, 3, n)
    t = pa.table({k: np.asarray(v, np.float32) for k, v in cols.items()})
    t = t.append_column("label", pa.array(sig.astype(np.int8)))
    return t.append_column("split", pa.array(np.where(rng.random(n) < 0.2, "val", "train")))


def quiet_clock():
    clock = EpochClock(EPOCH_LINE)
    lg = logging.getLogger("resonant.vae")
    lg.setLevel(logging.INFO)
    lg.addHandler(clock)
    lg.propagate = False  # the per-epoch lines (and the expected "no KL peak" warnings) stay quiet
    return clock


def epochs_of(clock) -> np.ndarray:
    """(wall, cpu) of every epoch between the clock's marks."""
    return np.diff(np.array(clock.marks), axis=0)


def worker(args) -> dict:
    from resonant.models.vae import configure

    configure(args.threads)
    from resonant import vae

    clock = quiet_clock()
    table = jets(int(args.events * 1.25), seed=0)
    X, Xv = vae.train_val(table)
    s = vae.settings({"epochs": args.epochs, "rise": args.epochs, "fall": 1,
                      "characterisation": {"epochs": args.epochs, "patience": args.epochs}})
    out = {"threads": args.threads, "n_train": len(X), "n_val": len(Xv), "steps_per_epoch": s["steps_per_epoch"],
           "batch_size": s["batch_size"]}

    w0, c0 = time.perf_counter(), time.process_time()
    clock.start()
    model, hist = vae.train_member(X, Xv, s, seed=1)
    e = epochs_of(clock)
    med = np.median(e[1:], axis=0)
    per_epoch = hist["steps_per_epoch"] * s["batch_size"]
    out["vae"] = {"events_per_s": per_epoch / med[0], "epoch_wall": med[0], "epoch_cpu": med[1],
                  "first_epoch_extra_wall": e[0, 0] - med[0], "total_wall": time.perf_counter() - w0,
                  "total_cpu": time.process_time() - c0, "epochs": len(e)}

    model.kl_numpy(X[:1000])  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    model.kl_numpy(X)
    out["score"] = {"events_per_s": len(X) / (time.perf_counter() - w0), "cpu": time.process_time() - c0}

    clock.start()
    vae.fit_mass_decoder(model, table, s, seed=2)
    e = epochs_of(clock)
    med = np.median(e[1:], axis=0)
    out["decoder"] = {"events_per_s": len(X) / med[0], "epoch_wall": med[0], "epoch_cpu": med[1],
                      "first_epoch_extra_wall": e[0, 0] - med[0]}
    return out


def laptop_sets():
    """(signal set, background set, test set, where from): the laptop study's sets or synthetic ones."""
    from resonant import io, vae

    d = ROOT / "results" / STUDY
    sig, bkg = d / "inj500" / "seed0", d / "inj0" / "seed0"
    if all((p / f).exists() for p in (sig, bkg) for f in ("sb.parquet", "sr.parquet")) and \
            (sig / "test.parquet").exists():
        test = io.read_table(sig / "test.parquet", columns=["event_id", "label", "mjj", *vae.JET_COLUMNS])
        return (vae.read_sets([sig / "sb.parquet", sig / "sr.parquet"]),
                vae.read_sets([bkg / "sb.parquet", bkg / "sr.parquet"]), test, f"results/{STUDY}/inj500,inj0/seed0")
    n = 25_557  # SB + SR events of the laptop study set with 500 injected signal events
    test = jets(1891, seed=3, n_sig=1153).drop(["split"])
    return (jets(n, seed=1, n_sig=500), jets(n - 500, seed=2, n_sig=0), test, "synthetic, laptop-sized")


def laptop_worker(args) -> dict:
    from resonant.models.vae import configure

    configure(1)
    from resonant import vae
    from resonant.config import load_config
    from resonant.metrics import score_table

    quiet_clock()
    cfg = load_config(ROOT / "config.yaml")
    prm = {k: v for k, v in cfg["methods"]["vae"].items() if k != "enabled"}
    st = cfg["studies"][STUDY]
    s = vae.settings(prm)
    signal, background, test, source = laptop_sets()
    out = {"source": source, "n_events": signal.num_rows, "n_ensemble": s["n_ensemble"],
           "n_subsets": s["characterisation"]["n_subsets"], "n_sets": len(st["injections"]) * len(st["seeds"])}

    w0, c0 = time.perf_counter(), time.process_time()
    members = vae.train_ensemble(signal, s, seed=0)
    scores = vae.kl_scores([m for m, _, _ in members], vae.inputs(test))
    score_table(test, scores)
    hist = [h for _, h, _ in members]
    steps = sum(h["epochs_run"] * h["steps_per_epoch"] for h in hist)
    out["train"] = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0,
                    "epochs_run": [h["epochs_run"] for h in hist], "selected": [h["selected_epoch"] for h in hist],
                    "peaks": [h["peak_found"] for h in hist],
                    "events_per_s": steps * s["batch_size"] / sum(h["train_seconds"] for h in hist)}

    w0, c0 = time.perf_counter(), time.process_time()
    vae.characterisation_study(signal, background, s, seed=0, mjj_range=cfg["regions"]["sb"], sr=cfg["regions"]["sr"])
    out["characterise"] = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
    return out


def run_worker(flags: list[str]) -> dict:
    res = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="training events (+25%% validation)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the VAE and of the decoder")
    ap.add_argument("--threads", default="1,2", help="TensorFlow thread counts to measure (one process each)")
    ap.add_argument("--laptop", action="store_true", help="also time the branch's stages on a laptop study set")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput measurements")
    ap.add_argument("--worker", choices=("throughput", "laptop"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args) if args.worker == "throughput" else laptop_worker(args)))
        return

    from importlib.metadata import version

    print(f"tensorflow {version('tensorflow-cpu')}; keras {version('keras')}; {load()}")
    if not args.no_throughput:
        print(f"VAE 6 -> 3x64 SeLU -> 1 -> 3x64 SeLU -> 6, Adadelta, batch 1000, 100 steps per epoch: {args.events} "
              f"training events (+25% validation), {args.epochs} epochs")
        for t in [int(x) for x in args.threads.split(",")]:
            r = run_worker(["--worker", "throughput", "--threads", str(t), "--events", str(args.events),
                            "--epochs", str(args.epochs)])
            v, d, sc = r["vae"], r["decoder"], r["score"]
            print(f"  threads {t}: VAE train {v['events_per_s']:8.0f} events/s (wall; {v['epoch_wall']:.2f} s/epoch of "
                  f"{r['steps_per_epoch']} steps, cpu {v['epoch_cpu']:.2f} s; first epoch +"
                  f"{v['first_epoch_extra_wall']:.1f} s tracing)")
            print(f"             scoring   {sc['events_per_s']:8.0f} events/s; "
                  f"decoder train {d['events_per_s']:8.0f} events/s per epoch (cpu {d['epoch_cpu']:.2f} s/epoch)")
    if args.laptop:
        r = run_worker(["--worker", "laptop"])
        tr, ch = r["train"], r["characterise"]
        print(f"laptop branch, one thread, config.yaml settings, on {r['source']} ({r['n_events']} SB + SR events):")
        print(f"  vae_train ({r['n_ensemble']} members + test scores): {tr['wall']:.1f} s wall, {tr['cpu']:.1f} s cpu; "
              f"{tr['events_per_s']:.0f} training events/s; epochs run {tr['epochs_run']}, selected "
              f"{[e + 1 for e in tr['selected']]}, KL peak found {tr['peaks']}")
        print(f"  vae_characterise (2 sets + {r['n_subsets']} subsets): {ch['wall']:.1f} s wall, {ch['cpu']:.1f} s cpu")
        total = r["n_sets"] * tr["wall"] + ch["wall"]
        print(f"  branch: {r['n_sets']} x vae_train + vae_characterise = {total:.0f} s ({total / 60:.1f} min) on one "
              f"core, at least {max(total / 2, ch['wall']):.0f} s on two")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
