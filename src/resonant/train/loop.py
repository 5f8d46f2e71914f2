"""A plain PyTorch training loop with early stopping and a memory of the best epochs.

Used by the small models that train in seconds to minutes on a CPU (the
CATHODE flows); the large point-cloud models use Lightning.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class History:
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    best_epochs: list = field(default_factory=list)
    stopped_epoch: int = 0

    def to_dict(self):
        return {"train_loss": self.train_loss, "val_loss": self.val_loss, "best_epochs": self.best_epochs,
                "stopped_epoch": self.stopped_epoch}


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def fit(model: torch.nn.Module, loss_fn, train: tuple, val: tuple, *, epochs: int, batch_size: int, lr: float,
        patience: int, keep_best: int = 1, weight_decay: float = 0.0, grad_clip: float | None = None,
        seed: int = 0, name: str = "model", optimizer=None):
    """Minimise ``loss_fn(model, *batch)`` (mean over the batch) with Adam(W).

    ``train`` and ``val`` are tuples of tensors with the same first dimension.
    ``optimizer``: a ``torch.optim.Optimizer`` class (or factory) called as
    ``optimizer(parameters, lr=lr, weight_decay=weight_decay)``; AdamW by default.
    Stops when the validation loss has not improved for ``patience`` epochs.
    Returns (state dicts of the ``keep_best`` lowest-validation-loss epochs, History).
    """
    gen = seed_everything(seed)
    opt = (optimizer or torch.optim.AdamW)(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train[0])
    hist = History()
    best: list[tuple[float, int, dict]] = []
    since_best, best_val = 0, math.inf
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(model, *(t[idx] for t in train))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            total += loss.item() * len(idx)
        train_loss = total / n
        val_loss = evaluate(model, loss_fn, val, batch_size=max(batch_size, 4096))
        if not math.isfinite(train_loss) or not math.isfinite(val_loss):
            raise FloatingPointError(f"{name}: the loss diverged at epoch {epoch} (train {train_loss}, "
                                     f"val {val_loss}); lower the learning rate")
        hist.train_loss.append(train_loss)
        hist.val_loss.append(val_loss)
        best.append((val_loss, epoch, copy.deepcopy(model.state_dict())))
        best = sorted(best, key=lambda b: b[0])[:keep_best]
        if val_loss < best_val - 1e-6:
            best_val, since_best = val_loss, 0
        else:
            since_best += 1
        log.info("%s epoch %d: train %.5f val %.5f (best %.5f) %.1fs", name, epoch, train_loss, val_loss, best_val,
                 time.perf_counter() - t0)
        if since_best >= patience:
            break
    hist.stopped_epoch = epoch
    hist.best_epochs = [b[1] for b in best]
    return [b[2] for b in best], hist


def restored(make_model, states):
    """Yield a fresh model from ``make_model()`` per saved state dict, in eval mode."""
    for state in states:
        model = make_model()
        model.load_state_dict(state)
        model.eval()
        yield model


@torch.no_grad()
def evaluate(model, loss_fn, data: tuple, batch_size: int = 4096) -> float:
    model.eval()
    n = len(data[0])
    total = 0.0
    for i in range(0, n, batch_size):
        batch = tuple(t[i:i + batch_size] for t in data)
        total += loss_fn(model, *batch).item() * len(batch[0])
    return total / max(n, 1)
