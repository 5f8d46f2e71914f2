"""Contrastive encoder on synthetic tokens: training and encoding throughput of the laptop-size model.

* train  -- ``train_encoder`` (Lightning, one CPU process) with the laptop settings (n_constituents 16,
            dim 64, 4 heads, 2 particle + 1 class attention blocks, batch 512) on ``--events`` training
            events (+25% validation) in 3 balanced process groups: events per second of one epoch
            (validation pass included), the median epoch, for each ``--threads`` setting;
* encode -- ``encode`` (posterior means, token scaling included) of ``--encode-events`` events with
            the trained model, at the default batch of 4096 and at 512 (smaller batches stay in the
            CPU caches).

Tokens are random but shaped like real ones (T = 34 tokens of 15 features; 5-60 constituents per
jet, so most jets fill all 16 constituent slots). Times are wall clock and CPU time of this process
(the machine may be shared: the load average is printed). Epoch times come from the encoder's
per-epoch log records. A small fit first warms up imports and first-call costs.

Run: ``[OMP_WAIT_POLICY=PASSIVE] .venv/bin/python benchmarks/bench_contrastive.py [--events N --epochs N]``
(the defaults take about 4 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np
from benchtools import EpochClock, load
import torch

from resonant import contrastive as C

ONE_CPU = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}
SETTINGS = {"n_constituents": 16, "dim": 64, "heads": 4, "particle_blocks": 2, "class_blocks": 1,
            "batch_size": 512, "patience": 100}


def synthetic_tokens(n, k, rng, n_groups=3):
    """(tokens, mask, groups) in the layout of ``event_tokens`` (before scaling)."""
    f = len(C.TOKEN_FEATURES)
    t = 2 + 2 * k
    groups = rng.integers(0, n_groups, n)
    tokens = np.zeros((n, t, f), np.float32)
    mask = np.zeros((n, t), bool)
    nj, nc = len(C.JET_TOKEN_FEATURES), len(C.CONSTITUENT_TOKEN_FEATURES)
    tokens[:, :2, :nj] = rng.normal(size=(n, 2, nj)) + 0.3 * groups[:, None, None]
    mask[:, :2] = True
    counts = rng.integers(5, 61, (n, 2))
    for j in range(2):
        rows = slice(2 + j * k, 2 + (j + 1) * k)
        valid = np.arange(k)[None, :] < np.minimum(counts[:, j], k)[:, None]
        tokens[:, rows, nj:nj + nc] = rng.normal(size=(n, k, nc)) * valid[..., None]
        tokens[:, rows, nj + nc + j] = valid
        tokens[:, rows, -1] = valid
        mask[:, rows] = valid
    tokens[:, 0, nj + nc], tokens[:, 1, nj + nc + 1] = 1.0, 1.0
    return tokens, mask, groups


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="training events")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs")
    ap.add_argument("--encode-events", type=int, default=20_000, help="events to encode")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to measure")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    clock = EpochClock(r"epoch")
    enc_log = logging.getLogger("resonant.contrastive")
    enc_log.setLevel(logging.INFO)
    enc_log.addHandler(clock)
    enc_log.propagate = False

    k = SETTINGS["n_constituents"]
    rng = np.random.default_rng(0)
    n_val = args.events // 4
    tokens, mask, groups = synthetic_tokens(args.events + n_val + args.encode_events, k, rng)
    tr, va = slice(0, args.events), slice(args.events, args.events + n_val)
    enc = slice(args.events + n_val, None)
    scaler = C.TokenScaler().fit(tokens[tr], mask[tr])
    train = (scaler.transform(tokens[tr], mask[tr]), mask[tr], groups[tr])
    val = (scaler.transform(tokens[va], mask[va]), mask[va], groups[va])
    n_params = sum(p.numel() for p in C.make_encoder(tokens.shape[-1], SETTINGS).parameters())

    print(f"torch {torch.__version__}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {load()}")
    print(f"\nContrastiveEncoder dim {SETTINGS['dim']}, {SETTINGS['particle_blocks']}+{SETTINGS['class_blocks']} "
          f"blocks, {n_params} parameters; {tokens.shape[1]} tokens x {tokens.shape[2]} features, batch "
          f"{SETTINGS['batch_size']}: {args.events} training + {n_val} validation events, 3 groups")
    with tempfile.TemporaryDirectory() as work:
        torch.set_num_threads(1)  # warm-up
        small = tuple(a[:2048] for a in train), tuple(a[:1024] for a in val)
        C.train_encoder(*small, dict(SETTINGS, epochs=1), seed=0, workdir=work, trainer_kwargs=ONE_CPU)
        for t in threads:
            torch.set_num_threads(t)
            clock.start()
            model, history = C.train_encoder(train, val, dict(SETTINGS, epochs=args.epochs), seed=0, workdir=work,
                                             trainer_kwargs=ONE_CPU)
            wall, cpu, n = clock.median_epoch()
            print(f"  train  threads {t}: {args.events / wall:8.0f} events/s per epoch (wall; {wall:.2f} s/epoch, "
                  f"cpu {cpu:.2f} s, median of {n} epochs)")
            C.encode(model, scaler, tokens[enc][:4096], mask[enc][:4096])  # warm-up
            for bs in (4096, 512):
                w0, c0 = time.perf_counter(), time.process_time()
                C.encode(model, scaler, tokens[enc], mask[enc], batch_size=bs)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                n_enc = len(tokens[enc])
                print(f"  encode threads {t}, batch {bs:4d}: {n_enc / wall:8.0f} events/s (wall; {wall:.2f} s for "
                      f"{n_enc}, cpu {cpu:.2f} s)")
    print(f"  {load()}")


if __name__ == "__main__":
    main()
