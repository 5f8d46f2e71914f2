"""A small fully connected binary classifier (the classic CATHODE classifier).

Speaks the same verbs as :class:`resonant.models.bdt.BDT`: ``fit(X, y, X_val,
y_val, class_weight=True)``, ``predict(X)`` -> P(class 1), ``save``/``load``,
``history``. Inputs are standardised with the training statistics (stored in
the model); the loss is the binary cross-entropy weighted with balanced class
weights; training runs through :func:`resonant.train.loop.fit` with early
stopping, and the prediction is the mean sigmoid output of the ``n_best``
epochs with the lowest validation loss (as classic CATHODE does).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import io
from ..train import loop
from .bdt import balanced_weights


def _check_finite(X, what: str) -> None:
    if not np.all(np.isfinite(X)):
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"MLPClassifier: {what} has {bad} event(s) with non-finite features; "
                         "clean or impute them first")


class MLPClassifier:
    """``layers`` hidden layers of ``hidden`` ReLU units and one logit output."""

    file_suffix = ".pt"

    def __init__(self, hidden=64, layers=3, lr=1e-3, batch_size=128, epochs=100, patience=10, n_best=10, seed=0):
        self.params = dict(hidden=hidden, layers=layers, lr=lr, batch_size=batch_size, epochs=epochs,
                           patience=patience, n_best=n_best, seed=seed)
        self.n_features: int | None = None
        self.mean = self.std = None
        self.states: list[dict] = []
        self.history: dict = {}

    def _net(self) -> torch.nn.Sequential:
        p = self.params
        mods, width = [], self.n_features
        for _ in range(p["layers"]):
            mods += [torch.nn.Linear(width, p["hidden"]), torch.nn.ReLU()]
            width = p["hidden"]
        mods.append(torch.nn.Linear(width, 1))
        return torch.nn.Sequential(*mods)

    def _standardise(self, X) -> torch.Tensor:
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"MLPClassifier: expected an (n, {self.n_features}) array, got shape {X.shape}")
        return torch.as_tensor(((X - self.mean) / self.std).astype(np.float32))

    @staticmethod
    def _loss(net, x, y, w):
        """Weighted binary cross-entropy, mean over the batch."""
        return F.binary_cross_entropy_with_logits(net(x).squeeze(-1), y, weight=w)

    def fit(self, X, y, X_val, y_val, class_weight: bool = True, name: str = "mlp") -> "MLPClassifier":
        X, X_val = np.asarray(X, np.float64), np.asarray(X_val, np.float64)
        y, y_val = np.asarray(y), np.asarray(y_val)
        if X.ndim != 2 or X_val.ndim != 2 or X.shape[1] != X_val.shape[1]:
            raise ValueError(f"MLPClassifier: X {X.shape} and X_val {X_val.shape} must be 2-d with the same "
                             "number of features")
        for arr, lab, what in ((X, y, "training"), (X_val, y_val, "validation")):
            _check_finite(arr, f"the {what} set")
            if len(arr) != len(lab):
                raise ValueError(f"MLPClassifier: the {what} set has {len(arr)} events but {len(lab)} labels")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError(f"MLPClassifier: the {what} labels must be 0 or 1")
        if (y == 1).sum() == 0 or (y == 0).sum() == 0:
            raise ValueError(f"MLPClassifier: the training set needs both classes (has {int((y == 1).sum())} "
                             f"and {int((y == 0).sum())})")
        self.n_features = X.shape[1]
        self.mean = X.mean(0)
        std = X.std(0)
        self.std = np.where(std > 1e-12, std, 1.0)

        def tensors(Xs, ys):
            w = balanced_weights(ys) if class_weight else np.ones(len(ys), np.float32)
            return (self._standardise(Xs), torch.as_tensor(ys, dtype=torch.float32), torch.as_tensor(w))

        p = self.params
        loop.seed_everything(p["seed"])  # the initial weights
        net = self._net()
        self.states, hist = loop.fit(net, self._loss, tensors(X, y), tensors(X_val, y_val), epochs=p["epochs"],
                                     batch_size=p["batch_size"], lr=p["lr"], patience=p["patience"],
                                     keep_best=p["n_best"], seed=p["seed"], name=name)
        # the BDT's history keys (val_logloss, best_iteration) so that callers can treat both alike;
        # val_logloss is the (class-weighted) validation binary cross-entropy
        self.history = {"train_loss": hist.train_loss, "val_logloss": hist.val_loss,
                        "best_epochs": hist.best_epochs, "best_iteration": hist.best_epochs[0],
                        "stopped_epoch": hist.stopped_epoch}
        return self

    def _nets(self):
        return loop.restored(self._net, self.states)

    @torch.no_grad()
    def predict(self, X, batch_size: int = 65536) -> np.ndarray:
        """Mean over the kept epochs of the sigmoid output."""
        if not self.states:
            raise RuntimeError("MLPClassifier: fit or load the model before predicting")
        X = np.asarray(X, np.float64)
        _check_finite(X, "the input")
        x = self._standardise(X)
        out = np.zeros(len(x))
        for net in self._nets():
            for i in range(0, len(x), batch_size):
                out[i:i + batch_size] += torch.sigmoid(net(x[i:i + batch_size]).squeeze(-1)).double().numpy()
        return out / len(self.states)

    def save(self, path) -> None:
        """``path`` (.pt: the kept state dicts) beside ``<path>.meta.json`` (params, standardisation, history)."""
        path = Path(path)
        with io.atomic_path(path, suffix=".tmp.pt") as tmp:
            torch.save(self.states, tmp)
        io.write_json({"params": self.params, "n_features": self.n_features, "mean": self.mean, "std": self.std,
                       "history": self.history}, path.with_suffix(".meta.json"))

    @classmethod
    def load(cls, path) -> "MLPClassifier":
        path = Path(path)
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        self = cls(**meta["params"])
        self.n_features = meta["n_features"]
        self.mean, self.std = np.asarray(meta["mean"], np.float64), np.asarray(meta["std"], np.float64)
        self.history = meta["history"]
        self.states = torch.load(path, weights_only=True)
        return self
