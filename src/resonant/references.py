"""The reference classifiers every study needs, on the high-level jet features.

- supervised: SR signal vs SR background with true labels (the best any method can do);
- idealised anomaly detector: SR data (background + injected signal) vs true SR
  background, without labels: what CATHODE-like methods reach with a perfect
  background model.

Both are ensembles of BDTs over seeds; the test set is never used in training.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from . import seeds
from .features import high_level
from .metrics import score_table  # noqa: F401  (the scores contract, re-exported)
from .models.classifiers import fit_ensemble
from .regions import select_split

log = logging.getLogger(__name__)

METHODS = ("supervised", "idealised")


def training_data(method: str, sets: dict[str, pa.Table], features) -> dict:
    """(X, y) for train and val. ``y`` is the class the method is allowed to know."""
    if method == "supervised":
        pos, neg = sets["sr_signal"], sets["sr_background"]
    elif method == "idealised":
        pos, neg = sets["sr"], sets["sr_background"]  # region labels: data vs background
    else:
        raise ValueError(f"unknown reference method '{method}'")
    out = {}
    for split in ("train", "val"):
        p, n = select_split(pos, split), select_split(neg, split)
        X = np.concatenate([high_level(p, features), high_level(n, features)])
        y = np.r_[np.ones(len(p)), np.zeros(len(n))].astype(np.int8)
        out[split] = (X, y)
    return out


def train_ensemble(method: str, sets: dict[str, pa.Table], settings: dict, seed: int, n_jobs: int | None = None
                   ) -> list:
    data = training_data(method, sets, settings["features"])
    (X, y), (Xv, yv) = data["train"], data["val"]
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        raise ValueError(f"{method}: the training set needs both classes (has {int((y == 1).sum())} and "
                         f"{int((y == 0).sum())})")
    return fit_ensemble(settings, X, y, Xv, yv, [seeds.member(seed, k) for k in range(settings["n_ensemble"])],
                        ignore=("features", "n_ensemble", "seed", "study", "injection"), n_jobs=n_jobs, log=log,
                        name=method)
