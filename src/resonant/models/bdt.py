"""Gradient-boosted decision trees (xgboost) with early stopping and class weights."""

from __future__ import annotations

import json
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


class BDT:
    """A binary xgboost classifier: ``fit(X, y, X_val, y_val)``, ``predict(X)`` -> P(class 1)."""

    file_suffix = ".json"

    def __init__(self, max_depth=4, learning_rate=0.1, n_estimators=300, early_stopping=20, seed=0,
                 n_jobs=None):
        self.params = dict(max_depth=max_depth, learning_rate=learning_rate, n_estimators=n_estimators,
                           early_stopping=early_stopping, seed=seed)
        self.n_jobs = n_jobs
        self.model = None
        self.history: dict = {}

    def _make(self):
        import xgboost as xgb

        p = self.params
        return xgb.XGBClassifier(
            max_depth=p["max_depth"], learning_rate=p["learning_rate"], n_estimators=p["n_estimators"],
            early_stopping_rounds=p["early_stopping"], eval_metric="logloss", tree_method="hist",
            random_state=p["seed"], subsample=0.8, colsample_bytree=1.0, n_jobs=self.n_jobs,
        )

    def fit(self, X, y, X_val, y_val, class_weight: bool = True):
        self.model = self._make()
        w = balanced_weights(y) if class_weight else None
        wv = balanced_weights(y_val) if class_weight else None
        self.model.fit(X, y, sample_weight=w, eval_set=[(X_val, y_val)],
                       sample_weight_eval_set=[wv] if wv is not None else None, verbose=False)
        res = self.model.evals_result()["validation_0"]["logloss"]
        self.history = {"val_logloss": [float(v) for v in res], "best_iteration": int(self.model.best_iteration)}
        return self

    def predict(self, X) -> np.ndarray:
        return self.model.predict_proba(np.asarray(X))[:, 1]

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
