"""The weak-supervision classifier engine at realistic signal fractions, on the toy of ``resonant.toys``.

Each setting trains, per seed, an ensemble of ``--members`` classifiers of SR
data (``--n-data`` events, a signal fraction of 0.3%, 0.7% or 2%) against a
background template (``--n-template`` events) on an 80/20 train/validation
split, as the idealised reference does, and scores an independent test set
(100k background, 10k signal; the same for every seed, so the spread over
seeds is the training's). Printed per setting and fraction: the median and the
16-84% range over ``--seeds`` seeds of AUC and max SIC (at least 10 test
background events passing), and the rounds each member kept (min / median / max).

Settings:
* engine   -- the project's default (``resonant.models.bdt.BDT``: xgboost depth 3, learning rate 0.05,
              subsample 0.8, at least 200 rounds, then early stopping with patience 30, at most 300);
* es-only  -- the engine before (depth 4, learning rate 0.1, plain early stopping after 20 rounds
              without improvement);
* fixed300 -- xgboost with 300 trees, depth 3, learning rate 0.05, subsample 0.8, no early stopping;
* hgb      -- scikit-learn's HistGradientBoosting as in "Back to the roots" (arXiv:2309.13111):
              127 bins, class weights, early stopping on the validation set (patience 10), lr 0.1.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_engine.py`` (about 15 minutes on an
idle 2-core machine with the defaults; ``--seeds 2 --n-data 6000`` for a smoke run).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from benchtools import load

from resonant import toys
from resonant.metrics import evaluate
from resonant.models.classifiers import fit_ensemble

SETTINGS = {
    "engine": {"model": "bdt"},
    "es-only": {"model": "bdt", "max_depth": 4, "learning_rate": 0.1, "early_stopping": 20, "min_rounds": 1},
    "fixed300": {"model": "bdt", "max_depth": 3, "learning_rate": 0.05, "n_estimators": 300, "min_rounds": 300},
    "hgb": {"model": "hgb", "learning_rate": 0.1, "n_estimators": 200, "early_stopping": 10},
}


def one_run(settings: dict, fraction: float, seed: int, args) -> tuple[float, float, list[int]]:
    toy = toys.weak_supervision(fraction, seed, n_data=args.n_data, n_template=args.n_template,
                                n_test_bkg=args.n_test_bkg, n_test_sig=args.n_test_bkg // 10)
    X = np.concatenate([toy.data, toy.template])
    y = np.r_[np.ones(len(toy.data)), np.zeros(len(toy.template))].astype(np.int8)
    val = np.random.default_rng([seed, 5]).random(len(X)) < 0.2
    seeds = [int(s) for s in np.random.SeedSequence([seed, 7]).generate_state(args.members)]
    models = fit_ensemble(settings, X[~val], y[~val], X[val], y[val], seeds, n_jobs=1)
    score = np.mean([m.predict(toy.test) for m in models], axis=0)
    r = evaluate(toy.test_labels, score)
    return r["auc"], r["max_sic"], [m.history["best_iteration"] + 1 for m in models]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.003, 0.007, 0.02])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--n-data", type=int, default=60_000)
    p.add_argument("--n-template", type=int, default=20_000)
    p.add_argument("--n-test-bkg", type=int, default=100_000)
    args = p.parse_args(argv)
    print(f"# {load()}; {args.seeds} seeds, {args.members} members, {args.n_data} SR data events, "
          f"{args.n_template} template events")
    print(f"{'setting':9s} {'S/(S+B)':>7s}  {'AUC median [16%, 84%]':>24s}  {'max SIC median [16%, 84%]':>26s}  "
          f"{'rounds min/med/max':>18s}  {'s/run':>6s}")
    for fraction in args.fractions:
        for name in args.settings:
            t0 = time.perf_counter()
            runs = [one_run(SETTINGS[name], fraction, s, args) for s in range(args.seeds)]
            dt = (time.perf_counter() - t0) / args.seeds
            auc, sic = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
            rounds = np.concatenate([r[2] for r in runs])
            a, s = np.nanpercentile(auc, [50, 16, 84]), np.nanpercentile(sic, [50, 16, 84])
            print(f"{name:9s} {fraction:7.3%}  {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}]{'':6s}  "
                  f"{s[0]:6.2f} [{s[1]:6.2f}, {s[2]:6.2f}] ({(s[1] / s[0] - 1):+.0%}/{(s[2] / s[0] - 1):+.0%})  "
                  f"{rounds.min():4d}/{np.median(rounds):4.0f}/{rounds.max():4d}  {dt:6.1f}", flush=True)


if __name__ == "__main__":
    main()
