"""The MLP classifier (classic CATHODE classifier) and the classifier factory."""

import json

import numpy as np
import pytest
import torch

from resonant.metrics import evaluate
from resonant.models.bdt import BDT
from resonant.models.classifiers import make_classifier
from resonant.models.mlp import MLPClassifier

SMALL = dict(hidden=32, layers=2, lr=3e-3, batch_size=128, epochs=15, patience=5, n_best=3)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def easy(n_bkg, n_sig, rng, shift=2.5):
    """Four features with very different scales; the signal is shifted in two of them."""
    scale = np.array([1.0, 100.0, 0.01, 1000.0])
    Xb = rng.normal(0, 1, (n_bkg, 4))
    Xs = rng.normal(0, 1, (n_sig, 4))
    Xs[:, :2] += shift
    X = np.r_[Xb, Xs] * scale + np.array([0.0, 500.0, 0.0, 3500.0])
    y = np.r_[np.zeros(n_bkg), np.ones(n_sig)].astype(np.int8)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X, y = easy(1500, 1500, rng)
    Xv, yv = easy(500, 500, rng)
    return MLPClassifier(**SMALL, seed=3).fit(X, y, Xv, yv)


def test_separates_an_easy_signal(trained):
    X, y = easy(2000, 2000, np.random.default_rng(1))
    s = trained.predict(X)
    assert s.shape == (4000,) and np.all((s >= 0) & (s <= 1))
    assert evaluate(y, s)["auc"] > 0.95
    h = trained.history
    assert len(h["best_epochs"]) == SMALL["n_best"] == len(trained.states)
    assert h["best_iteration"] == int(np.argmin(h["val_logloss"]))
    assert len(h["train_loss"]) == len(h["val_logloss"]) == h["stopped_epoch"] + 1


def test_standardisation_is_stored(trained):
    assert trained.mean.shape == trained.std.shape == (4,)
    assert trained.std[3] > 100 * trained.std[0]  # the raw scales differ by 1000


def test_class_weights_balance_an_imbalanced_set():
    rng = np.random.default_rng(2)
    X, y = easy(4000, 200, rng, shift=1.5)
    Xv, yv = easy(1000, 50, rng, shift=1.5)
    Xt, yt = easy(2000, 2000, rng, shift=1.5)
    kw = dict(SMALL, epochs=8)
    weighted = MLPClassifier(**kw, seed=0).fit(X, y, Xv, yv).predict(Xt)
    plain = MLPClassifier(**kw, seed=0).fit(X, y, Xv, yv, class_weight=False).predict(Xt)
    assert weighted[yt == 1].mean() > 0.7
    assert weighted[yt == 0].mean() < 0.3
    # without the weights the 1:20 prior pulls every score down
    assert plain[yt == 1].mean() < weighted[yt == 1].mean() - 0.25


def test_same_seed_same_predictions():
    rng = np.random.default_rng(4)
    X, y = easy(600, 600, rng)
    Xv, yv = easy(200, 200, rng)
    kw = dict(SMALL, epochs=4)
    a = MLPClassifier(**kw, seed=7).fit(X, y, Xv, yv).predict(Xv)
    b = MLPClassifier(**kw, seed=7).fit(X, y, Xv, yv).predict(Xv)
    c = MLPClassifier(**kw, seed=8).fit(X, y, Xv, yv).predict(Xv)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "models" / "mlp.pt"
    trained.save(path)
    meta = json.loads((tmp_path / "models" / "mlp.meta.json").read_text())
    assert meta["params"]["seed"] == 3 and len(meta["mean"]) == 4 and "val_logloss" in meta["history"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["mlp.meta.json", "mlp.pt"]  # no temporary files
    loaded = MLPClassifier.load(path)
    X, _ = easy(300, 300, np.random.default_rng(5))
    assert np.array_equal(loaded.predict(X), trained.predict(X))
    assert loaded.params == trained.params and loaded.history == trained.history


def test_bad_inputs(trained):
    with pytest.raises(ValueError, match="expected an"):
        trained.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        trained.predict(np.array([[0.0, np.nan, 0.0, 0.0]]))
    X = np.zeros((10, 4))
    with pytest.raises(ValueError, match="both classes"):
        MLPClassifier().fit(X, np.zeros(10), X, np.r_[np.zeros(5), np.ones(5)])
    with pytest.raises(RuntimeError, match="fit or load"):
        MLPClassifier().predict(X)


def test_factory_builds_either_model():
    bdt = make_classifier({"max_depth": 3, "n_estimators": 50, "hidden": 16}, seed=5)
    assert isinstance(bdt, BDT)
    assert bdt.params["max_depth"] == 3 and bdt.params["n_estimators"] == 50 and bdt.params["seed"] == 5
    assert bdt.params["learning_rate"] == BDT().params["learning_rate"]  # default
    mlp = make_classifier({"model": "mlp", "hidden": 16, "n_best": 2, "max_depth": 3}, seed=6)
    assert isinstance(mlp, MLPClassifier)
    assert mlp.params == dict(MLPClassifier().params, hidden=16, n_best=2, seed=6)


def test_factory_errors():
    with pytest.raises(ValueError, match="'cnn' is not one of"):
        make_classifier({"model": "cnn"}, seed=0)
    with pytest.raises(ValueError, match="depth, n_folds"):
        make_classifier({"model": "mlp", "depth": 3, "n_folds": 2}, seed=0)
    with pytest.raises(ValueError, match="folds"):
        make_classifier({"folds": 5}, seed=0)
    assert isinstance(make_classifier({"folds": 5, "n_ensemble": 2}, seed=0, ignore=("folds", "n_ensemble")), BDT)
