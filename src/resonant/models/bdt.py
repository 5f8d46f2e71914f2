"""Gradient-boosted decision trees: the classifier engine of every weakly supervised step.

Two models with the same verbs (``fit(X, y, X_val, y_val)``, ``predict(X)`` ->
P(class 1), ``save``/``load``, ``history``), both with balanced class weights:

- :class:`BDT` (xgboost). Its stopping rule holds at signal fractions of a
  fraction of a percent, where the validation loss of data against a
  background template is flat within its noise: a minimum number of rounds
  (``min_rounds``) is always kept, and early stopping (``early_stopping``
  rounds of patience) picks the best round at or after it. Plain early
  stopping on such a loss keeps 1-15 trees, chosen by noise (measured on the
  toy of ``benchmarks/bench_engine.py``).
- :class:`HGB` (scikit-learn's HistGradientBoostingClassifier): the recipe of
  the tree-based weak-supervision study "Back to the roots"
  (arXiv:2309.13111): 127 bins, class weights, early stopping on the held-out
  validation set.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from .. import io


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-event weights giving both classes the same total weight (mean weight 1)."""
    y = np.asarray(y)
    n = len(y)
    n1 = max(int((y == 1).sum()), 1)
    n0 = max(int((y == 0).sum()), 1)
    return np.where(y == 1, n / (2.0 * n1), n / (2.0 * n0)).astype(np.float32)


def best_round(val_loss, min_rounds: int) -> int:
    """Index of the round with the lowest validation loss among rounds ``min_rounds - 1`` and later."""
    loss = np.asarray(val_loss, np.float64)
    start = min(max(min_rounds, 1), len(loss)) - 1
    return start + int(np.argmin(loss[start:]))


def _stopping_callback(min_rounds: int, patience: int):
    """An xgboost callback: stop once ``patience`` rounds pass without a new best at or after ``min_rounds``."""
    import xgboost as xgb

    class MinRoundsStopping(xgb.callback.TrainingCallback):
        def __init__(self):
            super().__init__()
            self.best, self.best_epoch = np.inf, None

        def after_iteration(self, model, epoch, evals_log):
            loss = next(iter(next(iter(evals_log.values())).values()))[-1]
            if epoch + 1 >= min_rounds and loss < self.best:
                self.best, self.best_epoch = loss, epoch
            return self.best_epoch is not None and epoch - self.best_epoch >= patience

    return MinRoundsStopping()


class BDT:
    """A binary xgboost classifier with a minimum number of rounds before early stopping may choose."""

    file_suffix = ".json"

    def __init__(self, max_depth=3, learning_rate=0.05, n_estimators=300, early_stopping=30, min_rounds=200,
                 subsample=0.8, seed=0, n_jobs=None):
        self.params = dict(max_depth=max_depth, learning_rate=learning_rate, n_estimators=n_estimators,
                           early_stopping=early_stopping, min_rounds=min_rounds, subsample=subsample, seed=seed)
        self.n_jobs = n_jobs
        self.model = None
        self.history: dict = {}

    def _make(self):
        import xgboost as xgb

        p = self.params
        return xgb.XGBClassifier(
            max_depth=p["max_depth"], learning_rate=p["learning_rate"], n_estimators=p["n_estimators"],
            eval_metric="logloss", tree_method="hist", random_state=p["seed"], subsample=p["subsample"],
            colsample_bytree=1.0, n_jobs=self.n_jobs,
            callbacks=[_stopping_callback(min(p["min_rounds"], p["n_estimators"]), p["early_stopping"])],
        )

    @property
    def n_rounds(self) -> int:
        """The rounds (trees) the predictions use."""
        return int(self.history["best_iteration"]) + 1

    def fit(self, X, y, X_val, y_val, class_weight: bool = True):
        self.model = self._make()
        w = balanced_weights(y) if class_weight else None
        wv = balanced_weights(y_val) if class_weight else None
        self.model.fit(X, y, sample_weight=w, eval_set=[(X_val, y_val)],
                       sample_weight_eval_set=[wv] if wv is not None else None, verbose=False)
        res = [float(v) for v in self.model.evals_result()["validation_0"]["logloss"]]
        self.history = {"val_logloss": res, "best_iteration": best_round(res, self.params["min_rounds"])}
        return self

    def predict(self, X) -> np.ndarray:
        return self.model.predict_proba(np.asarray(X), iteration_range=(0, self.n_rounds))[:, 1]

    def save(self, path) -> None:
        """xgboost's JSON model beside ``<path>.meta.json`` (params and history)."""
        path = Path(path)
        with io.atomic_path(path, suffix=".tmp.json") as tmp:
            self.model.save_model(tmp)
        io.write_json({"params": self.params, "history": self.history}, path.with_suffix(".meta.json"))

    @classmethod
    def load(cls, path) -> "BDT":
        import xgboost as xgb

        path = Path(path)
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        self = cls(**meta["params"])
        self.model = xgb.XGBClassifier()
        self.model.load_model(path)
        self.history = meta["history"]
        return self


class HGB:
    """scikit-learn's HistGradientBoostingClassifier as in "Back to the roots": 127 bins, class weights,
    early stopping on the given validation set (``early_stopping`` rounds without improvement)."""

    file_suffix = ".pkl"

    def __init__(self, learning_rate=0.1, n_estimators=200, max_leaf_nodes=31, early_stopping=10, seed=0,
                 n_jobs=None):
        self.params = dict(learning_rate=learning_rate, n_estimators=n_estimators, max_leaf_nodes=max_leaf_nodes,
                           early_stopping=early_stopping, seed=seed)
        self.n_jobs = n_jobs  # scikit-learn follows OpenMP's thread setting
        self.model = None
        self.history: dict = {}

    def fit(self, X, y, X_val, y_val, class_weight: bool = True):
        from sklearn.ensemble import HistGradientBoostingClassifier

        p = self.params
        self.model = HistGradientBoostingClassifier(
            learning_rate=p["learning_rate"], max_iter=p["n_estimators"], max_leaf_nodes=p["max_leaf_nodes"],
            max_bins=127, early_stopping=True, n_iter_no_change=p["early_stopping"], random_state=p["seed"])
        w = balanced_weights(y) if class_weight else None
        wv = balanced_weights(y_val) if class_weight else None
        self.model.fit(X, y, sample_weight=w, X_val=X_val, y_val=y_val, sample_weight_val=wv)
        # validation_score_ holds the negative loss, starting with the score before the first round
        self.history = {"val_logloss": [float(-v) for v in self.model.validation_score_[1:]],
                        "best_iteration": int(self.model.n_iter_) - 1}
        return self

    def predict(self, X) -> np.ndarray:
        return self.model.predict_proba(np.asarray(X))[:, 1]

    def save(self, path) -> None:
        """The pickled estimator beside ``<path>.meta.json`` (params and history)."""
        path = Path(path)
        with io.atomic_path(path, suffix=".tmp.pkl") as tmp:
            Path(tmp).write_bytes(pickle.dumps(self.model))
        io.write_json({"params": self.params, "history": self.history}, path.with_suffix(".meta.json"))

    @classmethod
    def load(cls, path) -> "HGB":
        path = Path(path)
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        self = cls(**meta["params"])
        self.model = pickle.loads(path.read_bytes())
        self.history = meta["history"]
        return self
