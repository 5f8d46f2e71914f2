"""The weak-supervision classifier engine on the toy of ``resonant.toys`` at realistic signal fractions.

Full figures (10 seeds, 0.3/0.7/2%, the settings compared): ``benchmarks/bench_engine.py``.
"""

import numpy as np
import pytest

from resonant import toys
from resonant.metrics import evaluate
from resonant.models.bdt import BDT, HGB, best_round
from resonant.models.classifiers import fit_ensemble, make_classifier


def _problem(fraction, seed, n_data=30_000, n_template=15_000):
    toy = toys.weak_supervision(fraction, seed, n_data=n_data, n_template=n_template, n_test_bkg=20_000,
                                n_test_sig=2_000)
    X = np.concatenate([toy.data, toy.template])
    y = np.r_[np.ones(len(toy.data)), np.zeros(len(toy.template))].astype(np.int8)
    val = np.random.default_rng([seed, 5]).random(len(X)) < 0.2
    return toy, X[~val], y[~val], X[val], y[val]


def test_toy_signal_is_separable_but_overlaps():
    """The toy is a fair stand-in: a supervised classifier separates it well but not perfectly."""
    rng = np.random.default_rng(0)
    b, s = toys.background(20_000, rng), toys.signal(2_000, rng)
    X, y = np.r_[b, s], np.r_[np.zeros(len(b)), np.ones(len(s))].astype(np.int8)
    Xt, yt = np.r_[toys.background(20_000, rng), toys.signal(2_000, rng)], y
    model = BDT(seed=1, n_jobs=1).fit(X, y, Xt[::2], yt[::2])
    auc = evaluate(yt, model.predict(Xt))["auc"]
    # measured 0.98 with 60k/6k events; a fifth of the signal has QCD-like masses, so AUC < 1
    assert 0.95 < auc < 0.995


def test_engine_separates_the_toy_signal_at_two_percent():
    """2% signal in 30k SR data against a 15k background template: 5 members, no labels in training.

    The benchmark measures AUC 0.93 (16-84% over seeds 0.92-0.94) with 60k data events; with half
    the data, 0.9 is expected. A classifier without information scores 0.5 +- 0.007 on this test
    set (Hanley-McNeil, 2k signal, 20k background): 0.85 is far above chance and below what the
    engine reaches by several times the spread over seeds.
    """
    toy, X, y, Xv, yv = _problem(0.02, seed=3)
    models = fit_ensemble({"model": "bdt"}, X, y, Xv, yv, seeds=[11, 12, 13, 14, 15], n_jobs=1)
    score = np.mean([m.predict(toy.test) for m in models], axis=0)
    r = evaluate(toy.test_labels, score)
    assert r["auc"] > 0.85
    assert r["max_sic"] > 5.0  # measured ~15 on this test set; sqrt(10/2e4)-limited SIC of chance is ~1


def test_no_member_stops_in_its_first_rounds_at_a_low_signal_fraction():
    """0.7% signal: the validation loss is flat within its noise. Plain early stopping (the engine before)
    keeps a handful of trees chosen by that noise; the engine keeps at least ``min_rounds``."""
    toy, X, y, Xv, yv = _problem(0.007, seed=4)
    seeds = [21, 22, 23]
    engine = fit_ensemble({"model": "bdt"}, X, y, Xv, yv, seeds=seeds, n_jobs=1)
    kept = [m.n_rounds for m in engine]
    assert min(kept) >= 200, kept
    plain = fit_ensemble({"model": "bdt", "max_depth": 4, "learning_rate": 0.1, "early_stopping": 20,
                          "min_rounds": 1}, X, y, Xv, yv, seeds=seeds, n_jobs=1)
    assert np.median([m.n_rounds for m in plain]) < 50  # the failure mode the minimum guards against
    # and the engine's members still find the signal
    r = evaluate(toy.test_labels, np.mean([m.predict(toy.test) for m in engine], axis=0))
    assert r["auc"] > 0.75  # benchmark: 0.90 (0.89-0.92) with 60k data events


def test_best_round_respects_the_minimum():
    loss = [0.5, 0.4, 0.45, 0.46, 0.47, 0.44, 0.48]
    assert best_round(loss, 1) == 1
    assert best_round(loss, 3) == 5
    assert best_round(loss, 100) == 6  # fewer rounds than the minimum: the last one


def test_predictions_use_the_kept_rounds_and_survive_a_round_trip(tmp_path):
    _, X, y, Xv, yv = _problem(0.02, seed=5, n_data=6_000, n_template=4_000)
    model = BDT(n_estimators=80, min_rounds=20, early_stopping=5, seed=2, n_jobs=1).fit(X, y, Xv, yv)
    assert 20 <= model.n_rounds <= 80
    full = model.model.predict_proba(Xv)[:, 1]
    if model.n_rounds < len(model.history["val_logloss"]):
        assert not np.allclose(model.predict(Xv), full)  # the trees after the kept round are not used
    model.save(tmp_path / "m.json")
    again = BDT.load(tmp_path / "m.json")
    np.testing.assert_array_equal(again.predict(Xv), model.predict(Xv))
    assert again.n_rounds == model.n_rounds


@pytest.mark.parametrize("kind", ["bdt", "hgb"])
def test_same_seed_same_predictions(kind, tmp_path):
    _, X, y, Xv, yv = _problem(0.02, seed=6, n_data=6_000, n_template=4_000)
    a = make_classifier({"model": kind, "n_estimators": 60}, seed=7, n_jobs=1).fit(X, y, Xv, yv)
    b = make_classifier({"model": kind, "n_estimators": 60}, seed=7, n_jobs=1).fit(X, y, Xv, yv)
    np.testing.assert_array_equal(a.predict(Xv), b.predict(Xv))
    a.save(tmp_path / f"m{a.file_suffix}")
    np.testing.assert_array_equal(type(a).load(tmp_path / f"m{a.file_suffix}").predict(Xv), a.predict(Xv))


def test_hgb_recipe_separates_an_easy_signal():
    _, X, y, Xv, yv = _problem(0.1, seed=8, n_data=6_000, n_template=6_000)
    model = HGB(seed=1).fit(X, y, Xv, yv)
    toy = toys.weak_supervision(0.1, 8, n_data=100, n_template=100, n_test_bkg=5_000, n_test_sig=500)
    assert evaluate(toy.test_labels, model.predict(toy.test))["auc"] > 0.85
    assert model.history["best_iteration"] + 1 == len(model.history["val_logloss"])
