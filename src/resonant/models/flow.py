"""A conditional normalising flow of a feature table given m_jj (zuko).

The estimator of every CATHODE-style branch: ``fit`` on sideband data,
``sample`` at signal-region m_jj values, ``log_prob`` for diagnostics. The
pre-processing (min-max to (0, 1), logit, standardisation) is invertible and
saved with the model; samples are drawn from an ensemble of the epochs with the
lowest validation loss, as classic CATHODE does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import io, seeds
from ..train import loop


class Preprocessor:
    """x -> logit((x - lo) / (hi - lo)) -> standardise; lo/hi padded by ``margin`` of the range."""

    def __init__(self, margin: float = 0.05, logit: bool = True):
        self.margin = margin
        self.logit = logit
        self.lo = self.hi = self.mean = self.std = None

    def fit(self, X: np.ndarray) -> "Preprocessor":
        X = np.asarray(X, np.float64)
        lo, hi = X.min(0), X.max(0)
        pad = self.margin * np.maximum(hi - lo, 1e-6)
        self.lo, self.hi = lo - pad, hi + pad
        z = self._forward_raw(X)
        self.mean, self.std = z.mean(0), np.maximum(z.std(0), 1e-6)
        return self

    def _forward_raw(self, X):
        u = (np.asarray(X, np.float64) - self.lo) / (self.hi - self.lo)
        if self.logit:
            u = np.clip(u, 1e-6, 1 - 1e-6)
            return np.log(u) - np.log1p(-u)
        return u

    def transform(self, X) -> np.ndarray:
        return ((self._forward_raw(X) - self.mean) / self.std).astype(np.float32)

    def inverse(self, Z) -> np.ndarray:
        z = np.asarray(Z, np.float64) * self.std + self.mean
        u = 1.0 / (1.0 + np.exp(-z)) if self.logit else z
        return (u * (self.hi - self.lo) + self.lo).astype(np.float32)

    def in_support(self, X) -> np.ndarray:
        X = np.asarray(X)
        return np.all((X > self.lo) & (X < self.hi), axis=1)

    def to_dict(self):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d):
        self = cls(d["margin"], d["logit"])
        for k in ("lo", "hi", "mean", "std"):
            setattr(self, k, np.asarray(d[k]))
        return self


class ConditionalFlow:
    """p(x | m_jj) with a masked autoregressive ("maf") or neural-spline ("nsf") flow."""

    def __init__(self, n_features: int, kind: str = "maf", transforms: int = 6, hidden: int = 64, layers: int = 2,
                 lr: float = 1e-3, batch_size: int = 256, epochs: int = 100, patience: int = 10,
                 n_best: int = 5, weight_decay: float = 0.0, seed: int = 0):
        self.config = dict(n_features=n_features, kind=kind, transforms=transforms, hidden=hidden, layers=layers,
                           lr=lr, batch_size=batch_size, epochs=epochs, patience=patience, n_best=n_best,
                           weight_decay=weight_decay, seed=seed)
        self.pre = Preprocessor()
        self.m_mean = self.m_std = None
        self.states: list[dict] = []
        self.history: dict = {}

    @classmethod
    def from_settings(cls, n_features: int, settings: dict, seed: int) -> "ConditionalFlow":
        """From a config block (kind, transforms, hidden, layers, lr, batch_size, epochs, patience, n_best)."""
        return cls(n_features=n_features, seed=seed, **settings)

    def _net(self):
        import zuko

        c = self.config
        cls = {"maf": zuko.flows.MAF, "nsf": zuko.flows.NSF}[c["kind"]]
        return cls(c["n_features"], 1, transforms=c["transforms"], hidden_features=(c["hidden"],) * c["layers"],
                   randperm=False)

    def _context(self, m) -> torch.Tensor:
        return torch.as_tensor(((np.log(np.asarray(m, np.float64)) - self.m_mean) / self.m_std)[:, None],
                               dtype=torch.float32)

    @staticmethod
    def _nll(flow, x, c):
        return -flow(c).log_prob(x).mean()

    def fit(self, X, m, X_val, m_val, name="flow") -> "ConditionalFlow":
        X, X_val = np.asarray(X), np.asarray(X_val)
        if X.shape[1] != self.config["n_features"]:
            raise ValueError(f"expected {self.config['n_features']} features, got {X.shape[1]}")
        self.pre.fit(X)
        logm = np.log(np.asarray(m, np.float64))
        self.m_mean, self.m_std = float(logm.mean()), float(max(logm.std(), 1e-6))
        keep = self.pre.in_support(X_val)  # validation events outside the training range carry no information
        train = (torch.as_tensor(self.pre.transform(X)), self._context(m))
        val = (torch.as_tensor(self.pre.transform(X_val[keep])), self._context(np.asarray(m_val)[keep]))
        c = self.config
        loop.seed_everything(c["seed"])
        flow = self._net()
        self.states, hist = loop.fit(flow, self._nll, train, val, epochs=c["epochs"], batch_size=c["batch_size"],
                                     lr=c["lr"], patience=c["patience"], keep_best=c["n_best"],
                                     weight_decay=c["weight_decay"], seed=c["seed"], name=name)
        self.history = hist.to_dict()
        return self

    def _flows(self):
        return loop.restored(self._net, self.states)

    @torch.no_grad()
    def sample(self, m, seed: int = 0, batch_size: int = 100_000) -> np.ndarray:
        """One sample per m_jj value; the best epochs share the values equally."""
        m = np.asarray(m)
        gen_seed = seed
        out = np.empty((len(m), self.config["n_features"]), np.float32)
        shares = np.array_split(np.arange(len(m)), len(self.states))
        for k, (flow, idx) in enumerate(zip(self._flows(), shares)):
            torch.manual_seed(seeds.child(gen_seed, k))
            for i in range(0, len(idx), batch_size):
                j = idx[i:i + batch_size]
                out[j] = self.pre.inverse(flow(self._context(m[j])).sample().numpy())
        return out

    @torch.no_grad()
    def log_prob(self, X, m) -> np.ndarray:
        """Mean over the best epochs of log p(z | m) in the pre-processed space (for comparisons only)."""
        x = torch.as_tensor(self.pre.transform(X))
        c = self._context(m)
        return np.mean([flow(c).log_prob(x).numpy() for flow in self._flows()], axis=0)

    def save(self, path) -> None:
        """``path`` (.pt: the best-epoch state dicts) and ``path.json`` (config, pre-processing, history)."""
        path = Path(path)
        with io.atomic_path(path, suffix=".tmp.pt") as tmp:
            torch.save(self.states, tmp)
        io.write_json({"config": self.config, "pre": self.pre.to_dict(), "m_mean": self.m_mean, "m_std": self.m_std,
                       "history": self.history}, path.with_suffix(".json"))

    @classmethod
    def load(cls, path) -> "ConditionalFlow":
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        self = cls(**meta["config"])
        self.pre = Preprocessor.from_dict(meta["pre"])
        self.m_mean, self.m_std = meta["m_mean"], meta["m_std"]
        self.history = meta["history"]
        self.states = torch.load(path, weights_only=True)
        return self
